package crdt

import (
	"context"
	"errors"
	"fmt"
	cid "github.com/ipfs/go-cid"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-datastore/query"
)

// TestMergeOldEpochCarriesALaptopsEdits: a laptop away across the office's
// compaction never adopts the new epoch (its grant ended); the office
// merges the laptop's old-epoch DAG and carries what its cut does not
// cover, once: an edit, a new record, a delete, and an older edit of a
// field the office changed since, which stays hidden.
func TestMergeOldEpochCarriesALaptopsEdits(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	for i := range 5 {
		id := fmt.Sprintf("c%d", i)
		mustPut(t, a, "contacts", id, map[string]any{"last_name": "L" + id, "phone": "p0"})
	}
	n.waitConverged(10 * time.Second)
	n.setOnline(1, false)
	mustPut(t, b, "contacts", "c1", map[string]any{"phone": "from-b"})
	mustPut(t, b, "contacts", "c3", map[string]any{"phone": "b-older"})
	mustPut(t, b, "contacts", "c9", map[string]any{"last_name": "New"})
	if _, err := b.Delete(ctx, "contacts", "c2"); err != nil {
		t.Fatal(err)
	}
	old := b.Epoch()
	heads, err := b.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}

	rep, err := a.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.clock.Set(a.clock.Now().Add(time.Minute)) // a later edit than B's
	mustPut(t, a, "contacts", "c3", map[string]any{"phone": "a-newer"})

	if _, err := a.MergeOldEpoch(ctx, rep.Epoch, heads); !errors.Is(err, ErrNotOlderEpoch) {
		t.Fatalf("merging the current epoch: %v, want ErrNotOlderEpoch", err)
	}
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	got, err := a.MergeOldEpoch(mctx, old, heads)
	if err != nil {
		t.Fatal(err)
	}
	if got.Carried == 0 {
		t.Fatalf("nothing carried: %+v", got)
	}
	check := func() {
		t.Helper()
		if a.Epoch() != rep.Epoch {
			t.Fatalf("office left its epoch: %s", a.Epoch())
		}
		if v := mustGet(t, a, "contacts", "c1").Values()["phone"]; v != "from-b" {
			t.Errorf("c1 phone %v, want from-b", v)
		}
		if v := mustGet(t, a, "contacts", "c3").Values()["phone"]; v != "a-newer" {
			t.Errorf("c3 phone %v, want a-newer", v)
		}
		if _, err := a.Get(ctx, "contacts", "c2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("c2 not deleted: %v", err)
		}
		mustGet(t, a, "contacts", "c9")
		// Nothing of the merge is left but what it carried.
		res, err := a.base.Query(ctx, query.Query{KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		all, _ := res.Rest()
		for _, e := range all {
			if strings.Contains(e.Key, "-merge-") {
				t.Fatalf("key left of the merge: %s", e.Key)
			}
		}
	}
	check()
	again, err := a.MergeOldEpoch(mctx, old, heads)
	if err != nil {
		t.Fatal(err)
	}
	if again.Carried != 0 {
		t.Errorf("merged twice: %d writes carried again", again.Carried)
	}
	check()
	// The laptop, back, moves to the office's epoch and sees the same.
	n.setOnline(1, true)
	n.waitConverged(20 * time.Second)
	if v := mustGet(t, b, "contacts", "c3").Values()["phone"]; v != "a-newer" {
		t.Errorf("laptop: c3 phone %v, want a-newer", v)
	}
}

// TestMergeOldEpochAsksForMissingBlocks: a block below the heads of the
// old epoch to merge is not held (the merge of another laptop's DAG of
// that epoch, just before, dropped the blocks they shared): the merge
// answers ErrBlocksMissing at once, so that the laptop sends them all,
// instead of waiting for them from the network.
func TestMergeOldEpochAsksForMissingBlocks(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "One"})
	n.waitConverged(10 * time.Second)
	n.setOnline(1, false)
	mustPut(t, b, "contacts", "c1", map[string]any{"phone": "from-b"})
	old := b.Epoch()
	heads, err := b.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	gone := heads[0]
	a.opts.HasBlock = func(_ context.Context, c cid.Cid) (bool, error) { return c != gone, nil }
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := a.MergeOldEpoch(mctx, old, heads); !errors.Is(err, ErrBlocksMissing) {
		t.Fatalf("merge with a block missing: %v, want ErrBlocksMissing", err)
	}
	if v := mustGet(t, a, "contacts", "c1").Values()["phone"]; v != nil {
		t.Fatalf("c1 phone %v after a merge refused", v)
	}
	a.opts.HasBlock = func(context.Context, cid.Cid) (bool, error) { return true, nil }
	if _, err := a.MergeOldEpoch(mctx, old, heads); err != nil {
		t.Fatal(err)
	}
	if v := mustGet(t, a, "contacts", "c1").Values()["phone"]; v != "from-b" {
		t.Errorf("c1 phone %v, want from-b", v)
	}
}
