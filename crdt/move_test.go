package crdt

import (
	"context"
	"testing"
	"time"
)

// TestMoveVouchesForTheOfficesImportWrites: an office's import writes are
// signed with their whole batch; moved alone into another channel they
// would fail that signature on every other node. The move vouches for
// them: a laptop granted the new channel shows the record, ignoring
// nothing.
func TestMoveVouchesForTheOfficesImportWrites(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	if err := a.Grant(ctx, "B", "west"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	eastHub, westHub := newHub(tn, "east"), newHub(tn, "west")
	aEast, aWest, bWest := eastHub.open(t, a), westHub.open(t, a), westHub.open(t, b)
	if _, err := aEast.Import(ctx, "deals", []ImportRecord{
		{ID: "d1", Fields: map[string]any{"territory": "east", "title": "one"}},
		{ID: "d2", Fields: map[string]any{"territory": "east", "title": "two"}},
	}, nil); err != nil {
		t.Fatal(err)
	}
	putIn(t, aEast, "deals", "d1", map[string]any{"territory": "west"})
	if _, err := aEast.Move(ctx, aWest, "deals", "d1"); err != nil {
		t.Fatal(err)
	}
	westHub.converged(t)
	if ig, _ := bWest.Ignored(ctx); len(ig) != 0 {
		t.Errorf("the laptop ignores the office's moved import writes: %+v", ig)
	}
	if v := getValue(t, bWest, "deals", "d1", "title"); v != "one" {
		t.Errorf("laptop in west: d1 title %v, want one", v)
	}
}

// TestCutIgnoresMovedCopies: a move brings a laptop's writes from east
// into west, newer than the laptop's writes in west. The cut of a
// compaction of west must not count them: it would cover the laptop's
// west writes the office may not have yet, and those would then be lost
// (the laptop carries only what a cut does not cover).
func TestCutIgnoresMovedCopies(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	if err := a.Grant(ctx, "B", "east", "west"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	eastHub, westHub := newHub(tn, "east"), newHub(tn, "west")
	aEast, bEast := eastHub.open(t, a), eastHub.open(t, b)
	aWest := westHub.open(t, a)
	bWest := westHub.open(t, b)
	inWest := putIn(t, bWest, "deals", "w1", map[string]any{"territory": "west", "title": "in west"})
	westHub.converged(t)
	setClocks(tn, 3*time.Minute)
	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "east", "title": "in east"})
	moved := putIn(t, bEast, "deals", "d1", map[string]any{"territory": "west"})
	eastHub.converged(t)
	if _, err := aEast.Move(ctx, aWest, "deals", "d1"); err != nil {
		t.Fatal(err)
	}
	westHub.converged(t)
	cut, err := aWest.cutVector(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cut["B"] != inWest.Time {
		t.Errorf("cut of west for B = %s, want %s (B's own write in west), not %s (a copy moved in)", cut["B"], inWest.Time, moved.Time)
	}
}

// TestRecordCountLeavesOutDeletedAndMovedRecords: what `ferry channels`
// counts is what a channel shows: not a record deleted there, nor one
// moved away from it.
func TestRecordCountLeavesOutDeletedAndMovedRecords(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west")
	east, west := r.Channel("east"), r.Channel("west")
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := r.Put(ctx, "contacts", id, map[string]any{"name": id, "territory": "east"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Delete(ctx, "contacts", "c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, "contacts", "c3", map[string]any{"territory": "west"}); err != nil {
		t.Fatal(err)
	}
	if _, err := east.Move(ctx, west, "contacts", "c3"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    *Store
		want int
	}{{east, 1}, {west, 1}} {
		if _, err := c.s.Digest(ctx); err != nil {
			t.Fatal(err)
		}
		if n, ok := c.s.RecordCount(ctx); !ok || n != c.want {
			t.Errorf("channel %s counts %d records (built %v), want %d", c.s.opts.Channel, n, ok, c.want)
		}
	}
}
