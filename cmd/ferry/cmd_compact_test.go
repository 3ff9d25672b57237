package main

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
)

func TestPrintCompact(t *testing.T) {
	var b strings.Builder
	err := printCompact(&b, apijson.CompactResult{Epoch: "2-ab12cd34ef567890", Prev: "1-0011223344556677",
		Seeded: 1200, Records: 400, Carried: 1, Archived: 37, DroppedKeys: 9000, DroppedBlocks: 3100,
		StoreBefore: 12 << 20, StoreAfter: 3 << 20, TookMS: 1250})
	if err != nil {
		t.Fatal(err)
	}
	want := `compacted: now in epoch 2-ab12cd34ef567890 (was 1-0011223344556677)
  seeded:       1200 writes of 400 records (the records as they are)
  carried over: 1 write made meanwhile
  history kept: recent values of 37 records (history_keep)
  dropped:      9000 keys and 3100 blocks of epoch 1-0011223344556677
  store:        12 MiB → 3.0 MiB (freed 9.0 MiB)
  took:         1.25s
`
	if b.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", b.String(), want)
	}
}

func TestStoreChange(t *testing.T) {
	for _, c := range []struct {
		before, after int64
		want          string
	}{
		{12 << 20, 3 << 20, "12 MiB → 3.0 MiB (freed 9.0 MiB)"},
		{1 << 20, 1 << 20, "1.0 MiB → 1.0 MiB"},
		{1 << 20, 2 << 20, "1.0 MiB → 2.0 MiB"},
		{0, 0, "0 B → 0 B"},
	} {
		if got := storeChange(c.before, c.after); got != c.want {
			t.Errorf("storeChange(%d, %d) = %q, want %q", c.before, c.after, got, c.want)
		}
	}
}

func TestCompactError(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&api.Error{Status: http.StatusConflict, Msg: "compact: the store is still syncing: 3 blocks missing, 0 not merged yet; try again once synced"},
			"not compacted: the store is still syncing, try again in a moment (the store is still syncing: 3 blocks missing, 0 not merged yet; try again once synced)"},
		{&api.Error{Status: http.StatusBadRequest, Msg: "compact: only an office node compacts (this node is a laptop)"},
			"not compacted: only an office node compacts (this node is a laptop); run 'ferry compact' on an office: this node moves to the new epoch by itself"},
		{&api.Error{Status: http.StatusForbidden, Msg: "compact: only an office starts an epoch: not allowed"},
			"not compacted: only an office starts an epoch: not allowed; run 'ferry compact' on an office: this node moves to the new epoch by itself"},
		{&api.Error{Status: http.StatusInsufficientStorage, Msg: "compact: seed epoch 2-ab12cd34ef567890: no space left on device"},
			"not compacted: seed epoch 2-ab12cd34ef567890: no space left on device"},
		{errors.New("reach node: broken pipe"), "reach node: broken pipe"},
	} {
		if got := compactError(c.err).Error(); got != c.want {
			t.Errorf("compactError(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if got := notOfficeError("laptop").Error(); !strings.Contains(got, "only an office node compacts, and this node is a laptop") {
		t.Errorf("notOfficeError: %q", got)
	}
}

func TestPrintHistoryCompacted(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	h := []apijson.History{
		// kept in the archive by a compaction
		{Field: "phone", Op: "o1", Value: "+41 1", Writer: "w1", WriterName: "office", At: at, Origin: "here", Compacted: true},
		{Field: "phone", Op: "o2", Value: "+41 2", Writer: "w2", At: at.Add(time.Minute), Origin: "peer", Compacted: true},
		// the epoch's own operations: each with its block
		{Field: "phone", Op: "o3", Value: "+41 3", Writer: "w1", WriterName: "office", At: at.Add(2 * time.Minute),
			Supersedes: []string{"phone/o2"}, Visible: true, Origin: "here", Block: "bafy3"},
		// an operation whose block is not here yet: neither field nor block
		{Op: "o4", Writer: "w2", At: at.Add(3 * time.Minute), Origin: "peer"},
	}
	var b strings.Builder
	if err := printHistory(&b, h); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 6 || lines[5] != compactedNote {
		t.Fatalf("printed:\n%s", b.String())
	}
	for i, want := range []string{" compacted  -", " compacted  -", " visible    1", " superseded  0"} {
		if !strings.HasSuffix(strings.Join(strings.Fields(lines[i+1]), "  "), strings.Join(strings.Fields(want), "  ")) {
			t.Errorf("line %d does not end with %q:\n%s", i+1, want, b.String())
		}
	}
	// Without compacted operations: no note.
	b.Reset()
	if err := printHistory(&b, h[2:3]); err != nil || strings.Contains(b.String(), "compacted") {
		t.Errorf("printed %q, %v", b.String(), err)
	}
	// The JSON form says compacted only where it is true.
	b.Reset()
	if err := printJSON(&b, h[1:3]); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), `"compacted": true`) != 1 || strings.Count(b.String(), `"compacted"`) != 1 {
		t.Errorf("JSON:\n%s", b.String())
	}
}

func TestDiffEpochs(t *testing.T) {
	for _, c := range []struct {
		res  apijson.DiffResult
		want string
	}{
		{apijson.DiffResult{Epoch: "2-ab12cd34ef567890", PeerEpoch: "2-ab12cd34ef567890"}, ""},
		{apijson.DiffResult{Epoch: "2-ab12cd34ef567890"}, ""},
		{apijson.DiffResult{Epoch: "2-ab12cd34ef567890", PeerEpoch: "0"}, "epochs differ: here 2-ab12cd34…, there 0 (earlier: it will move to ours)"},
		{apijson.DiffResult{Epoch: "0", PeerEpoch: "1-0011223344556677"}, "epochs differ: here 0, there 1-00112233… (later: this node moves to it)"},
	} {
		if got := diffEpochs(c.res); got != c.want {
			t.Errorf("diffEpochs(%q, %q) = %q, want %q", c.res.Epoch, c.res.PeerEpoch, got, c.want)
		}
	}
}
