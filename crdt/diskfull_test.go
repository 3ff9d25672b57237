package crdt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"

	"github.com/ferry-crm/ferry/schema"
)

// Full disks, through diskfault: the store's namespace (go-ds-crdt's state)
// and the block store fail writes separately or together, at once or after
// a few bytes. A write that fails must leave nothing visible and nothing
// referenced, say so (ErrNotWritten), succeed when tried again once there
// is room, and never ride along with the next write.

// fullSite says what runs out of room.
type fullSite struct {
	name          string
	store, blocks bool
	afterBytes    int64 // budget before failing (0: at once)
}

var fullSites = []fullSite{
	{name: "store", store: true},
	{name: "blocks", blocks: true},
	{name: "both", store: true, blocks: true},
	{name: "store-after-300-bytes", store: true, afterBytes: 300},
}

func (tn *testNet) setFull(i int, site fullSite) {
	if site.store {
		tn.fault[i].SetBudget(ds.NewKey("/"), site.afterBytes)
	}
	if site.blocks {
		tn.blockFault.SetBudget(ds.NewKey("/"), site.afterBytes)
	}
}

func (tn *testNet) clearFull(i int) {
	tn.fault[i].SetBudget(ds.NewKey("/"), -1)
	tn.blockFault.SetBudget(ds.NewKey("/"), -1)
}

// snapshotState is what a failed write must leave unchanged.
type snapshotState struct {
	heads  string
	digest string
	keys   int
}

func snapshotOf(t *testing.T, r *replica) snapshotState {
	t.Helper()
	ctx := context.Background()
	d, err := r.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return snapshotState{heads: headsKey(r), digest: d.String(), keys: len(readKeys(t, r.base, "/"))}
}

func assertNotWritten(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("the write succeeded on a full disk")
	}
	if !errors.Is(err, ErrNotWritten) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("error %q: want ErrNotWritten wrapping ENOSPC", err)
	}
}

