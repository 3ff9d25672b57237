package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

// spoolBackend is a test backend with a spool directory of its own.
type spoolBackend struct {
	*testBackend
	dir string
}

func (b spoolBackend) SpoolDir() string { return b.dir }

// wantEmptyDir fails unless dir holds nothing (the spooled bodies are
// gone).
func wantEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left in the spool directory: %s", e.Name())
	}
}

// contactLines writes n import lines for ids <prefix>0.. to w, made one at
// a time, then extra, and closes w.
func contactLines(w *io.PipeWriter, prefix string, n int, extra string) {
	var err error
	for i := 0; i < n && err == nil; i++ {
		_, err = fmt.Fprintf(w, `{"id":"%s%d","last_name":"L%d","email":"%s%d@example.com","amount":%d}`+"\n", prefix, i, i, prefix, i, i)
	}
	if err == nil {
		_, err = io.WriteString(w, extra)
	}
	w.CloseWithError(err)
}

// TestImportLargeBodyStreams sends a generated body of 20,000 lines over
// the socket, written as it is sent: the node spools it, validates it all,
// then writes it; the spool file is gone afterwards. A body whose last
// line is malformed is refused naming that line, with nothing written.
func TestImportLargeBodyStreams(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tb := newTestBackend(t, storeOpts{})
	b := spoolBackend{testBackend: tb, dir: filepath.Join(t.TempDir(), "tmp")}
	dir, err := os.MkdirTemp("", "ferry-api-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	done := make(chan error, 1)
	go func() { done <- NewServer(b, testLogger()).Serve(ctx, dir) }()
	var c *Client
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err = Dial(dir); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	const n = 20000
	pr, pw := io.Pipe()
	go contactLines(pw, "c", n, "")
	var progress []apijson.ImportProgress
	res, err := c.Import(ctx, "contacts", pr, crdt.ImportOptions{}, func(p apijson.ImportProgress) {
		progress = append(progress, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != n || res.Written != n || res.Created != n || res.Unchanged != 0 || res.Deltas < 2 || len(res.Rejected) != 0 {
		t.Errorf("result %+v", res)
	}
	for i, p := range progress {
		if p.Total != n || p.Done < 0 || p.Done > n || (i > 0 && p.Done < progress[i-1].Done) {
			t.Errorf("progress line %d: %+v", i, p)
		}
	}
	if last := progress[len(progress)-1]; last.Done != n || last.Result == nil {
		t.Errorf("last progress line %+v", last)
	}
	for _, id := range []string{"c0", "c12345", "c19999"} {
		rec, err := c.Get(ctx, "contacts", id)
		if err != nil || rec.Fields["email"] != id+"@example.com" {
			t.Errorf("%s: %v, %v", id, rec.Fields, err)
		}
	}
	wantEmptyDir(t, b.dir)

	// 20,000 lines that would change every record, then a malformed one:
	// 400 naming it, nothing written.
	before := tb.store.Stats(ctx).MaxHeight
	pr, pw = io.Pipe()
	go contactLines(pw, "d", n, `{"id": "x", "last_name": `+"\n")
	_, err = c.Import(ctx, "contacts", pr, crdt.ImportOptions{}, nil)
	wantAPIError(t, err, http.StatusBadRequest, fmt.Sprintf("line %d", n+1), "not a JSON object")
	if h := tb.store.Stats(ctx).MaxHeight; h != before {
		t.Errorf("a refused import made %d deltas", h-before)
	}
	if _, err := c.Get(ctx, "contacts", "d0"); err == nil {
		t.Error("a refused import wrote d0")
	}
	wantEmptyDir(t, b.dir)

	// A dry run of the same lines without the bad one: all would be
	// created, nothing is.
	pr, pw = io.Pipe()
	go contactLines(pw, "d", n, "")
	res, err = c.Import(ctx, "contacts", pr, crdt.ImportOptions{DryRun: true}, nil)
	if err != nil || res.Records != n || res.Created != n || res.Deltas != 0 {
		t.Errorf("dry run: %+v, %v", res, err)
	}
	if h := tb.store.Stats(ctx).MaxHeight; h != before {
		t.Errorf("a dry run made %d deltas", h-before)
	}
	wantEmptyDir(t, b.dir)

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// An import body over the limit is a 413 saying so; nothing is written
// and nothing stays spooled.
func TestImportBodyLimit(t *testing.T) {
	ctx := context.Background()
	old := maxImportBody
	maxImportBody = 1000
	t.Cleanup(func() { maxImportBody = old })
	tb := newTestBackend(t, storeOpts{})
	b := spoolBackend{testBackend: tb, dir: filepath.Join(t.TempDir(), "tmp")}
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	var body strings.Builder
	for i := 0; body.Len() <= 1000; i++ {
		fmt.Fprintf(&body, `{"id":"c%d","last_name":"L"}`+"\n", i)
	}
	call(t, srv, "POST", "/v1/import/contacts", body.String()).
		wantError(t, http.StatusRequestEntityTooLarge, "import: the input is over the node's import limit of 1000 bytes (split it into smaller files)")
	// The client stops sending at the limit, and says so.
	_, err := c.Import(ctx, "contacts", strings.NewReader(body.String()), crdt.ImportOptions{}, nil)
	if !errors.Is(err, ErrImportTooLarge) || err.Error() != "the input is over the node's import limit of 1000 bytes (split it into smaller files)" {
		t.Errorf("client import over the limit: %v", err)
	}
	if _, err := c.Get(ctx, "contacts", "c0"); err == nil {
		t.Error("a refused import wrote c0")
	}
	wantEmptyDir(t, b.dir)

	// Up to the limit is fine.
	lines := strings.SplitAfter(body.String(), "\n")
	fits := strings.Join(lines[:len(lines)-3], "")
	res, err := c.Import(ctx, "contacts", strings.NewReader(fits), crdt.ImportOptions{}, nil)
	if err != nil || res.Written != len(lines)-3 {
		t.Errorf("import of %d bytes: %+v, %v", len(fits), res, err)
	}
	wantEmptyDir(t, b.dir)

	for n, want := range map[int64]string{1 << 30: "1 GiB", 64 << 10: "64 KiB", 1000: "1000 bytes", 3 << 20: "3 MiB"} {
		if got := byteSize(n); got != want {
			t.Errorf("byteSize(%d) = %q, want %q", n, got, want)
		}
	}
}
