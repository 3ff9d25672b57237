package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
)

// TestCompact: an office compacts while a laptop is offline with an edit
// and a delete the office does not have. The office moves to a new epoch
// and frees the disk; back online, the laptop moves to the office's epoch
// and carries its edit and delete over, so that both show the same state;
// the office keeps its last history_keep superseded values per field, the
// laptop its own; a laptop may not compact, and bad arguments change
// nothing.
func TestCompact(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	officeDir := initDir(t, root, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)))
	appendConfig(t, officeDir, "history_keep: 2\n")
	startNode(t, officeDir)
	laptopDir := joinDir(t, root, "laptop", officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, officeDir, "schema", "apply", schemaFile)
	startNode(t, laptopDir)
	waitSchema(t, laptopDir)

	// History both nodes have: c1's phone edited on both (each value in a
	// write of its own), c2 and c3.
	mustFerry(t, officeDir, "put", "contacts", "c1", "first_name=Ann", "last_name=Lee")
	mustFerry(t, officeDir, "put", "contacts", "c1", "phone=p0")
	mustFerry(t, officeDir, "put", "contacts", "c2", "last_name=Gone")
	mustFerry(t, officeDir, "put", "contacts", "c3", "last_name=Stay")
	waitRecord(t, laptopDir, "contacts", "c1", map[string]any{"phone": "p0"})
	mustFerry(t, laptopDir, "put", "contacts", "c1", "phone=p1")
	waitRecord(t, officeDir, "contacts", "c1", map[string]any{"phone": "p1"})
	mustFerry(t, officeDir, "put", "contacts", "c1", "phone=p2")
	mustFerry(t, officeDir, "put", "contacts", "c1", "phone=p3")
	waitRecord(t, laptopDir, "contacts", "c1", map[string]any{"phone": "p3"})
	waitRecord(t, laptopDir, "contacts", "c2", map[string]any{"last_name": "Gone"})
	waitRecord(t, laptopDir, "contacts", "c3", map[string]any{"last_name": "Stay"})
	if e := mustStatus(t, officeDir).Epoch; e == nil || e.Epoch != "0" {
		t.Fatalf("office epoch before any compaction: %+v, want 0", e)
	}

	// Offline, the laptop edits c1 and deletes c2.
	setOnline(t, false, laptopDir)
	mustFerry(t, laptopDir, "put", "contacts", "c1", "phone=p4")
	mustFerry(t, laptopDir, "delete", "contacts", "c2")

	// Meanwhile the office edits 50 other records ten times over, by
	// imports: history that the compaction drops.
	for round := range 10 {
		bulkEdits(t, officeDir, round)
	}

	// Bad arguments: refused, nothing changes.
	wantUsage(t, officeDir, "compact", "now")
	wantUsage(t, officeDir, "compact", "--force")
	if e := mustStatus(t, officeDir).Epoch; e == nil || e.Epoch != "0" {
		t.Fatalf("office epoch after refused compactions: %+v, want 0", e)
	}

	res := compact(t, officeDir)
	if res.Prev != "0" || !strings.HasPrefix(res.Epoch, "1-") {
		t.Errorf("compact: epoch %q from %q, want 1-… from 0", res.Epoch, res.Prev)
	}
	// The store's size is reported, not asserted: a store this small lives
	// in badger's head value-log file (64 MiB), which value-log GC never
	// rewrites; the compaction benchmark measures what a large one frees.
	if res.StoreAfter <= 0 || res.StoreBefore <= 0 {
		t.Errorf("compact: store sizes %d before, %d after", res.StoreBefore, res.StoreAfter)
	}
	if res.Records < 53 || res.Seeded < res.Records || res.DroppedKeys == 0 || res.DroppedBlocks == 0 || res.Archived == 0 {
		t.Errorf("compact: %+v; want every record seeded, old keys and blocks dropped, history kept", res)
	}
	st := mustStatus(t, officeDir)
	if st.Epoch == nil || st.Epoch.Epoch != res.Epoch || st.Epoch.Number != 1 || st.Epoch.StartedBy != st.PeerID || st.Epoch.StartedAt.IsZero() {
		t.Errorf("office status after compact: epoch %+v, want %s started by this node", st.Epoch, res.Epoch)
	}
	if r := mustFerry(t, officeDir, "status"); !strings.Contains(r.Stdout, "epoch:") || !strings.Contains(r.Stdout, res.Epoch+", since ") || !strings.Contains(r.Stdout, "started by this node") {
		t.Errorf("status does not show the new epoch:\n%s", r)
	}

	// Back online, the laptop moves to the office's epoch with its edit
	// and its delete: both nodes show the same state.
	setOnline(t, true, laptopDir)
	eventually(t, "laptop in the office's epoch with the same digest", func() (bool, string) {
		so, ro := status(t, officeDir)
		sl, rl := status(t, laptopDir)
		ok := ro.Code == 0 && rl.Code == 0 && so.Epoch != nil && sl.Epoch != nil &&
			sl.Epoch.Epoch == so.Epoch.Epoch && !sl.Epoch.Adopting &&
			so.Digest != "" && !so.DigestPending && !sl.DigestPending && sl.Digest == so.Digest
		return ok, ro.String() + "\n" + rl.String()
	})
	if e := mustStatus(t, laptopDir).Epoch; e.Epoch != res.Epoch || e.LastError != "" || e.Later != "" || e.StartedBy != st.PeerID {
		t.Errorf("laptop epoch: %+v, want %s started by the office", e, res.Epoch)
	}
	waitRecord(t, officeDir, "contacts", "c1", map[string]any{"phone": "p4", "first_name": "Ann"})
	waitGone(t, officeDir, "contacts", "c2")
	waitRecord(t, officeDir, "contacts", "c3", map[string]any{"last_name": "Stay"})
	waitRecord(t, laptopDir, "contacts", "b0", map[string]any{"last_name": "Bulk 0"})

	// Peers and diff: the same epoch on both sides.
	eventually(t, "the laptop's peers show the office in its epoch", func() (bool, string) {
		r := ferry(t, laptopDir, "peers", "--json")
		var peers []apijson.PeerInfo
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &peers) != nil {
			return false, r.String()
		}
		for _, p := range peers {
			if p.Name == "office" && p.Epoch == res.Epoch {
				return true, ""
			}
		}
		return false, r.String()
	})
	if r := mustFerry(t, laptopDir, "peers"); strings.Contains(r.Stdout, "EPOCH") {
		t.Errorf("peers shows an epoch column though every peer is in ours:\n%s", r)
	}
	r := mustFerry(t, laptopDir, "diff", "office", "--json")
	var d apijson.DiffResult
	if err := json.Unmarshal([]byte(r.Stdout), &d); err != nil || !d.Identical || d.Epoch != res.Epoch || d.PeerEpoch != res.Epoch {
		t.Errorf("diff with the office after the move: %+v %v\n%s", d, err, r)
	}

	// The office kept c1's last two superseded phones (history_keep: 2),
	// compacted; p0 is gone; p3 (seeded) was superseded by the laptop's p4.
	h := compactedHistory(t, officeDir, "contacts", "c1", "phone")
	if got, want := historyLine(h), "p1(compacted) p2(compacted) p3(superseded) p4(visible)"; got != want {
		t.Errorf("office history of c1.phone: %s, want %s", got, want)
	}
	if r := mustFerry(t, officeDir, "history", "contacts", "c1", "phone"); strings.Count(r.Stdout, " compacted ") != 2 || !strings.Contains(r.Stdout, compactedNote) {
		t.Errorf("history (text) does not mark the compacted operations:\n%s", r)
	}
	// The laptop kept its own (history_keep default 10): p0 too.
	if got := historyLine(compactedHistory(t, laptopDir, "contacts", "c1", "phone")); !strings.HasPrefix(got, "p0(compacted) p1(compacted) p2(compacted) ") || !strings.HasSuffix(got, " p4(visible)") {
		t.Errorf("laptop history of c1.phone: %s, want p0, p1, p2 compacted, then p4 visible", got)
	}

	// A laptop may not compact: a clear refusal, nothing changes.
	if r := ferry(t, laptopDir, "compact"); r.Code != 1 || !strings.Contains(r.Stderr, "only an office node compacts") || !strings.Contains(r.Stderr, "this node is a laptop") {
		t.Errorf("compact on a laptop: want exit 1 and a refusal naming the office:\n%s", r)
	}
	if e := mustStatus(t, laptopDir).Epoch; e.Epoch != res.Epoch {
		t.Errorf("laptop epoch after a refused compact: %s, want %s", e.Epoch, res.Epoch)
	}

	// The text form of a second compaction.
	r = mustFerry(t, officeDir, "compact")
	for _, s := range []string{"compacted: now in epoch 2-", "(was " + res.Epoch + ")", "seeded:", "carried over:", "dropped:", "store:", " → ", "took:"} {
		if !strings.Contains(r.Stdout, s) {
			t.Errorf("compact (text) does not say %q:\n%s", s, r)
		}
	}
}