// TestDiskFullWritePaths: every local write path on a full disk.
func TestDiskFullWritePaths(t *testing.T) {
	type writePath struct {
		name string
		// prepare runs with room; write is the write that hits the full
		// disk (attempt counts tries, for unique values); visible says
		// whether what write wrote shows on r.
		prepare func(t *testing.T, tn *testNet)
		write   func(r *replica, attempt int) error
		visible func(t *testing.T, r *replica, attempt int) bool
	}
	ctx := context.Background()
	value := func(attempt int) string { return fmt.Sprintf("v%d", attempt) }
	lastName := func(r *replica, id string) string {
		rec, err := r.Get(ctx, "contacts", id)
		if err != nil {
			return ""
		}
		v, _ := rec.Fields["last_name"].Value.(string)
		return v
	}
	paths := []writePath{
		{name: "put",
			write: func(r *replica, a int) error {
				_, err := r.Put(ctx, "contacts", "p1", map[string]any{"last_name": value(a)})
				return err
			},
			visible: func(t *testing.T, r *replica, a int) bool { return lastName(r, "p1") == value(a) }},
		{name: "import",
			write: func(r *replica, a int) error {
				var recs []ImportRecord
				for i := range 50 {
					recs = append(recs, ImportRecord{Line: i + 1, ID: fmt.Sprintf("i%d", i), Fields: map[string]any{"last_name": value(a)}})
				}
				_, err := r.Import(ctx, "contacts", recs, nil)
				return err
			},
			visible: func(t *testing.T, r *replica, a int) bool {
				return lastName(r, "i0") == value(a) || lastName(r, "i49") == value(a)
			}},
		{name: "delete",
			prepare: func(t *testing.T, tn *testNet) {
				mustPut(t, tn.replicas[0], "contacts", "d1", map[string]any{"last_name": "Doomed"})
			},
			write: func(r *replica, a int) error {
				_, err := r.Delete(ctx, "contacts", "d1")
				return err
			},
			visible: func(t *testing.T, r *replica, a int) bool { return lastName(r, "d1") == "" }},
		{name: "resolve",
			prepare: func(t *testing.T, tn *testNet) {
				a, b := tn.replicas[0], tn.replicas[1]
				mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Base"})
				tn.waitConverged(10 * time.Second)
				tn.setOnline(1, false)
				mustPut(t, a, "contacts", "c1", map[string]any{"phone": "1"})
				b.clock.Set(epoch.Add(time.Hour))
				mustPut(t, b, "contacts", "c1", map[string]any{"phone": "2"})
				tn.setOnline(1, true)
				tn.waitConverged(10 * time.Second)
			},
			write: func(r *replica, a int) error {
				_, err := r.Resolve(ctx, "contacts", "c1", "phone", Resolution{Value: value(a)})
				return err
			},
			visible: func(t *testing.T, r *replica, a int) bool {
				rec, err := r.Get(ctx, "contacts", "c1")
				return err == nil && rec.Fields["phone"].Value == value(a)
			}},
		{name: "schema",
			write: func(r *replica, a int) error {
				sc, err := schema.Parse([]byte(testSchema + fmt.Sprintf("  notes%d:\n    fields:\n      text: {type: string}\n", a)))
				if err != nil {
					return err
				}
				_, err = r.ApplySchema(ctx, sc)
				return err
			},
			visible: func(t *testing.T, r *replica, a int) bool {
				sc, err := r.Schema(ctx)
				return err == nil && sc.Collections[fmt.Sprintf("notes%d", a)] != nil
			}},
		{name: "node-info",
			write: func(r *replica, a int) error { return r.SetNodeInfo(ctx, value(a), RoleOffice) },
			visible: func(t *testing.T, r *replica, a int) bool {
				rec, err := r.Get(ctx, NodesCollection, "A")
				return err == nil && rec.Fields["name"].Value == value(a)
			}},
	}
	for _, p := range paths {
		for _, site := range fullSites {
			t.Run(p.name+"/"+site.name, func(t *testing.T) {
				tn := newTestNet(t, 2)
				a, b := tn.replicas[0], tn.replicas[1]
				if p.prepare != nil {
					p.prepare(t, tn)
				}
				tn.waitConverged(10 * time.Second)
				before := snapshotOf(t, a)
				tn.setFull(0, site)
				err := p.write(a, 1)
				assertNotWritten(t, err)
				if p.visible(t, a, 1) {
					t.Fatal("a write reported as failed shows on its own node")
				}
				tn.clearFull(0)
				if after := snapshotOf(t, a); after.heads != before.heads || after.digest != before.digest {
					t.Fatalf("the failed write changed the store: heads %s -> %s, digest %s -> %s", before.heads, after.heads, before.digest, after.digest)
				}
				// The next write must not carry the failed one along.
				mustPut(t, a, "contacts", "after", map[string]any{"last_name": "After"})
				tn.waitConverged(10 * time.Second)
				for _, r := range []*replica{a, b} {
					if p.visible(t, r, 1) {
						t.Fatalf("%s: the failed write rode along with the next one", r.writer)
					}
				}
				// Tried again with room, it succeeds and reaches the peer.
				if err := p.write(a, 2); err != nil {
					t.Fatalf("the same write with room again: %v", err)
				}
				tn.waitConverged(10 * time.Second)
				for _, r := range []*replica{a, b} {
					if !p.visible(t, r, 2) {
						t.Fatalf("%s: the retried write is not visible", r.writer)
					}
				}
				if err := a.Repair(ctx); err != nil {
					t.Fatalf("repair after the failure: %v", err)
				}
				rep, err := a.Check(ctx, CheckOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if !rep.OK {
					t.Fatalf("check after the failed write: %v", rep.Problems)
				}
			})
		}
	}
}

// TestDiskFullMembership: adding a member on a full disk (a trust net).
func TestDiskFullMembership(t *testing.T) {
	ctx := context.Background()
	tn := newTrustNet(t, 2, "X")
	a := tn.replicas[0]
	for _, site := range fullSites[:3] {
		before := snapshotOf(t, a)
		tn.setFull(0, site)
		assertNotWritten(t, a.AddMember(ctx, "X", "x "+site.name, RoleLaptop))
		tn.clearFull(0)
		if after := snapshotOf(t, a); after.digest != before.digest || after.heads != before.heads {
			t.Fatalf("%s: the failed membership write changed the store", site.name)
		}
		if _, ok, _ := a.Member(ctx, "X"); ok {
			t.Fatalf("%s: the member added on a full disk is a member", site.name)
		}
	}
	if err := a.AddMember(ctx, "X", "x", RoleLaptop); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	if _, ok, _ := tn.replicas[1].Member(ctx, "X"); !ok {
		t.Fatal("the member added with room did not reach the peer")
	}
}

// TestDiskFullRemoteMerge: a replica whose disk fills while it merges a
// peer's deltas (live, or catching up after being offline) knows it needs
// repair although go-ds-crdt could not write its dirty bit, and converges
// once there is room again.
func TestDiskFullRemoteMerge(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		offline bool
		budget  int64
	}{
		{"live-at-once", false, 0},
		{"live-part-way", false, 4000},
		{"catch-up-part-way", true, 4000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t, 2)
			a, b := tn.replicas[0], tn.replicas[1]
			if tc.offline {
				tn.setOnline(1, false)
			}
			tn.fault[1].SetBudget(ds.NewKey("/"), tc.budget)
			for i := range 30 {
				mustPut(t, a, "contacts", fmt.Sprintf("r%d", i), map[string]any{"last_name": fmt.Sprintf("L%d", i)})
			}
			if tc.offline {
				tn.setOnline(1, true)
			}
			waitFor(t, 10*time.Second, "the merge to fail on the full disk", func() bool {
				return tn.fault[1].Refused() > 0
			})
			waitFor(t, 10*time.Second, "the replica to know it needs repair", func() bool {
				st := b.Stats(ctx)
				return st.RepairNeeded && st.Dirty && st.FailedWrites > 0
			})
			if dirtyBit, _ := b.base.Has(ctx, b.opts.Namespace.ChildString("d")); dirtyBit && tc.budget == 0 {
				t.Fatal("go-ds-crdt wrote its dirty bit on a full disk: the test no longer covers a lost dirty bit")
			}
			if _, err := b.RepairIfNeeded(ctx); err == nil {
				t.Fatal("repair succeeded on a full disk")
			}
			tn.fault[1].SetBudget(ds.NewKey("/"), -1)
			if ran, err := b.RepairIfNeeded(ctx); !ran || err != nil {
				t.Fatalf("repair with room: ran %t, %v", ran, err)
			}
			tn.exchangeHeads(1)
			tn.waitConverged(10 * time.Second)
			da, _ := a.Digest(ctx)
			db, _ := b.Digest(ctx)
			if da != db {
				t.Fatalf("digests differ after repair: %s %s", da, db)
			}
			if n := countRecords(t, b); n != 30 {
				t.Fatalf("replica holds %d records after repair, want 30", n)
			}
			if st := b.Stats(ctx); st.Dirty || st.RepairNeeded {
				t.Fatalf("still dirty after repair: %+v", st)
			}
		})
	}
}

