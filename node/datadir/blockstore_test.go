package datadir

import (
	"context"
	"errors"
	"strings"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/ferry-crm/ferry/internal/diskfault"
)

// TestBlockNamespace: blocks are stored under BlockNamespace + "/blocks/"
// (the snapshot protocol copies the keys under it).
func TestBlockNamespace(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	bs := NewBlockstore(d)
	blk := blocks.NewBlock([]byte("a block"))
	if err := bs.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	res, err := d.Query(ctx, dsq.Query{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || !strings.HasPrefix(all[0].Key, BlockNamespace.String()+"/blocks/") {
		t.Fatalf("keys %v, want one under %s/blocks/", all, BlockNamespace)
	}
	if BlockNamespace.String() != "/ferry/blocks" {
		t.Errorf("BlockNamespace = %s: existing stores keep their blocks under /ferry/blocks", BlockNamespace)
	}
	got, err := bs.Get(ctx, blk.Cid())
	if err != nil || string(got.RawData()) != "a block" {
		t.Fatalf("read back: %v", err)
	}
}

func TestReportingBlockstore(t *testing.T) {
	ctx := context.Background()
	fault := diskfault.Wrap(dssync.MutexWrap(ds.NewMapDatastore()))
	var failed []error
	bs := NewReportingBlockstore(NewBlockstore(fault), func(err error) { failed = append(failed, err) })

	a, b := blocks.NewBlock([]byte("a")), blocks.NewBlock([]byte("b"))
	if err := bs.Put(ctx, a); err != nil || len(failed) != 0 {
		t.Fatalf("put with room: %v, reported %v", err, failed)
	}
	fault.SetFull(true)
	if err := bs.Put(ctx, b); !errors.Is(err, diskfault.ErrNoSpace) {
		t.Fatalf("put on a full disk: %v", err)
	}
	if err := bs.PutMany(ctx, []blocks.Block{b}); !errors.Is(err, diskfault.ErrNoSpace) {
		t.Fatalf("put many on a full disk: %v", err)
	}
	if len(failed) != 2 || !errors.Is(failed[0], diskfault.ErrNoSpace) || !errors.Is(failed[1], diskfault.ErrNoSpace) {
		t.Fatalf("reported %v, want the two failed writes", failed)
	}
	// Reads pass through.
	if has, err := bs.Has(ctx, a.Cid()); err != nil || !has {
		t.Fatalf("has: %v, %v", has, err)
	}
}
