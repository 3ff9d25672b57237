// Package diskfault wraps a go-datastore so that writes fail the way they
// do on a full disk: with ENOSPC, and without changing anything.
//
// A Store can refuse every write (SetFull, or FullWhileExists for a fault
// harness driving another process through a file), or give key prefixes a
// byte budget (SetBudget) that writes under them spend until one no longer
// fits. Reads, Sync and Close pass through untouched.
package diskfault

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
)

// ErrNoSpace is what a refused write returns (wrapped with the key or batch
// it refused). errors.Is(err, syscall.ENOSPC) holds for it, and its message
// contains "no space left on device".
var ErrNoSpace error = noSpaceError{}

// noSpaceError unwraps to syscall.ENOSPC, so that both errors.Is(err,
// ErrNoSpace) and errors.Is(err, syscall.ENOSPC) hold, and errors.As finds
// the syscall.Errno.
type noSpaceError struct{}

func (noSpaceError) Error() string { return "no space left on device (diskfault)" }
func (noSpaceError) Unwrap() error { return syscall.ENOSPC }

// Store wraps a ds.Batching and refuses writes as a full disk would. It is
// safe for concurrent use. Create it with Wrap.
type Store struct {
	d ds.Batching

	mu        sync.Mutex
	budgets   map[ds.Key]int64 // prefix -> bytes left
	full      bool
	fullWhile string // refuse writes while a file exists here ("" = off)

	refused atomic.Uint64
}

var (
	_ ds.Batching            = (*Store)(nil)
	_ ds.PersistentDatastore = (*Store)(nil)
)

// Wrap returns a Store that passes everything to d, with no budget and not
// full, so that it refuses nothing until configured.
func Wrap(d ds.Batching) *Store {
	return &Store{d: d, budgets: make(map[ds.Key]int64)}
}

// Unwrap returns the wrapped datastore.
func (s *Store) Unwrap() ds.Batching { return s.d }

// SetBudget limits the bytes (len(key)+len(value) per Put; len(key) per
// Delete) that writes whose key is under prefix may still add. Negative: no
// limit (removes it). Several prefixes may have budgets; a write must fit in
// every budget whose prefix contains its key ("/" covers all). A refused
// write changes nothing and spends nothing.
//
// Setting a budget on a prefix that already has one replaces what is left
// of it. Keys match with ds.Key semantics: "/a" covers "/a" and "/a/b" but
// not "/ab".
func (s *Store) SetBudget(prefix ds.Key, bytes int64) {
	prefix = clean(prefix)
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes < 0 {
		delete(s.budgets, prefix)
		return
	}
	s.budgets[prefix] = bytes
}

// Remaining returns what is left of prefix's budget, and false if it has
// none.
func (s *Store) Remaining(prefix ds.Key) (int64, bool) {
	prefix = clean(prefix)
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.budgets[prefix]
	return n, ok
}

// SetFull makes every write fail (true) or lifts that (false). Budgets are
// kept, and nothing is spent while full.
func (s *Store) SetFull(full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.full = full
}

// FullWhileExists makes every write fail while a file exists at path
// (checked with os.Stat at each write; "" turns it off). Used through the
// environment by the fault harness, which creates and removes the file to
// fill and free the disk of a running process.
func (s *Store) FullWhileExists(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fullWhile = path
}

// Refused counts the writes refused so far: each refused Put or Delete, and
// each refused batch Commit, counts once.
func (s *Store) Refused() uint64 { return s.refused.Load() }

// clean makes prefix comparable as a map key ("" and "/a/" become "/" and
// "/a").
func clean(k ds.Key) ds.Key { return ds.NewKey(k.String()) }

// covers reports whether key is prefix or under it.
func covers(prefix, key ds.Key) bool {
	return prefix.Equal(key) || prefix.IsAncestorOf(key)
}

// write is one buffered or direct write, for accounting.
type write struct {
	key    ds.Key
	value  []byte
	delete bool
}

func (w write) cost() int64 {
	if w.delete {
		return int64(len(w.key.String()))
	}
	return int64(len(w.key.String()) + len(w.value))
}

// reserve checks ws against the full state and every budget, and spends
// their bytes if they all fit. It returns the prefix of the budget that
// refused them ("" when the store is full), or ok.
func (s *Store) reserve(ws []write) (refusedBy string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full {
		return "", false
	}
	if s.fullWhile != "" {
		if _, err := os.Stat(s.fullWhile); err == nil {
			return "", false
		}
	}
	need := s.need(ws)
	for p, n := range need {
		if n > s.budgets[p] {
			return p.String(), false
		}
	}
	for p, n := range need {
		s.budgets[p] -= n
	}
	return "", true
}

// need sums the cost of ws per budget that covers them. s.mu must be held.
func (s *Store) need(ws []write) map[ds.Key]int64 {
	if len(s.budgets) == 0 {
		return nil
	}
	need := make(map[ds.Key]int64, len(s.budgets))
	for _, w := range ws {
		c := w.cost()
		for p := range s.budgets {
			if covers(p, w.key) {
				need[p] += c
			}
		}
	}
	return need
}

