package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
)

// sync --wait, diff and clean-sync through the binary.
func TestSyncWaitDiffAndCleanSync(t *testing.T) {
	e2e(t)
	c := startCluster(t)
	mustFerry(t, c.l1Dir, "put", "contacts", "c1", "first_name=Jeff", "last_name=Smith")

	r := mustFerry(t, c.l1Dir, "sync", "--wait", "--timeout", "20s")
	if !strings.Contains(r.Stdout, "in sync") {
		t.Fatalf("sync --wait:\n%s", r)
	}
	// Right after, the office shows the laptop's record and the digests agree.
	waitRecord(t, c.officeDir, "contacts", "c1", map[string]any{"last_name": "Smith"})
	r = mustFerry(t, c.l1Dir, "diff", "office", "--json")
	var d apijson.DiffResult
	if err := json.Unmarshal([]byte(r.Stdout), &d); err != nil || !d.Identical || d.Digest != mustStatus(t, c.officeDir).Digest {
		t.Fatalf("diff with the office: %+v %v\n%s", d, err, r)
	}
	if r := ferry(t, c.l1Dir, "diff", "nobody"); r.Code != 1 {
		t.Errorf("diff with an unknown peer:\n%s", r)
	}
	if r := ferry(t, c.l1Dir, "sync", "extra"); r.Code != 2 {
		t.Errorf("sync with an argument:\n%s", r)
	}

	// Offline, the laptop cannot be in sync: --wait times out with exit 3.
	mustFerry(t, c.l2Dir, "offline")
	if r := ferry(t, c.l2Dir, "sync", "--wait", "--timeout", "1s"); r.Code != 1 || !strings.Contains(r.Stderr, "offline") {
		t.Errorf("sync while offline:\n%s", r)
	}
	mustFerry(t, c.l2Dir, "online")

	// clean-sync: refused while the node runs; after a stop, with an
	// unacknowledged local edit, refused without --force.
	if r := ferry(t, c.l2Dir, "clean-sync", "--yes"); r.Code != 1 || !strings.Contains(r.Stderr, "stop it first") {
		t.Errorf("clean-sync with the node running:\n%s", r)
	}
	waitRecord(t, c.l2Dir, "contacts", "c1", map[string]any{"last_name": "Smith"})
	mustFerry(t, c.l2Dir, "offline")
	mustFerry(t, c.l2Dir, "put", "contacts", "mine", "last_name=Only here")
	c.l2.stop()
	if r := ferry(t, c.l2Dir, "clean-sync", "--yes"); r.Code != 1 || !strings.Contains(r.Stderr, "not held by any office") {
		t.Errorf("clean-sync over an unacknowledged edit:\n%s", r)
	}
	if r := ferry(t, c.l2Dir, "clean-sync"); r.Code != 2 {
		t.Errorf("clean-sync without a terminal and without --yes:\n%s", r)
	}
	r = mustFerry(t, c.l2Dir, "clean-sync", "--yes", "--force")
	if !strings.Contains(r.Stdout, "copied the state of") || !strings.Contains(r.Stdout, "discarded 1 local edit") {
		t.Errorf("clean-sync --force:\n%s", r)
	}
	if r := ferry(t, c.l2Dir, "get", "contacts", "mine"); r.Code != 1 {
		t.Errorf("the discarded edit survived:\n%s", r)
	}
	waitRecord(t, c.l2Dir, "contacts", "c1", map[string]any{"first_name": "Jeff"})

	// Alone, a node is not in sync with anybody: exit 3 at the timeout.
	c.office.stop()
	c.l1.stop()
	c.l2 = startNode(t, c.l2Dir)
	mustFerry(t, c.l2Dir, "online") // offline was kept across the restart
	if r := ferry(t, c.l2Dir, "sync", "--wait", "--timeout", "1s"); r.Code != 3 || !strings.Contains(r.Stdout, "no peer connected") {
		t.Errorf("sync --wait with no peer:\n%s", r)
	}
}
