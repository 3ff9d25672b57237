package datadir

import (
	"context"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
)

// BlockNamespace is where DAG blocks live in the store, beside go-ds-crdt's
// state. Block keys are BlockNamespace + "/blocks/" + the base32 multihash
// (boxo's blockstore adds the "/blocks" prefix).
var BlockNamespace = ds.NewKey("/ferry/blocks")

// NewBlockstore returns the block store kept in the datastore d, under
// BlockNamespace, each block compressed (see CompressBlock).
func NewBlockstore(d ds.Batching) blockstore.Blockstore {
	return NewBlockstoreAt(d, BlockNamespace)
}

// NewBlockstoreAt is NewBlockstore under another namespace (a channel's
// blocks: /ferry/ch/<channel>/blocks).
func NewBlockstoreAt(d ds.Batching, ns ds.Key) blockstore.Blockstore {
	return blockstore.NewBlockstore(newCompressedStore(namespace.Wrap(d, ns)))
}

// NewReportingBlockstore returns bs that calls failed with the error of
// every block write (Put, PutMany) that fails, and still returns it.
func NewReportingBlockstore(bs blockstore.Blockstore, failed func(error)) blockstore.Blockstore {
	return reportingBlockstore{Blockstore: bs, failed: failed}
}

// reportingBlockstore tells failed of every block write that fails.
type reportingBlockstore struct {
	blockstore.Blockstore
	failed func(error)
}

func (b reportingBlockstore) Put(ctx context.Context, blk blocks.Block) error {
	err := b.Blockstore.Put(ctx, blk)
	if err != nil {
		b.failed(err)
	}
	return err
}

func (b reportingBlockstore) PutMany(ctx context.Context, blks []blocks.Block) error {
	err := b.Blockstore.PutMany(ctx, blks)
	if err != nil {
		b.failed(err)
	}
	return err
}
