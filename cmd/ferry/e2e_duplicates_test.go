package main

// End-to-end test of duplicate detection after merge
// (docs/duplicates.md). Skipped with -short.

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
)

func duplicatesOf(t *testing.T, dir string) ([]apijson.Duplicate, result) {
	t.Helper()
	var out []apijson.Duplicate
	r := ferry(t, dir, "duplicates", "contacts", "--json")
	if r.Code == 0 {
		if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
			t.Fatalf("duplicates --json: %v\n%s", err, r)
		}
	}
	return out, r
}

// TestDuplicatesAfterOfflineCreates: two laptops offline create the same
// e-mail address (in other case); once back, both and the office list the
// duplicate; a merge on one laptop resolves it everywhere. A put of a
// likely duplicate is refused unless allowed.
func TestDuplicatesAfterOfflineCreates(t *testing.T) {
	e2e(t)
	c := startCluster(t)
	mustFerry(t, c.officeDir, "put", "accounts", "acme", "name=Acme")
	waitRecord(t, c.l2Dir, "accounts", "acme", map[string]any{"name": "Acme"})
	mustFerry(t, c.l1Dir, "offline")
	mustFerry(t, c.l2Dir, "offline")
	mustFerry(t, c.l1Dir, "put", "contacts", "ann1", "last_name=Doe", "email=Ann@Example.com", "phone=555 0100")
	mustFerry(t, c.l2Dir, "put", "contacts", "ann2", "last_name=Doe", "first_name=Ann", "email= ann@example.com", "account=acme")
	for _, d := range []string{c.l1Dir, c.l2Dir} {
		if dups, r := duplicatesOf(t, d); len(dups) != 0 {
			t.Fatalf("%s: duplicates while offline:\n%s", filepath.Base(d), r)
		}
	}
	mustFerry(t, c.l1Dir, "online")
	mustFerry(t, c.l2Dir, "online")
	for _, d := range c.dirs() {
		eventually(t, filepath.Base(d)+" lists the duplicate", func() (bool, string) {
			dups, r := duplicatesOf(t, d)
			return len(dups) == 1 && dups[0].Rule == "email" && len(dups[0].Records) == 2 &&
				dups[0].Records[0].ID == "ann1" && dups[0].Records[1].ID == "ann2" && !dups[0].Since.IsZero(), r.String()
		})
	}
	if st := mustStatus(t, c.officeDir); st.Duplicates != 1 {
		t.Errorf("office status: %d duplicates, want 1", st.Duplicates)
	}
	if r := mustFerry(t, c.officeDir, "duplicates"); !strings.Contains(r.Stdout, "ann1 = ann2 (same email)") || !strings.Contains(r.Stdout, "Ann@Example.com") {
		t.Errorf("duplicates (text):\n%s", r)
	}
	// A likely duplicate is refused where it is written, unless allowed.
	r := ferry(t, c.officeDir, "put", "contacts", "ann3", "last_name=X", "email=ANN@example.com ")
	if r.Code == 0 || !strings.Contains(r.Stderr, "likely a duplicate of contacts/ann1") || !strings.Contains(r.Stderr, "--allow-duplicate") {
		t.Fatalf("put of a duplicate not refused clearly:\n%s", r)
	}
	if _, _, r, ok := getRecord(t, c.officeDir, "contacts", "ann3"); ok {
		t.Fatalf("a refused put wrote ann3:\n%s", r)
	}
	if r := ferry(t, c.officeDir, "merge", "contacts", "ann1", "ann1"); r.Code == 0 {
		t.Errorf("merging a record into itself succeeded:\n%s", r)
	}
	if r := ferry(t, c.officeDir, "merge", "contacts", "ann1", "ann2", "--prefer", "ann2"); r.Code != exitUsage {
		t.Errorf("--prefer OTHER is not a usage error:\n%s", r)
	}

	r = mustFerry(t, c.l1Dir, "merge", "contacts", "ann1", "ann2")
	if !strings.Contains(r.Stdout, "merged contacts/ann2 into contacts/ann1") {
		t.Errorf("merge output:\n%s", r)
	}
	for _, d := range c.dirs() {
		waitGone(t, d, "contacts", "ann2")
		waitRecord(t, d, "contacts", "ann1", map[string]any{"first_name": "Ann", "account": "acme", "phone": "555 0100", "email": " ann@example.com"})
		eventually(t, filepath.Base(d)+" has no duplicates left", func() (bool, string) {
			dups, r := duplicatesOf(t, d)
			return len(dups) == 0, r.String()
		})
	}
	if r := mustFerry(t, c.l2Dir, "history", "contacts", "ann2"); !strings.Contains(r.Stdout, "deleted the record") {
		t.Errorf("ann2's history is not reachable:\n%s", r)
	}
	mustFerry(t, c.officeDir, "put", "contacts", "ann3", "last_name=X", "email=ANN@example.com", "--allow-duplicate")
	c.stop()
}
