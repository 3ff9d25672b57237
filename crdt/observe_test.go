package crdt

import (
	"context"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

// TestLocalTombstonesWaitForTheirElements: the tombstones of this node's
// own delta reach the store only with the delta's elements, in one batch,
// so a crash between go-ds-crdt's two batches leaves neither.
func TestLocalTombstonesWaitForTheirElements(t *testing.T) {
	base := ds.NewMapDatastore()
	ns := ds.NewKey("/ferry/crdt")
	var changed []string
	o := newObservedStore(base, ns, func(k string) { changed = append(changed, k) })
	ctx := withLocalWrite(context.Background())
	tomb := ns.ChildString("s/t/c/r/f/0000000000000001-A/CIQA")
	value := ns.ChildString("s/k/c/r/f/0000000000000001-A/v")
	elem := ns.ChildString("s/s/c/r/f/0000000000000002-A/CIQB")

	b1, _ := o.Batch(ctx)
	_ = b1.Put(ctx, tomb, nil)
	_ = b1.Delete(ctx, value)
	if err := b1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if has, _ := base.Has(ctx, tomb); has || len(changed) != 0 {
		t.Fatalf("a tombstone batch alone reached the store (or was reported: %v)", changed)
	}
	b2, _ := o.Batch(ctx)
	_ = b2.Put(ctx, elem, nil)
	if err := b2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []ds.Key{tomb, elem} {
		if has, _ := base.Has(ctx, k); !has {
			t.Errorf("%s missing after the elements' commit", k)
		}
	}
	if len(changed) != 1 {
		t.Errorf("changes reported %v, want the tombstoned value", changed)
	}
	// A remote merge's batches are not held back.
	b3, _ := o.Batch(context.Background())
	tomb2 := ns.ChildString("s/t/c/r/f/0000000000000003-B/CIQC")
	_ = b3.Put(context.Background(), tomb2, nil)
	if err := b3.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if has, _ := base.Has(ctx, tomb2); !has {
		t.Error("a remote tombstone batch was held back")
	}
}
