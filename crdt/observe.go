package crdt

import (
	"context"
	"strings"

	ds "github.com/ipfs/go-datastore"
)

// observedStore wraps the datastore given to go-ds-crdt and reports every
// change of a visible value (go-ds-crdt's <ns>/s/k/<key>/v entries) after
// it is written. go-ds-crdt's own PutHook fires before its batch commits, so
// a cache refreshed from the hook could read the old state and keep it; the
// wrapper reports a change only once a read sees it.
type observedStore struct {
	ds.Batching
	prefix  string // <ns>/s/k
	changed func(key string)
	// verify, if set, checks an operation about to become visible that was
	// not written here; when it fails, the returned mark is written with it.
	verify func(key string, value []byte) (ds.Key, bool)
}

func newObservedStore(d ds.Batching, namespace ds.Key, changed func(string)) *observedStore {
	return &observedStore{Batching: d, prefix: namespace.ChildString("s").ChildString("k").String(), changed: changed}
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
	key, isValue := o.valueKey(k)
	if isValue && o.verify != nil && !isLocalWrite(ctx) {
		if mark, bad := o.verify(key, v); bad {
			if err := o.Batching.Put(ctx, mark, nil); err != nil {
				return err
			}
		}
	}
	if err := o.Batching.Put(ctx, k, v); err != nil {
		return err
	}
	if isValue {
		o.changed(key)
	}
	return nil
}

func (o *observedStore) Delete(ctx context.Context, k ds.Key) error {
	if err := o.Batching.Delete(ctx, k); err != nil {
		return err
	}
	if key, ok := o.valueKey(k); ok {
		o.changed(key)
	}
	return nil
}

func (o *observedStore) Batch(ctx context.Context) (ds.Batch, error) {
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
	local bool // opened by one of this node's own commits
}

func (b *observedBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	if key, ok := b.o.valueKey(k); ok {
		b.keys = append(b.keys, key)
		if b.o.verify != nil && !b.local && !isLocalWrite(ctx) {
			// The mark goes in the same batch: it is durable exactly when
			// the operation is.
			if mark, bad := b.o.verify(key, v); bad {
				if err := b.Batch.Put(ctx, mark, nil); err != nil {
					return err
				}
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
	if err := b.Batch.Commit(ctx); err != nil {
		return err
	}
	for _, k := range b.keys {
		b.o.changed(k)
	}
	b.keys = nil
	return nil
}
