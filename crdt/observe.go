package crdt

import (
	"context"
	"strings"
	"sync"

	ds "github.com/ipfs/go-datastore"
)

// observedStore wraps the datastore given to go-ds-crdt and reports every
// change of a visible value (go-ds-crdt's <ns>/s/k/<key>/v entries) after
// it is written. go-ds-crdt's own PutHook fires before its batch commits, so
// a cache refreshed from the hook could read the old state and keep it; the
// wrapper reports a change only once a read sees it.
type observedStore struct {
	ds.Batching
	prefix     string // <ns>/s/k
	elemPrefix string // <ns>/s/s/
	tombPrefix string // <ns>/s/t/
	// stash holds the tombstones of this node's own delta until its
	// elements are committed with them (see localBatch).
	stashMu   sync.Mutex
	stash     []batchOp
	stashKeys []string
	changed   func(key string)
	// vet, if set, checks the elements of a batch of a remote merge before
	// it commits (see Store.vetElements).
	vet func(ctx context.Context, b ds.Write, elems []elementRef) (func(), error)
}

func newObservedStore(d ds.Batching, namespace ds.Key, changed func(string)) *observedStore {
	return &observedStore{Batching: d, prefix: namespace.ChildString("s").ChildString("k").String(),
		elemPrefix: namespace.ChildString("s").ChildString("s").String() + "/",
		tombPrefix: namespace.ChildString("s").ChildString("t").String() + "/", changed: changed}
}

// elementOf returns the op key and block of an element entry
// (<ns>/s/s/<op key>/<block>).
func (o *observedStore) elementOf(k ds.Key) (elementRef, bool) {
	s := k.String()
	if !strings.HasPrefix(s, o.elemPrefix) {
		return elementRef{}, false
	}
	rest := s[len(o.elemPrefix)-1:]
	i := strings.LastIndex(rest, "/")
	if i <= 0 {
		return elementRef{}, false
	}
	return elementRef{key: rest[:i], block: rest[i+1:]}, true
}

// valueKey returns the operation key when k is a visible-value entry.
func (o *observedStore) valueKey(k ds.Key) (string, bool) {
	s := k.String()
	if !strings.HasPrefix(s, o.prefix+"/") || !strings.HasSuffix(s, "/v") {
		return "", false
	}
	return strings.TrimSuffix(strings.TrimPrefix(s, o.prefix), "/v"), true
}

func (o *observedStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	if _, ok := o.elementOf(k); ok && o.vet != nil && !isLocalWrite(ctx) {
		// go-ds-crdt batches its element writes; vet a lone one alike.
		b, err := o.Batch(ctx)
		if err != nil {
			return err
		}
		if err := b.Put(ctx, k, v); err != nil {
			return err
		}
		return b.Commit(ctx)
	}
	if isLocalWrite(ctx) {
		if err := o.flushStash(ctx); err != nil {
			return err
		}
	}
	key, isValue := o.valueKey(k)
	if err := o.Batching.Put(ctx, k, v); err != nil {
		return err
	}
	if isValue {
		o.changed(key)
	}
	return nil
}

func (o *observedStore) Delete(ctx context.Context, k ds.Key) error {
	if isLocalWrite(ctx) {
		if err := o.flushStash(ctx); err != nil {
			return err
		}
	}
	if err := o.Batching.Delete(ctx, k); err != nil {
		return err
	}
	if key, ok := o.valueKey(k); ok {
		o.changed(key)
	}
	return nil
}

func (o *observedStore) Batch(ctx context.Context) (ds.Batch, error) {
	if isLocalWrite(ctx) {
		return &localBatch{o: o}, nil
	}
	b, err := o.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &observedBatch{Batch: b, o: o, local: isLocalWrite(ctx)}, nil
}

type observedBatch struct {
	ds.Batch
	o     *observedStore
	keys  []string
	elems []elementRef // elements of a remote merge, vetted at commit
	local bool         // opened by one of this node's own commits
}