// compact runs `ferry compact --json` on dir; a store still syncing is
// tried again.
func compact(t *testing.T, dir string) apijson.CompactResult {
	t.Helper()
	var res apijson.CompactResult
	eventually(t, filepath.Base(dir)+" compacts", func() (bool, string) {
		r := runFerryWithin(t, syncWithin, nil, "--dir", dir, "compact", "--json")
		if r.Code != 0 && strings.Contains(r.Stderr, "try again in a moment") {
			return false, r.String()
		}
		if r.Code != 0 {
			t.Fatalf("want exit 0:\n%s", r)
		}
		if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
			t.Fatalf("compact --json is not a result: %v\n%s", err, r)
		}
		return true, ""
	})
	return res
}

// bulkEdits imports, on a running node, 50 contacts b0…b49 whose phone
// (6 KB) changes with round.
func bulkEdits(t *testing.T, dir string, round int) {
	t.Helper()
	var b strings.Builder
	for i := range 50 {
		phone := fmt.Sprintf("%03d-%03d ", round, i)
		line, err := json.Marshal(map[string]any{"id": fmt.Sprintf("b%d", i), "last_name": fmt.Sprintf("Bulk %d", i),
			"phone": strings.Repeat(phone, 6000/len(phone))})
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	r := runFerry(t, strings.NewReader(b.String()), "--dir", dir, "import", "contacts", "-")
	if r.Code != 0 || !strings.Contains(r.Stdout, "imported 50 records") {
		t.Fatalf("want exit 0 and 50 records imported:\n%s", r)
	}
}

// compactedHistory runs `ferry history ... --json` with the compacted marks.
func compactedHistory(t *testing.T, dir string, args ...string) []apijson.History {
	t.Helper()
	r := mustFerry(t, dir, append(append([]string{"history"}, args...), "--json")...)
	var h []apijson.History
	if err := json.Unmarshal([]byte(r.Stdout), &h); err != nil {
		t.Fatalf("history --json is not a list of operations: %v\n%s", err, r)
	}
	return h
}

// historyLine renders a field's history as "value(state) ...".
func historyLine(h []apijson.History) string {
	var parts []string
	for _, e := range h {
		state := "visible"
		switch {
		case e.Compacted:
			state = "compacted"
		case !e.Visible:
			state = "superseded"
		}
		parts = append(parts, fmt.Sprintf("%v(%s)", e.Value, state))
	}
	return strings.Join(parts, " ")
}
