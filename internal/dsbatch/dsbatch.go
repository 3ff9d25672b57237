// Package dsbatch buffers the writes of a go-datastore batch in memory and
// applies them later through one batch of another datastore: the wrappers
// that must see a batch whole before any of it reaches the disk (Ferry's
// atomic local writes, the badger guard, the full-disk fault) share it.
package dsbatch

import (
	"context"

	ds "github.com/ipfs/go-datastore"
)

// Op is one buffered write.
type Op struct {
	Key    ds.Key
	Value  []byte
	Delete bool
}

// Buffer collects writes in order. It has a batch's Put and Delete; the
// owner decides what Commit does. Not safe for concurrent use.
type Buffer struct {
	Ops []Op
}

// Put buffers a write of value under k.
func (b *Buffer) Put(_ context.Context, k ds.Key, v []byte) error {
	b.Ops = append(b.Ops, Op{Key: k, Value: v})
	return nil
}

// Delete buffers the removal of k.
func (b *Buffer) Delete(_ context.Context, k ds.Key) error {
	b.Ops = append(b.Ops, Op{Key: k, Delete: true})
	return nil
}

// Take returns the buffered writes and empties the buffer.
func (b *Buffer) Take() []Op {
	ops := b.Ops
	b.Ops = nil
	return ops
}

// Apply writes ops in order through one batch of d and commits it. A batch
// that fails before its commit is cancelled when d's batch can be (badger's
// can: it releases what it holds).
func Apply(ctx context.Context, d ds.Batching, ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	b, err := d.Batch(ctx)
	if err != nil {
		return err
	}
	for _, op := range ops {
		if op.Delete {
			err = b.Delete(ctx, op.Key)
		} else {
			err = b.Put(ctx, op.Key, op.Value)
		}
		if err != nil {
			if c, ok := b.(interface{ Cancel() error }); ok {
				_ = c.Cancel()
			}
			return err
		}
	}
	return b.Commit(ctx)
}
