package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// fakeNode answers every request with the same canned answer, and keeps the
// last request's method, path (escaped, with the query) and body.
type fakeNode struct {
	code   int
	ctype  string
	body   string
	method string
	uri    string
	got    string
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var data []byte
	if r.Body != nil { // NewClient hands the client's request over as is
		data, _ = io.ReadAll(r.Body)
	}
	f.method, f.uri, f.got = r.Method, r.URL.RequestURI(), string(data)
	if f.ctype != "" {
		w.Header().Set("Content-Type", f.ctype)
	}
	if f.code != 0 {
		w.WriteHeader(f.code)
	}
	_, _ = io.WriteString(w, f.body)
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()

	// An error answer is an *Error with the status and the server's message.
	f := &fakeNode{code: 409, ctype: "application/json", body: `{"error": "contacts/c1 field \"phone\": no conflict"}` + "\n"}
	c := NewClient(f)
	_, err := c.Resolve(ctx, "contacts", "c1", "phone", apijson.ResolveRequest{Pick: 1})
	e := wantAPIError(t, err, 409)
	if e.Msg != `contacts/c1 field "phone": no conflict` {
		t.Errorf("message %q", e.Msg)
	}
	if f.method != "POST" || f.uri != "/v1/resolve/contacts/c1/phone" || f.got != `{"pick":1}` {
		t.Errorf("request %s %s %s", f.method, f.uri, f.got)
	}

	// An error answer that is not an error body says what came back.
	f = &fakeNode{code: 502, ctype: "text/plain", body: "bad gateway\n"}
	_, err = NewClient(f).Status(ctx)
	wantAPIError(t, err, 502, "GET /v1/status", "502 Bad Gateway", "bad gateway")
	f = &fakeNode{code: 500, ctype: "application/json", body: `{"error": ""}`}
	_, err = NewClient(f).Get(ctx, "contacts", "c1")
	wantAPIError(t, err, 500, "GET /v1/records/contacts/c1", "500")

	// A redirect is not followed: it is an error.
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.Redirect(w, r, "/v1/status", http.StatusTemporaryRedirect)
			return
		}
		_, _ = io.WriteString(w, `{"peer_id": "followed"}`)
	})
	err = NewClient(redirect).Do(ctx, "GET", "/v1/elsewhere", nil, nil)
	wantAPIError(t, err, http.StatusTemporaryRedirect)

	// A 200 that is not JSON is a decode error naming the request.
	f = &fakeNode{body: "<html>"}
	_, err = NewClient(f).Status(ctx)
	if err == nil || !strings.Contains(err.Error(), "decode answer of GET /v1/status") {
		t.Errorf("non-JSON answer: %v", err)
	}
}