func (b *observedBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	if key, ok := b.o.valueKey(k); ok {
		b.keys = append(b.keys, key)
	} else if e, ok := b.o.elementOf(k); ok && b.o.vet != nil && !b.local && !isLocalWrite(ctx) {
		b.elems = append(b.elems, e)
	}
	return b.Batch.Put(ctx, k, v)
}

func (b *observedBatch) Delete(ctx context.Context, k ds.Key) error {
	if key, ok := b.o.valueKey(k); ok {
		b.keys = append(b.keys, key)
	}
	return b.Batch.Delete(ctx, k)
}

func (b *observedBatch) Commit(ctx context.Context) error {
	after := func() {}
	if len(b.elems) > 0 {
		// The marks go in the same batch: durable exactly when the ops are.
		var err error
		if after, err = b.o.vet(ctx, b.Batch, b.elems); err != nil {
			return err
		}
		b.elems = nil
	}
	if err := b.Batch.Commit(ctx); err != nil {
		return err
	}
	after()
	for _, k := range b.keys {
		b.o.changed(k)
	}
	b.keys = nil
	return nil
}

// batchOp is one write of a buffered batch.
type batchOp struct {
	key   ds.Key
	value []byte
	del   bool
}

// localBatch is a batch of this node's own merge. go-ds-crdt merges a delta
// in two batches, tombstones then elements: a process killed between them
// keeps tombstones that no operation explains, on this node only. So a
// batch of tombstones alone is held back and committed with the next one,
// the delta's elements, in one badger batch. (What follows, the processed
// mark and the heads, is recovered after a crash: see recoverOrphans.)
type localBatch struct {
	o            *observedStore
	ops          []batchOp
	keys         []string
	tombs, elems bool
}

func (b *localBatch) Put(_ context.Context, k ds.Key, v []byte) error {
	b.note(k)
	b.ops = append(b.ops, batchOp{key: k, value: v})
	return nil
}

func (b *localBatch) Delete(_ context.Context, k ds.Key) error {
	b.note(k)
	b.ops = append(b.ops, batchOp{key: k, del: true})
	return nil
}

func (b *localBatch) note(k ds.Key) {
	if key, ok := b.o.valueKey(k); ok {
		b.keys = append(b.keys, key)
	}
	s := k.String()
	b.tombs = b.tombs || strings.HasPrefix(s, b.o.tombPrefix)
	b.elems = b.elems || strings.HasPrefix(s, b.o.elemPrefix)
}

func (b *localBatch) Commit(ctx context.Context) error {
	o := b.o
	o.stashMu.Lock()
	if b.tombs && !b.elems {
		o.stash = append(o.stash, b.ops...)
		o.stashKeys = append(o.stashKeys, b.keys...)
		o.stashMu.Unlock()
		return nil
	}
	ops := append(o.stash, b.ops...)
	keys := append(o.stashKeys, b.keys...)
	o.stash, o.stashKeys = nil, nil
	o.stashMu.Unlock()
	return o.commitOps(ctx, ops, keys)
}

// flushStash commits held-back tombstones (go-ds-crdt wrote something else
// of this node's merge first: a delta without elements).
func (o *observedStore) flushStash(ctx context.Context) error {
	o.stashMu.Lock()
	ops, keys := o.stash, o.stashKeys
	o.stash, o.stashKeys = nil, nil
	o.stashMu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	return o.commitOps(ctx, ops, keys)
}

func (o *observedStore) commitOps(ctx context.Context, ops []batchOp, keys []string) error {
	ub, err := o.Batching.Batch(ctx)
	if err != nil {
		return err
	}
	for _, op := range ops {
		if op.del {
			err = ub.Delete(ctx, op.key)
		} else {
			err = ub.Put(ctx, op.key, op.value)
		}
		if err != nil {
			return err
		}
	}
	if err := ub.Commit(ctx); err != nil {
		return err
	}
	for _, k := range keys {
		o.changed(k)
	}
	return nil
}