func countRecords(t *testing.T, r *replica) int {
	t.Helper()
	n := 0
	if err := r.List(context.Background(), "contacts", func(*Record) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCheckFindsAndRepairs: a store broken the ways the old release broke
// them (a merged block no head leads to; a block lost from the block store
// under the heads) is reported by Check and repaired by Check with Repair;
// a fresh replica then syncs everything.
func TestCheckFindsAndRepairs(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	tn.setOnline(1, false)
	mustPut(t, a, "contacts", "kept", map[string]any{"last_name": "Kept"})
	mustPut(t, a, "contacts", "lost", map[string]any{"last_name": "LostBlock"})
	heads := a.Stats(ctx).Heads
	if len(heads) != 1 {
		t.Fatalf("heads %v", heads)
	}
	// The block of "lost" vanishes from the block store: the store now
	// shows a value no block carries, below a head that is not there.
	lostBlock := heads[0]
	bkey := ds.NewKey("/blocks").Child(dshelp.MultihashToDsKey(lostBlock.Hash()))
	if err := tn.blockFault.Unwrap().Delete(ctx, bkey); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.dag.Get(ctx, lostBlock); err == nil {
		t.Fatal("block still there")
	}
	rep, err := a.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before repair: %s", strings.Join(rep.Problems, "; "))
	if rep.OK || len(rep.MissingBlocks) != 1 || rep.UnbackedCount == 0 {
		t.Fatalf("check did not see the lost block and the value it carried: %+v", rep)
	}
	if b.DeclaredLost(ctx, []cid.Cid{lostBlock}) {
		t.Fatal("declared lost before anybody said so")
	}
	rep, err = a.Check(ctx, CheckOptions{Repair: true, DropLost: func(context.Context, []cid.Cid) bool { return true }, Declare: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repair: %s", strings.Join(rep.Repaired, "; "))
	if !rep.OK {
		t.Fatalf("check after repair: %v", rep.Problems)
	}
	for _, h := range a.Stats(ctx).Heads {
		// Written again on the same parents, the value makes the very same
		// block (content addressing): then it is held again.
		if _, err := tn.dag.Get(ctx, h); err != nil {
			t.Fatalf("head %s is not held after repair", h)
		}
	}
	if v := mustGet(t, a, "contacts", "lost"); v.Fields["last_name"].Value != "LostBlock" {
		t.Fatal("repair lost the value")
	}
	tn.setOnline(1, true)
	waitFor(t, 10*time.Second, "the peer to receive the value the lost block carried", func() bool {
		rec, err := b.Get(ctx, "contacts", "lost")
		return err == nil && rec.Fields["last_name"].Value == "LostBlock"
	})
	tn.waitConverged(10 * time.Second)
	rep, err = b.Check(ctx, CheckOptions{})
	if err != nil || !rep.OK {
		t.Fatalf("peer check: %v %+v", err, rep)
	}
	if !b.DeclaredLost(ctx, []cid.Cid{lostBlock}) {
		t.Fatal("the peer does not know the block was declared lost")
	}
}

// TestRepublishKeepsWritesWhole: values written again by a repair travel
// write by write (a signature covers all the ops of a write): a peer
// verifies every one of them, however many deltas the repair needs.
func TestRepublishKeepsWritesWhole(t *testing.T) {
	ctx := context.Background()
	tn := newTrustNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	tn.setOnline(1, false)
	a.opts.BatchOps = 5 // writes of 3 ops: a split would cut one in two
	var head cid.Cid
	for i := range 4 {
		mustPut(t, a, "contacts", fmt.Sprintf("w%d", i), map[string]any{"last_name": "L", "first_name": "F", "phone": fmt.Sprint(i)})
		if i == 0 { // the first write's block goes: the 4 writes are written again
			head = a.Stats(ctx).Heads[0]
		}
	}
	if err := tn.blockFault.Unwrap().Delete(ctx, ds.NewKey("/blocks").Child(dshelp.MultihashToDsKey(head.Hash()))); err != nil {
		t.Fatal(err)
	}
	rep, err := a.Check(ctx, CheckOptions{Repair: true, DropLost: func(context.Context, []cid.Cid) bool { return true }, Declare: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("after repair: %v", rep.Problems)
	}
	t.Logf("repair: %v", rep.Repaired)
	tn.setOnline(1, true)
	tn.waitConverged(10 * time.Second)
	if ig, _ := b.Ignored(ctx); len(ig) != 0 {
		t.Fatalf("the peer ignores %d republished ops, e.g. %+v", len(ig), ig[0])
	}
	for i := range 4 {
		rec := mustGet(t, b, "contacts", fmt.Sprintf("w%d", i))
		if rec.Fields["phone"].Value != fmt.Sprint(i) || rec.Fields["first_name"].Value != "F" {
			t.Fatalf("w%d on the peer: %v", i, rec.Values())
		}
	}
}