// TestClientPaths: what each method sends, escapes included.
func TestClientPaths(t *testing.T) {
	ctx := context.Background()
	f := &fakeNode{ctype: "application/json", body: "null"} // decodes into any answer
	c := NewClient(f)
	text := "x"
	cases := []struct {
		name   string
		do     func() error
		method string
		uri    string
		body   string
	}{
		{"get", func() error { _, err := c.Get(ctx, "contacts", "a/b.c"); return err }, "GET", "/v1/records/contacts/a%2Fb%2Ec", ""},
		{"put", func() error {
			_, err := c.Put(ctx, "contacts", "..", map[string]any{"a": 1}, map[string]string{"b": "2"})
			return err
		}, "PUT", "/v1/records/contacts/%2E%2E", `{"fields":{"a":1},"text":{"b":"2"}}`},
		{"delete", func() error { _, err := c.Delete(ctx, "contacts", "with space"); return err }, "DELETE", "/v1/records/contacts/with%20space", ""},
		{"history", func() error { _, err := c.History(ctx, "contacts", "c.1", "a b"); return err }, "GET", "/v1/history/contacts/c%2E1?field=a+b", ""},
		{"resolve", func() error {
			_, err := c.Resolve(ctx, "contacts", "c1", "_record", apijson.ResolveRequest{Text: &text, Expect: []string{"o1"}})
			return err
		}, "POST", "/v1/resolve/contacts/c1/_record", `{"text":"x","expect":["o1"]}`},
		{"check", func() error { _, err := c.Check(ctx, true); return err }, "POST", "/v1/check?repair=1", ""},
		{"check plain", func() error { _, err := c.Check(ctx, false); return err }, "POST", "/v1/check", ""},
		{"diff", func() error { _, err := c.Diff(ctx, "laptop 1"); return err }, "GET", "/v1/diff/laptop%201", ""},
		{"revoke", func() error { _, err := c.Revoke(ctx, "a/b"); return err }, "POST", "/v1/members/a%2Fb/revoke", ""},
		{"invite", func() error {
			_, err := c.Invite(ctx, apijson.InviteRequest{Name: "n", Role: "laptop", Expires: "1h"})
			return err
		}, "POST", "/v1/invites", `{"name":"n","role":"laptop","expires":"1h"}`},
		{"offline", func() error { return c.SetOffline(ctx, true) }, "POST", "/v1/offline", ""},
		{"online", func() error { return c.SetOffline(ctx, false) }, "POST", "/v1/online", ""},
		{"sync", func() error { _, err := c.SyncNow(ctx); return err }, "POST", "/v1/sync", ""},
		{"sync state", func() error { _, err := c.SyncState(ctx); return err }, "GET", "/v1/sync", ""},
		{"schema", func() error { _, err := c.ApplySchema(ctx, []byte("collections: {}")); return err }, "POST", "/v1/schema", "collections: {}"},
		{"conflicts all", func() error { _, err := c.Conflicts(ctx, "", false); return err }, "GET", "/v1/conflicts?", ""},
		{"conflicts open", func() error { _, err := c.Conflicts(ctx, "contacts", true); return err }, "GET", "/v1/conflicts?collection=contacts&open=true", ""},
	}
	for _, tc := range cases {
		if err := tc.do(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if f.method != tc.method || f.uri != tc.uri || f.got != tc.body {
			t.Errorf("%s sent %s %s %q, want %s %s %q", tc.name, f.method, f.uri, f.got, tc.method, tc.uri, tc.body)
		}
	}
	f.body = ""
	if err := c.List(ctx, "contacts", ListOptions{Where: "stage=won", Export: true}, nil); err != nil ||
		f.uri != "/v1/records/contacts?format=export&where=stage%3Dwon" {
		t.Errorf("list sent %s (%v)", f.uri, err)
	}
}

func TestClientLinesError(t *testing.T) {
	ctx := context.Background()
	// A listing cut short ends with an error line: List returns its error
	// after the lines before it.
	f := &fakeNode{ctype: "application/x-ndjson", body: `{"id": "c1"}` + "\n" + `{"id": "c2"}` + "\n" +
		`{"error":"list contacts: read failed"}` + "\n" + `{"id": "c3"}` + "\n"}
	var got []string
	err := NewClient(f).List(ctx, "contacts", ListOptions{}, func(line []byte) error {
		got = append(got, string(line))
		return nil
	})
	if err == nil || err.Error() != "list contacts: read failed" || len(got) != 2 {
		t.Errorf("List: %v after %q", err, got)
	}
	var ae *Error
	if errors.As(err, &ae) {
		t.Errorf("a stream error is not an *Error: %#v", err)
	}
	// A record with a field named "error" is not an error line.
	f.body = `{"collection":"contacts","id":"c1","fields":{"error":"x"}}` + "\n"
	n := 0
	if err := NewClient(f).List(ctx, "contacts", ListOptions{}, func([]byte) error { n++; return nil }); err != nil || n != 1 {
		t.Errorf("record with an error field: %v, %d lines", err, n)
	}
}

func TestClientImportError(t *testing.T) {
	ctx := context.Background()
	// An import stopped part-way ends with a progress line with an error.
	f := &fakeNode{ctype: "application/x-ndjson", body: `{"done":400,"total":1000}` + "\n" +
		`{"done":400,"total":1000,"error":"import contacts: not written: disk almost full"}` + "\n"}
	var progress []apijson.ImportProgress
	res, err := NewClient(f).Import(ctx, "contacts", strings.NewReader(`{"id":"c1"}`), crdt.ImportOptions{}, func(p apijson.ImportProgress) {
		progress = append(progress, p)
	})
	var ie *ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("Import: %v (%T), want *ImportError", err, err)
	}
	if ie.Done != 400 || ie.Total != 1000 || ie.Msg != "import contacts: not written: disk almost full" {
		t.Errorf("ImportError %+v", ie)
	}
	if ie.Error() != "import stopped after 400 of 1000 records: import contacts: not written: disk almost full" {
		t.Errorf("ImportError says %q", ie.Error())
	}
	if !reflect.DeepEqual(res, crdt.ImportResult{}) || len(progress) != 2 || progress[1].Error == "" {
		t.Errorf("result %+v, progress %+v", res, progress)
	}
	if f.method != "POST" || f.uri != "/v1/import/contacts" || f.got != `{"id":"c1"}` {
		t.Errorf("import sent %s %s %q", f.method, f.uri, f.got)
	}

	// An error line of its own (the stream's error) is a plain error.
	f.body = `{"error":"boom"}` + "\n"
	if _, err := NewClient(f).Import(ctx, "contacts", strings.NewReader(""), crdt.ImportOptions{}, nil); err == nil || err.Error() != "boom" || errors.As(err, &ie) {
		t.Errorf("error line: %v", err)
	}
	// A stream without a final result is an error.
	f.body = `{"done":1,"total":2}` + "\n"
	if _, err := NewClient(f).Import(ctx, "contacts", strings.NewReader(""), crdt.ImportOptions{}, nil); err == nil || !strings.Contains(err.Error(), "without a result") {
		t.Errorf("no result: %v", err)
	}
	// A line that is not progress is an error.
	f.body = "[1]\n"
	if _, err := NewClient(f).Import(ctx, "contacts", strings.NewReader(""), crdt.ImportOptions{}, nil); err == nil || !strings.Contains(err.Error(), "bad progress line") {
		t.Errorf("bad line: %v", err)
	}
	// A refused import is an *Error.
	f = &fakeNode{code: 400, ctype: "application/json", body: `{"error":"line 2: not a JSON object"}`}
	_, err = NewClient(f).Import(ctx, "contacts", strings.NewReader("x"), crdt.ImportOptions{}, nil)
	wantAPIError(t, err, 400, "line 2")
}

