package crdt

import (
	"context"
	"strings"
	"sync"

	ds "github.com/ipfs/go-datastore"

	"github.com/ferry-crm/ferry/internal/dsbatch"
)

// observedStore wraps the datastore given to go-ds-crdt and reports every
// change of a visible value (go-ds-crdt's <ns>/s/k/<key>/v entries) after
// it is written. go-ds-crdt's own PutHook fires before its batch commits, so
// a cache refreshed from the hook could read the old state and keep it; the
// wrapper reports a change only once a read sees it.
//
// It also makes this node's own writes atomic. go-ds-crdt v0.6.8 merges a
// local delta in five separate writes (tombstones, elements and values, the
// processed mark, the heads), so a write that fails half-way (a full disk)
// or a crash in between leaves part of it: ops shown that no head leads to,
// tombstones no op explains. While a local write is open (see begin), every
// write go-ds-crdt makes with a local-write context is held in memory and
// committed by commitTxn as one batch, after go-ds-crdt returned: all of it
// is on disk, or none. Only the block itself is written before (by the DAG
// service); a block that nothing references is harmless.
//
// Every other write that fails (a merge of a peer's delta, go-ds-crdt's
// dirty bit) is reported to failed: the store is then treated as needing
// repair even though go-ds-crdt could not record it.
type observedStore struct {
	ds.Batching
	prefix     string // <ns>/s/k
	elemPrefix string // <ns>/s/s/
	tombPrefix string // <ns>/s/t/
	// txn holds the writes of this node's open local write (nil: none).
	txnMu   sync.Mutex
	txn     []dsbatch.Op
	txnKeys []string
	txnOpen bool
	changed func(key string)
	// journal: every element written gets a journal entry in the same
	// batch (see journal.go).
	journal bool
	// failed, if set, is told of every write that failed outside a local
	// write (merges of peers' deltas, go-ds-crdt's own bookkeeping).
	failed func(op string, key ds.Key, err error)
	// vet, if set, checks the elements of a batch of a remote merge before
	// it commits (see Store.vetElements).
	vet func(ctx context.Context, b ds.Write, elems []elementRef) (func(), error)
}

func newObservedStore(d ds.Batching, namespace ds.Key, changed func(string)) *observedStore {
	l := layout{ns: namespace}
	return &observedStore{Batching: d, prefix: l.values().String(),
		elemPrefix: prefix(l.elems()), tombPrefix: prefix(l.tombs()), changed: changed}
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
	if isLocalWrite(ctx) && o.hold(dsbatch.Op{Key: k, Value: v}) {
		return nil
	}
	if _, ok := o.elementOf(k); ok && (o.vet != nil || o.journal) && !isLocalWrite(ctx) {
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
	key, isValue := o.valueKey(k)
	if err := o.Batching.Put(ctx, k, v); err != nil {
		o.fail("put", k, err)
		return err
	}
	if isValue {
		o.changed(key)
	}
	return nil
}

func (o *observedStore) Delete(ctx context.Context, k ds.Key) error {
	if isLocalWrite(ctx) && o.hold(dsbatch.Op{Key: k, Delete: true}) {
		return nil
	}
	if err := o.Batching.Delete(ctx, k); err != nil {
		o.fail("delete", k, err)
		return err
	}
	if key, ok := o.valueKey(k); ok {
		o.changed(key)
	}
	return nil
}

func (o *observedStore) fail(op string, k ds.Key, err error) {
	if o.failed != nil {
		o.failed(op, k, err)
	}
}

// hold adds a write to the open local write; false when none is open.
func (o *observedStore) hold(ops ...dsbatch.Op) bool {
	o.txnMu.Lock()
	defer o.txnMu.Unlock()
	if !o.txnOpen {
		return false
	}
	for _, op := range ops {
		if key, ok := o.valueKey(op.Key); ok {
			o.txnKeys = append(o.txnKeys, key)
		}
	}
	o.txn = append(o.txn, ops...)
	o.txn = append(o.txn, o.journalOps(ops)...)
	return true
}

// begin opens a local write: go-ds-crdt's writes with a local-write
// context are held until commitTxn or abort.
func (o *observedStore) begin() {
	o.txnMu.Lock()
	o.txn, o.txnKeys, o.txnOpen = nil, nil, true
	o.txnMu.Unlock()
}

// abort drops the open local write: nothing of it reaches the store.
func (o *observedStore) abort() {
	o.txnMu.Lock()
	o.txn, o.txnKeys, o.txnOpen = nil, nil, false
	o.txnMu.Unlock()
}

// commitTxn writes the open local write and extra in one batch, then
// reports the visible values it changed. On error nothing was written.
func (o *observedStore) commitTxn(ctx context.Context, extra ...dsbatch.Op) error {
	o.txnMu.Lock()
	ops, keys := append(o.txn, extra...), o.txnKeys
	o.txn, o.txnKeys, o.txnOpen = nil, nil, false
	o.txnMu.Unlock()
	return o.commitOps(ctx, ops, keys)
}

func (o *observedStore) Batch(ctx context.Context) (ds.Batch, error) {
	if isLocalWrite(ctx) {
		return &localBatch{o: o}, nil
	}
	b, err := o.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &observedBatch{Batch: b, o: o}, nil
}

type observedBatch struct {
	ds.Batch
	o     *observedStore
	keys  []string
	elems []elementRef // elements of a remote merge, vetted at commit
}

func (b *observedBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	if key, ok := b.o.valueKey(k); ok {
		b.keys = append(b.keys, key)
	} else if e, ok := b.o.elementOf(k); ok {
		if b.o.vet != nil && !isLocalWrite(ctx) {
			b.elems = append(b.elems, e)
		}
		for _, j := range b.o.journalOps([]dsbatch.Op{{Key: k, Value: v}}) {
			if err := b.Batch.Put(ctx, j.Key, j.Value); err != nil {
				return err
			}
		}
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
		b.o.fail("commit batch", ds.NewKey("/"), err)
		return err
	}
	after()
	for _, k := range b.keys {
		b.o.changed(k)
	}
	b.keys = nil
	return nil
}

// localBatch is a batch go-ds-crdt opens while merging this node's own
// delta: its writes join the open local write (see observedStore), or, when
// none is open, are committed together at Commit.
type localBatch struct {
	dsbatch.Buffer
	o *observedStore
}

func (b *localBatch) Commit(ctx context.Context) error {
	ops := b.Take()
	if b.o.hold(ops...) {
		return nil
	}
	var keys []string
	for _, op := range ops {
		if key, ok := b.o.valueKey(op.Key); ok {
			keys = append(keys, key)
		}
	}
	return b.o.commitOps(ctx, append(ops, b.o.journalOps(ops)...), keys)
}

// commitOps writes ops in one batch, then reports the values they changed.
func (o *observedStore) commitOps(ctx context.Context, ops []dsbatch.Op, keys []string) error {
	if err := dsbatch.Apply(ctx, o.Batching, ops); err != nil {
		return err
	}
	for _, k := range keys {
		o.changed(k)
	}
	return nil
}
