package datadir

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/ipfs/boxo/datastore/dshelp"
	blocks "github.com/ipfs/go-block-format"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
)

// TestBlocksStoredCompressed: a block is stored compressed under its raw
// CID and read back byte for byte; a block stored raw (earlier releases,
// or incompressible data) reads as it is.
func TestBlocksStoredCompressed(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	bs := NewBlockstore(d)
	raw := []byte(strings.Repeat("/contacts/c1/0000000000000001-12D3KooWExample first_name last_name ", 200))
	blk := blocks.NewBlock(raw)
	if err := bs.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	got, err := bs.Get(ctx, blk.Cid())
	if err != nil || !bytes.Equal(got.RawData(), raw) {
		t.Fatalf("read back %d bytes, %v", len(got.RawData()), err)
	}
	if n, err := bs.GetSize(ctx, blk.Cid()); err != nil || n != len(raw) {
		t.Errorf("size %d, %v; want %d", n, err, len(raw))
	}
	var stored []byte
	keys, _ := d.Query(ctx, queryAll)
	for r := range keys.Next() {
		stored = r.Value
	}
	if !bytes.HasPrefix(stored, zstdMagic) || len(stored) >= len(raw)/4 {
		t.Errorf("stored %d bytes (compressed: %v) for a block of %d", len(stored), bytes.HasPrefix(stored, zstdMagic), len(raw))
	}

	// Stored raw: read as is.
	plain := blocks.NewBlock([]byte{0x12, 0x00, 0x0a, 0x03, 'a', 'b', 'c'})
	key := BlockNamespace.ChildString("blocks").Child(dsKeyOf(plain))
	if err := d.Put(ctx, key, plain.RawData()); err != nil {
		t.Fatal(err)
	}
	got, err = bs.Get(ctx, plain.Cid())
	if err != nil || !bytes.Equal(got.RawData(), plain.RawData()) {
		t.Fatalf("raw block read back as %x, %v", got.RawData(), err)
	}
	// Incompressible data is stored raw.
	if c := CompressBlock([]byte{1, 2, 3}); !bytes.Equal(c, []byte{1, 2, 3}) {
		t.Errorf("3 bytes stored as %x", c)
	}
	if _, err := DecompressBlock(append(append([]byte{}, zstdMagic...), 0xff, 0xff)); err == nil {
		t.Error("a corrupt compressed block decoded")
	}
}

var queryAll = query.Query{}

func dsKeyOf(b blocks.Block) ds.Key { return dshelp.MultihashToDsKey(b.Cid().Hash()) }
