package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
// (the laptop carries only what a cut does not cover). In a secured
// network the office vouches for the copies; in an open one it marks them
// copied.
func TestCutIgnoresMovedCopies(t *testing.T) {
	for _, secured := range []bool{true, false} {
		t.Run(map[bool]string{true: "secured", false: "open"}[secured], func(t *testing.T) {
			ctx := context.Background()
			var tn *testNet
			if secured {
				tn = newGrantsNet(t, 2)
			} else {
				tn = newTestNetWith(t, 2, grantsSchema, nil)
				setClocks(tn, time.Minute)
			}
			a, b := tn.replicas[0], tn.replicas[1]
			if secured {
				if err := a.Grant(ctx, "B", "east", "west"); err != nil {
					t.Fatal(err)
				}
				tn.waitConverged(10 * time.Second)
			}
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
			if v := getValue(t, bWest, "deals", "d1", "title"); v != "in east" {
				t.Errorf("B in west: d1 title %v, want in east", v)
			}
			cut, err := aWest.cutVector(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if cut["B"] != inWest.Time {
				t.Errorf("cut of west for B = %s, want %s (B's own write in west), not %s (a copy moved in)", cut["B"], inWest.Time, moved.Time)
			}
		})
	}
}

// TestRecordCountLeavesOutDeletedAndMovedRecords: what `ferry channels`
// counts is what a channel shows: not a record deleted there, nor one
// moved away from it, also when they changed after the count was first
// taken.
func TestRecordCountLeavesOutDeletedAndMovedRecords(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west")
	east, west := r.Channel("east"), r.Channel("west")
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := r.Put(ctx, "contacts", id, map[string]any{"name": id, "territory": "east"}); err != nil {
			t.Fatal(err)
		}
	}
	// Digests built before the delete and the move: the counts must
	// follow the changes made since.
	for _, s := range []*Store{east, west} {
		if _, err := s.Digest(ctx); err != nil {
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
		if n, ok := c.s.RecordCount(ctx); !ok || n != c.want {
			t.Errorf("channel %s counts %d records (built %v), want %d", c.s.opts.Channel, n, ok, c.want)
		}
	}
}

// TestCompactionKeepsAMoveOut: a record moved into west (with a laptop's
// writes, which the cut of west does not cover: they are copies) and then
// out again stays out when the office compacts west. The carry of the
// compaction once named the visible move op among the superseded ones
// (KeepField), and the record showed in west again, counted twice by the
// office (chaos seed 0x1).
func TestCompactionKeepsAMoveOut(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	if err := a.Grant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	eastHub, westHub := newHub(tn, "east"), newHub(tn, "west")
	aEast, bEast := eastHub.open(t, a), eastHub.open(t, b)
	aWest := westHub.open(t, a)
	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "east", "title": "from B"})
	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "west"})
	eastHub.converged(t)
	if _, err := aEast.Move(ctx, aWest, "deals", "d1"); err != nil {
		t.Fatal(err)
	}
	putIn(t, aWest, "deals", "d1", map[string]any{"territory": "east"})
	if _, err := aWest.Move(ctx, aEast, "deals", "d1"); err != nil {
		t.Fatal(err)
	}
	shownIn := func(s *Store) bool {
		t.Helper()
		_, err := s.Get(ctx, "deals", "d1")
		var mv *MovedError
		switch {
		case err == nil:
			return true
		case errors.As(err, &mv):
			return false
		default:
			t.Fatalf("get d1 in %s: %v", s.opts.Channel, err)
			return false
		}
	}
	if shownIn(aWest) || !shownIn(aEast) {
		t.Fatal("d1 not moved back to east")
	}
	if _, err := aWest.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if shownIn(aWest) {
		t.Error("after west's compaction, d1 shows in west again")
	}
	if _, err := aWest.Digest(ctx); err != nil {
		t.Fatal(err)
	}
	if n, ok := aWest.RecordCount(ctx); !ok || n != 0 {
		t.Errorf("west counts %d records (built %v), want 0", n, ok)
	}
}

// TestCompactionLeavesOutAMovedRecordsValues: once an office moved a
// record to west, a compaction of east seeds only the move op of it (its
// values are in west), so that a laptop holding only east does not keep
// them once in the new epoch; a write the move did not see (merged after
// it) is seeded, still to move.
func TestCompactionLeavesOutAMovedRecordsValues(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	if err := a.Grant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	eastHub, westHub := newHub(tn, "east"), newHub(tn, "west")
	aEast, bEast := eastHub.open(t, a), eastHub.open(t, b)
	aWest := westHub.open(t, a)
	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "east", "title": "secret"})
	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "west"})
	putIn(t, bEast, "deals", "d2", map[string]any{"territory": "east", "title": "stays"})
	eastHub.converged(t)
	tn.setOnline(1, false)
	late := putIn(t, bEast, "deals", "d1", map[string]any{"territory": "north"}) // the move will not see it
	if _, err := aEast.Move(ctx, aWest, "deals", "d1"); err != nil {
		t.Fatal(err)
	}
	tn.setOnline(1, true)
	eastHub.exchange()
	eastHub.converged(t)
	rep, err := aEast.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.MovedAway == 0 {
		t.Errorf("no write left out: %+v", rep)
	}
	eastHub.converged(t)
	for _, s := range []*Store{aEast, bEast} {
		if s.Epoch() != rep.Epoch {
			t.Fatalf("%s in epoch %s, want %s", s.Writer(), s.Epoch(), rep.Epoch)
		}
		ops, err := s.readRecord(ctx, "deals", "d1")
		if err != nil {
			t.Fatal(err)
		}
		var fields []string
		for _, w := range ops.writes {
			for _, op := range w.Ops {
				fields = append(fields, op.Field+"="+fmt.Sprint(op.Value))
				if op.Value == "secret" {
					t.Errorf("%s: east still holds the moved value: %s", s.Writer(), op.Ref())
				}
			}
		}
		if _, ok := ops.movedTo(); !ok {
			t.Errorf("%s: east lost the move op of d1 (holds %v)", s.Writer(), fields)
		}
		// The laptop keeps no history of it either; the office, which
		// holds every channel, keeps its whole history.
		if arch, err := s.readArchive(ctx, "deals", "d1"); err != nil || (s == bEast) != (len(arch) == 0) {
			t.Errorf("%s: east's history archive of the moved record: %+v (%v)", s.Writer(), arch, err)
		}
		if !slices.ContainsFunc(ops.writes, func(w visibleWrite) bool { return w.ID == late }) {
			t.Errorf("%s: east lost the write the move did not see (holds %v)", s.Writer(), fields)
		}
		if v := getValue(t, s, "deals", "d2", "title"); v != "stays" {
			t.Errorf("%s: d2 title %v, want stays", s.Writer(), v)
		}
	}
	if v := getValue(t, aWest, "deals", "d1", "title"); v != "secret" {
		t.Errorf("west: d1 title %v, want secret", v)
	}
}
