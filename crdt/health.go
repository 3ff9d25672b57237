package crdt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
)

// ErrNotWritten: a write failed and nothing of it was kept. The same write
// may be tried again.
var ErrNotWritten = errors.New("not written")

// health remembers, in memory, that the store needs repair: go-ds-crdt
// keeps that in its dirty bit, on the disk, and on a full disk it cannot
// write it. The node keeps its open marker while repair is needed (a crash
// repairs at the next start) and repairs as soon as writes succeed again.
type health struct {
	mu       sync.Mutex
	needed   bool
	reason   string
	since    time.Time
	failures uint64
}

type healthState struct {
	needed   bool
	reason   string
	since    time.Time
	failures uint64
}

func (h *health) get() healthState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return healthState{needed: h.needed, reason: h.reason, since: h.since, failures: h.failures}
}

// fail records that repair is needed (the first reason is kept). It
// reports whether repair was not needed before.
func (h *health) fail(reason string, write bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if write {
		h.failures++
	}
	if h.needed {
		return false
	}
	h.needed, h.reason, h.since = true, reason, time.Now()
	return true
}

// clear records a successful repair, unless a failure came after start.
func (h *health) clear(start time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.needed && h.since.After(start) {
		return false
	}
	h.needed, h.reason = false, ""
	return true
}

// WriteFailed tells the store that a write it did not make itself failed
// (the node's block store: a block of a peer's delta could not be kept), so
// that it knows it needs repair.
func (s *Store) WriteFailed(what string, err error) {
	s.writeFailed(what, ds.NewKey("/"), err)
}

// writeFailed is told of every failed write of a merge or of go-ds-crdt's
// bookkeeping (not of this node's own writes, which are all or nothing).
func (s *Store) writeFailed(op string, key ds.Key, err error) {
	// Logged once until the store is repaired: on a full disk every merge
	// and every repair attempt fails again.
	if s.health.fail(fmt.Sprintf("a merge could not be written (%v)", err), true) {
		s.log.Error("a write of a merge failed: the store needs repair", "op", op, "key", key, "err", err)
	} else {
		s.log.Debug("a write of a merge failed", "op", op, "key", key, "err", err)
	}
}

// CheckRoom, when set in Options, is asked before each local write; an
// error refuses the write before anything is staged (the node checks the
// free disk space against its reserve).
type CheckRoom func(ctx context.Context) error

// checkRoom refuses a write when Options.CheckRoom says there is no room.
func (s *Store) checkRoom(ctx context.Context) error {
	if s.opts.CheckRoom == nil {
		return nil
	}
	if err := s.opts.CheckRoom(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrNotWritten, err)
	}
	return nil
}

// pendingDelta is go-ds-crdt's batch for one local delta. A delta that was
// staged and never committed (an error after staging) is discarded by end:
// go-ds-crdt would otherwise publish it with the next write.
type pendingDelta struct {
	ds.Batch
	s      *Store
	staged bool
}

// openBatch checks the room for a write and opens a delta. The caller
// holds writeMu and calls end (deferred).
func (s *Store) openBatch(ctx context.Context) (*pendingDelta, error) {
	if err := s.checkRoom(ctx); err != nil {
		return nil, err
	}
	b, err := s.eng().Batch(ctx)
	if err != nil {
		return nil, fmt.Errorf("open batch: %w", err)
	}
	return &pendingDelta{Batch: b, s: s}, nil
}

func (d *pendingDelta) Put(ctx context.Context, k ds.Key, v []byte) error {
	d.staged = true
	return d.Batch.Put(ctx, k, v)
}

func (d *pendingDelta) Delete(ctx context.Context, k ds.Key) error {
	d.staged = true
	return d.Batch.Delete(ctx, k)
}

// Commit is refused: commit through Store.commit.
func (d *pendingDelta) Commit(context.Context) error {
	return errors.New("bug: a local delta is committed through Store.commit")
}

// end discards what was staged and not committed.
func (d *pendingDelta) end(ctx context.Context) {
	if d.staged {
		d.staged = false
		_ = d.s.discard(ctx, errors.New("write abandoned"))
	}
}

// discard drops a local write that failed after go-ds-crdt saw it, and
// returns err marked ErrNotWritten. go-ds-crdt v0.6.8 keeps a delta whose
// publication failed and publishes it with the next write; its heads cache
// may name a head whose write failed. Both live in its memory only, so it
// is closed and opened again over the datastore, which holds nothing of the
// write. Merges of peers' deltas it was running are cut short by the close:
// the store is marked as needing repair (see Store.RepairIfNeeded). The
// caller holds writeMu.
func (s *Store) discard(ctx context.Context, err error) error {
	s.observed.abort()
	old := s.eng()
	if cerr := old.Close(); cerr != nil {
		s.log.Warn("closing go-ds-crdt after a failed write", "err", cerr)
	}
	eng, oerr := s.openEngine()
	if oerr != nil {
		// The old engine stays (closed: no merges); reads still work.
		s.health.fail(fmt.Sprintf("reopening the store after a failed write failed (%v)", oerr), false)
		s.log.Error("reopening go-ds-crdt after a failed write", "err", oerr)
	} else {
		s.engine.Store(eng)
		// A merge of a peer's delta may have been cut short by the close.
		s.health.fail("a write failed (merges in progress were interrupted)", false)
	}
	s.log.Warn("a write failed and was discarded", "err", err)
	if errors.Is(err, ErrNotWritten) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrNotWritten, err)
}

// RepairIfNeeded repairs the store when a merge or a write failed since it
// opened (or since the last repair): blocks merged but not reachable from
// the heads are made heads again (recoverOrphans), then go-ds-crdt re-walks
// the DAG from the heads and merges what is missing. It returns whether a
// repair ran; an error means the store still needs one (for example the
// disk is still full).
func (s *Store) RepairIfNeeded(ctx context.Context) (bool, error) {
	h := s.health.get()
	if !h.needed && !s.eng().IsDirty(ctx) {
		return false, nil
	}
	return true, s.Repair(ctx)
}

// Repair recovers blocks merged but never made heads, marks the store
// dirty and re-walks the DAG from its heads, merging any branch left
// unprocessed (after an unclean shutdown or a failed merge). It clears the
// need for repair when it succeeds and nothing failed meanwhile.
func (s *Store) Repair(ctx context.Context) error {
	start := time.Now()
	if err := s.recoverInPlace(ctx); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	eng := s.eng()
	eng.MarkDirty(ctx)
	if !eng.IsDirty(ctx) {
		return errors.New("repair: cannot write to the store (is the disk full?)")
	}
	if err := eng.Repair(ctx); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	if eng.IsDirty(ctx) {
		return errors.New("repair: the DAG walk did not complete")
	}
	if !s.health.clear(start) {
		return errors.New("repair: another write failed meanwhile")
	}
	return nil
}

// recoverInPlace runs recoverOrphans on the open store: go-ds-crdt is
// closed while the heads are rewritten, then opened again.
func (s *Store) recoverInPlace(ctx context.Context) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	orphans, err := s.orphans(ctx)
	if err != nil {
		return err
	}
	if len(orphans) == 0 {
		return nil
	}
	old := s.eng()
	if err := old.Close(); err != nil {
		s.log.Warn("closing go-ds-crdt for repair", "err", err)
	}
	made, rerr := s.recoverOrphans(ctx)
	eng, err := s.openEngine()
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	s.engine.Store(eng)
	if rerr != nil {
		return rerr
	}
	if len(made) > 0 {
		s.log.Warn("blocks merged but never made heads: heads again", "blocks", made)
	}
	return nil
}
