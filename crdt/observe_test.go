package crdt

import (
	"context"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

// TestLocalWriteIsAllOrNothing: every write go-ds-crdt makes while merging
// this node's own delta (tombstones, elements, processed mark, heads) is
// held until commitTxn writes it in one batch; abort writes nothing. A
// crash or a failed write in between leaves nothing of it.
func TestLocalWriteIsAllOrNothing(t *testing.T) {
	base := ds.NewMapDatastore()
	ns := ds.NewKey("/ferry/crdt")
	var changed []string
	o := newObservedStore(base, ns, func(k string) { changed = append(changed, k) })
	ctx := withLocalWrite(context.Background())
	tomb := ns.ChildString("s/t/c/r/f/0000000000000001-A/CIQA")
	value := ns.ChildString("s/k/c/r/f/0000000000000001-A/v")
	elem := ns.ChildString("s/s/c/r/f/0000000000000002-A/CIQB")
	processed := ns.ChildString("b/CIQB")
	head := ns.ChildString("h/CIQB")
	if err := base.Put(ctx, value, []byte("old")); err != nil {
		t.Fatal(err)
	}
	stage := func() {
		b1, _ := o.Batch(ctx)
		_ = b1.Put(ctx, tomb, nil)
		_ = b1.Delete(ctx, value)
		if err := b1.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		b2, _ := o.Batch(ctx)
		_ = b2.Put(ctx, elem, nil)
		if err := b2.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := o.Put(ctx, processed, nil); err != nil {
			t.Fatal(err)
		}
		if err := o.Put(ctx, head, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	o.begin()
	stage()
	for _, k := range []ds.Key{tomb, elem, processed, head} {
		if has, _ := base.Has(ctx, k); has {
			t.Fatalf("%s reached the store before the write committed", k)
		}
	}
	if has, _ := base.Has(ctx, value); !has || len(changed) != 0 {
		t.Fatalf("the old value went early (or a change was reported: %v)", changed)
	}
	o.abort()
	for _, k := range []ds.Key{tomb, elem, processed, head} {
		if has, _ := base.Has(ctx, k); has {
			t.Fatalf("%s reached the store after abort", k)
		}
	}
	o.begin()
	stage()
	if err := o.commitTxn(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []ds.Key{tomb, elem, processed, head} {
		if has, _ := base.Has(ctx, k); !has {
			t.Errorf("%s missing after the write committed", k)
		}
	}
	if has, _ := base.Has(ctx, value); has {
		t.Error("the tombstoned value is still there")
	}
	if len(changed) != 1 {
		t.Errorf("changes reported %v, want the tombstoned value", changed)
	}
	// A remote merge's batches are not held back, even while a local write
	// is open.
	o.begin()
	defer o.abort()
	b3, _ := o.Batch(context.Background())
	tomb2 := ns.ChildString("s/t/c/r/f/0000000000000003-B/CIQC")
	_ = b3.Put(context.Background(), tomb2, nil)
	if err := b3.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if has, _ := base.Has(ctx, tomb2); !has {
		t.Error("a remote batch was held back")
	}
}