// shortTempDir is a fresh directory whose socket path fits the ~108 bytes
// of a Unix socket address.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(filepath.Join(dir, datadir.SocketFile)) < 100 {
		return dir
	}
	dir, err := os.MkdirTemp("", "fapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestServeAndDial serves the API on a real Unix socket and talks to it.
func TestServeAndDial(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, datadir.SocketFile)

	// Nothing runs there yet.
	if _, err := Dial(dir); !errors.Is(err, ErrNoNode) {
		t.Fatalf("Dial without a node: %v, want ErrNoNode", err)
	}
	// A stale socket file (a crash) does not count as a node, and is
	// replaced.
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(dir); !errors.Is(err, ErrNoNode) {
		t.Fatalf("Dial on a stale socket: %v, want ErrNoNode", err)
	}

	b := newTestBackend(t, storeOpts{batchOps: 2})
	b.status = apijson.Status{PeerID: "P0", Running: true}
	srv := NewServer(b, testLogger())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, dir) }()

	var c *Client
	waitFor(t, "the API socket", func() bool {
		var err error
		c, err = Dial(dir)
		return err == nil
	})
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v (%v): want a socket of mode 0600", fi.Mode(), err)
	}

	// A second server on the same dir refuses to start, and leaves the
	// first one alone.
	err = NewServer(b, testLogger()).Serve(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Serve: %v, want already running", err)
	}

	// Requests through the socket.
	st, err := c.Status(ctx)
	if err != nil || st.PeerID != "P0" || !st.Running {
		t.Errorf("status %+v, %v", st, err)
	}
	res, err := c.Put(ctx, "contacts", "c.1", map[string]any{"last_name": "Smith"}, map[string]string{"amount": "3"})
	if err != nil || !res.Created || len(res.Fields) != 2 {
		t.Errorf("put %+v, %v", res, err)
	}
	rec, err := c.Get(ctx, "contacts", "c.1")
	if err != nil || rec.Fields["amount"] != 3.0 {
		t.Errorf("get %+v, %v", rec, err)
	}
	_, err = c.Get(ctx, "contacts", "missing")
	wantAPIError(t, err, http.StatusNotFound, "not found")

	// A streamed import: progress lines as the deltas are written.
	var lines strings.Builder
	for _, id := range []string{"i1", "i2", "i3", "i4", "i5"} {
		lines.WriteString(`{"id":"` + id + `","last_name":"L"}` + "\n")
	}
	var progress []apijson.ImportProgress
	ir, err := c.Import(ctx, "contacts", strings.NewReader(lines.String()), crdt.ImportOptions{}, func(p apijson.ImportProgress) {
		progress = append(progress, p)
	})
	if err != nil || ir.Records != 5 || ir.Written != 5 || ir.Deltas < 2 || len(progress) < 3 {
		t.Errorf("import %+v, %v, progress %+v", ir, err, progress)
	}
	n := 0
	if err := c.List(ctx, "contacts", ListOptions{}, func([]byte) error { n++; return nil }); err != nil || n != 6 {
		t.Errorf("list: %d records, %v", n, err)
	}
	_, err = c.Import(ctx, "contacts", strings.NewReader("{\"id\":\"x\",\"last_name\":\"L\"}\nnot json\n"), crdt.ImportOptions{}, nil)
	wantAPIError(t, err, http.StatusBadRequest, "line 2")

	// Over the socket, a request without a body where one is expected is
	// the caller's mistake (in process, see TestInProcessRequestWithoutBody).
	err = c.Do(ctx, "PUT", "/v1/records/contacts/c1", nil, nil)
	wantAPIError(t, err, http.StatusBadRequest, "decode request", "EOF")
	err = c.Do(ctx, "POST", "/v1/invites", nil, nil)
	wantAPIError(t, err, http.StatusBadRequest, "bad invite request")

	// Stopping the server removes the socket: a node is no longer there.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := Dial(dir); !errors.Is(err, ErrNoNode) {
		t.Errorf("Dial after stop: %v, want ErrNoNode", err)
	}
	// The client of a node that is gone fails to reach it.
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "reach node") {
		t.Errorf("status of a stopped node: %v", err)
	}
}

// TestServeErrors: Serve fails when it cannot listen.
func TestServeErrors(t *testing.T) {
	b := &testBackend{store: newTestStore(t, storeOpts{})}
	missing := filepath.Join(shortTempDir(t), "nope")
	err := NewServer(b, testLogger()).Serve(context.Background(), missing)
	if err == nil || !strings.Contains(err.Error(), "serve API") {
		t.Errorf("Serve in a missing dir: %v", err)
	}
	if _, err := Dial(missing); !errors.Is(err, ErrNoNode) {
		t.Errorf("Dial in a missing dir: %v", err)
	}

	// Something else listening on the socket counts as a running node.
	dir := shortTempDir(t)
	l, err := net.Listen("unix", filepath.Join(dir, datadir.SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = NewServer(b, testLogger()).Serve(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("Serve beside a listener: %v", err)
	}
}
