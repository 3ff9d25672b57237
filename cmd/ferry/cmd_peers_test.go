package main

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

func TestPrintIncompatiblePeers(t *testing.T) {
	var none strings.Builder
	if err := printIncompatiblePeers(&none, []apijson.PeerInfo{{ID: "a", Connected: true}}); err != nil || none.Len() != 0 {
		t.Errorf("no incompatible peer: printed %q, %v", none.String(), err)
	}
	msg := "peer old (b) runs store format 1 (an earlier Ferry release), this node runs store format 2: not syncing with it; upgrade that node (its data migrates on start)"
	var out strings.Builder
	if err := printIncompatiblePeers(&out, []apijson.PeerInfo{{ID: "a"}, {ID: "b", Incompatible: msg}}); err != nil {
		t.Fatal(err)
	}
	if want := "\nnot syncing with 1 peer (another store format):\n  " + msg + "\n"; out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
}

func TestPrintPeersEpoch(t *testing.T) {
	last := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
	peers := []apijson.PeerInfo{
		{ID: "p1", Name: "office", Role: "office", Connected: true, Configured: true, LastSync: last, Epoch: "2-ab12cd34ef567890"},
		{ID: "p2", Name: "laptop2", Role: "laptop", Connected: true, Learned: true, Epoch: "1-0011223344556677"},
		{ID: "p3", Name: "laptop3", Role: "laptop"},
	}
	// Every peer in our epoch (or not heard from): no EPOCH column.
	var same strings.Builder
	if err := printPeers(&same, peers[:1], "2-ab12cd34ef567890"); err != nil {
		t.Fatal(err)
	}
	want := "PEER ID  NAME    ROLE    CONNECTED  HOW KNOWN   LAST SYNC\n" +
		"p1       office  office  true       configured  2026-03-01T09:30:00Z\n"
	if same.String() != want {
		t.Errorf("same epoch: printed\n%s\nwant\n%s", same.String(), want)
	}
	// A peer in an earlier epoch, we in the office's: the column says so.
	var out strings.Builder
	if err := printPeers(&out, peers, "2-ab12cd34ef567890"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) != 5 || !strings.HasSuffix(lines[0], "LAST SYNC             EPOCH") ||
		strings.TrimSpace(lines[1]) != "p1       office   office  true       configured  2026-03-01T09:30:00Z" ||
		!strings.HasSuffix(lines[2], "never                 1-00112233… (earlier: it will move to ours)") ||
		!strings.HasSuffix(lines[3], "wrote data  never") {
		t.Errorf("printed:\n%s", out.String())
	}
	// We are behind the office.
	out.Reset()
	if err := printPeers(&out, peers, "1-0011223344556677"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "2-ab12cd34… (later: this node moves to it)") || strings.Count(out.String(), "(") != 1 {
		t.Errorf("printed:\n%s", out.String())
	}
}
