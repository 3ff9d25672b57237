package crdt

import (
	"context"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	badger "github.com/ipfs/go-ds-badger"
)

// TestRecoverOrphanedLocalWrite: a node whose store holds a merged local
// delta whose block never became a head (a kill between go-ds-crdt's writes
// before local writes were made atomic, or a store written by an older
// release) shows the write and never announces it. Opened with Recover, or
// repaired, the block is a head again and reaches the other replicas.
func TestRecoverOrphanedLocalWrite(t *testing.T) {
	for _, recover := range []bool{false, true} {
		t.Run(map[bool]string{false: "without", true: "with"}[recover], func(t *testing.T) {
			tn := newTestNet(t, 2)
			a, b := tn.replicas[0], tn.replicas[1]
			ctx := context.Background()
			tn.setOnline(0, false)
			headsRoot := a.opts.Namespace.ChildString("h").String() + "/"
			before := readKeys(t, a.base, headsRoot)
			mustPut(t, a, "contacts", "lost", map[string]any{"last_name": "Orphan"})
			after := readKeys(t, a.base, headsRoot)
			dir := a.dir
			a.stop()
			// The crash: the new head never written, the old ones kept.
			base := openBadger(t, dir)
			for k := range after {
				if err := base.Delete(ctx, ds.NewKey(k)); err != nil {
					t.Fatal(err)
				}
			}
			for k, v := range before {
				if err := base.Put(ctx, ds.NewKey(k), v); err != nil {
					t.Fatal(err)
				}
			}
			if err := base.Close(); err != nil {
				t.Fatal(err)
			}
			tn.recoverNext = recover
			a = tn.start(0, dir)
			if got := a.Stats(ctx).Dirty; got != recover {
				t.Errorf("opened with Recover=%t: Stats says Dirty=%t, want %t (a walk of the DAG is needed)", recover, got, recover)
			}
			if recover { // Repair recovers orphans too, on an open store
				if err := a.Repair(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := a.Get(ctx, "contacts", "lost"); err != nil {
				t.Fatalf("the crashed replica lost its own write: %v", err)
			}
			if recover && a.Stats(ctx).Dirty {
				t.Error("still dirty after Repair")
			}
			tn.setOnline(0, true)
			if !recover {
				// The failure this fixes: B never hears of the write.
				deadline := time.Now().Add(time.Second)
				for time.Now().Before(deadline) {
					if _, err := b.Get(ctx, "contacts", "lost"); err == nil {
						t.Fatal("the orphaned write reached B without recovery: the test no longer reproduces the crash")
					}
					time.Sleep(20 * time.Millisecond)
				}
				return
			}
			waitFor(t, 10*time.Second, "the recovered write to reach B", func() bool {
				_, err := b.Get(ctx, "contacts", "lost")
				return err == nil
			})
			tn.waitConverged(10 * time.Second)
			for h := range readKeys(t, a.base, headsRoot) {
				if _, ok := before[h]; ok {
					t.Errorf("old head %s is still a head below the recovered block", h)
				}
			}
		})
	}
}

func readKeys(t *testing.T, d ds.Datastore, prefix string) map[string][]byte {
	t.Helper()
	res, err := d.Query(context.Background(), query.Query{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	out := map[string][]byte{}
	for r := range res.Next() {
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		out[r.Key] = r.Value
	}
	return out
}

func openBadger(t *testing.T, dir string) *badger.Datastore {
	t.Helper()
	opts := badger.DefaultOptions
	opts.GcInterval = 0
	d, err := badger.NewDatastore(dir, &opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