// unreserve gives back what reserve spent on ws, when nothing of them was
// written after all.
func (s *Store) unreserve(ws []write) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, n := range s.need(ws) {
		s.budgets[p] += n
	}
}

func (s *Store) refuse(what string, key ds.Key) error {
	s.refused.Add(1)
	return fmt.Errorf("%s %s: %w", what, key, ErrNoSpace)
}

// Put stores value under key, or returns ErrNoSpace without storing it if
// the store is full or the write does not fit in a budget.
//
// If the wrapped datastore fails the write itself, the bytes stay spent:
// like a disk, it may have written part of it.
func (s *Store) Put(ctx context.Context, key ds.Key, value []byte) error {
	if _, ok := s.reserve([]write{{key: key, value: value}}); !ok {
		return s.refuse("write", key)
	}
	return s.d.Put(ctx, key, value)
}

// Delete removes key, or returns ErrNoSpace without removing it if the
// store is full or len(key) does not fit in a budget (a delete writes a
// tombstone on a log-structured store).
func (s *Store) Delete(ctx context.Context, key ds.Key) error {
	if _, ok := s.reserve([]write{{key: key, delete: true}}); !ok {
		return s.refuse("delete", key)
	}
	return s.d.Delete(ctx, key)
}

// Get passes through.
func (s *Store) Get(ctx context.Context, key ds.Key) ([]byte, error) {
	return s.d.Get(ctx, key)
}

// Has passes through.
func (s *Store) Has(ctx context.Context, key ds.Key) (bool, error) {
	return s.d.Has(ctx, key)
}

// GetSize passes through.
func (s *Store) GetSize(ctx context.Context, key ds.Key) (int, error) {
	return s.d.GetSize(ctx, key)
}

// Query passes through.
func (s *Store) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	return s.d.Query(ctx, q)
}

// Sync passes through unchanged: it is never refused.
func (s *Store) Sync(ctx context.Context, prefix ds.Key) error {
	return s.d.Sync(ctx, prefix)
}

// Close passes through.
func (s *Store) Close() error { return s.d.Close() }

// DiskUsage passes through to the wrapped datastore if it is a
// ds.PersistentDatastore, and returns 0 otherwise (as ds.DiskUsage does).
func (s *Store) DiskUsage(ctx context.Context) (uint64, error) {
	return ds.DiskUsage(ctx, s.d)
}

// Batch returns a batch that buffers Puts and Deletes until Commit, which
// is all-or-nothing against the budgets (see batch.Commit).
func (s *Store) Batch(ctx context.Context) (ds.Batch, error) {
	return &batch{s: s}, nil
}

// batch buffers writes in order; the wrapped datastore's own batch is only
// made at Commit, once they are known to fit.
type batch struct {
	s  *Store
	mu sync.Mutex
	ws []write
}

// Put buffers a write of value under key.
func (b *batch) Put(ctx context.Context, key ds.Key, value []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ws = append(b.ws, write{key: key, value: value})
	return nil
}

// Delete buffers a removal of key.
func (b *batch) Delete(ctx context.Context, key ds.Key) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ws = append(b.ws, write{key: key, delete: true})
	return nil
}

// canceler is implemented by go-ds-badger's batch: it releases a batch that
// will not be committed.
type canceler interface{ Cancel() error }

// Commit checks the bytes of all buffered writes against the budgets at
// once. If the store is full or any budget would be exceeded, it returns
// ErrNoSpace, applies nothing and spends nothing, and keeps the writes
// buffered (a later Commit may retry them). Otherwise it spends the bytes,
// applies the writes in order through the wrapped datastore's own Batch and
// empties the buffer. If the wrapped datastore fails after its batch was
// made, the bytes stay spent, as for Put.
func (b *batch) Commit(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ws) == 0 {
		return nil // nothing to write: a full disk does not refuse it
	}
	if p, ok := b.s.reserve(b.ws); !ok {
		b.s.refused.Add(1)
		var n int64
		for _, w := range b.ws {
			n += w.cost()
		}
		if p != "" {
			return fmt.Errorf("commit batch of %d writes (%d bytes, over budget of %s): %w", len(b.ws), n, p, ErrNoSpace)
		}
		return fmt.Errorf("commit batch of %d writes (%d bytes): %w", len(b.ws), n, ErrNoSpace)
	}
	under, err := b.s.d.Batch(ctx)
	if err != nil {
		b.s.unreserve(b.ws) // nothing written: keep the writes for a retry
		return err
	}
	ws := b.ws
	b.ws = nil
	for _, w := range ws {
		if w.delete {
			err = under.Delete(ctx, w.key)
		} else {
			err = under.Put(ctx, w.key, w.value)
		}
		if err != nil {
			if c, ok := under.(canceler); ok {
				_ = c.Cancel()
			}
			return err
		}
	}
	return under.Commit(ctx)
}
