package dsbatch

import (
	"context"
	"errors"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
)

func TestBufferAndApply(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	if err := d.Put(ctx, ds.NewKey("/gone"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	var b Buffer
	_ = b.Put(ctx, ds.NewKey("/a"), []byte("1"))
	_ = b.Delete(ctx, ds.NewKey("/gone"))
	_ = b.Put(ctx, ds.NewKey("/a"), []byte("2")) // order kept: the last wins
	if has, _ := d.Has(ctx, ds.NewKey("/a")); has {
		t.Fatal("a buffered write reached the datastore")
	}
	ops := b.Take()
	if len(ops) != 3 || len(b.Ops) != 0 {
		t.Fatalf("took %d ops, %d left", len(ops), len(b.Ops))
	}
	if err := Apply(ctx, d, ops); err != nil {
		t.Fatal(err)
	}
	if v, err := d.Get(ctx, ds.NewKey("/a")); err != nil || string(v) != "2" {
		t.Fatalf("/a = %q, %v", v, err)
	}
	if has, _ := d.Has(ctx, ds.NewKey("/gone")); has {
		t.Fatal("the buffered delete was not applied")
	}
	if err := Apply(ctx, failing{d}, ops); err == nil {
		t.Fatal("a failing batch applied without error")
	}
}

type failing struct{ ds.Batching }

func (f failing) Batch(context.Context) (ds.Batch, error) { return nil, errors.New("no batch") }
