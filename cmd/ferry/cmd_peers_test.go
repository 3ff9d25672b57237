package main

import (
	"strings"
	"testing"

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
