package crdt

import (
	"context"
	"errors"
	"fmt"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// Switching the store to a new epoch, and dropping the old one.

// markBuilding notes that epoch ep's namespace is being built here.
func (s *Store) markBuilding(ctx context.Context, ep Epoch) error {
	ns := ep.namespace(s.opts.Namespace)
	return s.base.Put(ctx, s.roots.build.ChildString(ep.String()), []byte(ns.String()))
}

// testAfterStop, set by tests only, runs once a switch stopped go-ds-crdt
// merging into the old epoch.
var testAfterStop func(*Store)

// switchEpoch moves the store to the epoch of info, whose namespace holds
// its DAG: go-ds-crdt stops merging into the old epoch (it is opened again
// without a broadcaster, to be read), what the cut does not cover is
// carried over, recent history is archived, then one write makes the new
// epoch current and go-ds-crdt opens there. The old epoch is dropped
// last. A kill before the switch leaves the old epoch as it was (the new
// namespace is cleared at the next start); after it, the drop resumes.
//
// With whole (a compaction), the old epoch's DAG must be whole once
// go-ds-crdt stopped merging into it, or the switch is abandoned with
// ErrBusy: a merge under way when it stopped (go-ds-crdt merges from the
// heads down) would leave a writer's newer write here without its older
// ones, and carrying the newer one alone would make the next cut cover
// the older ones (a cut is a time per writer), lost for the nodes that
// still hold them.
func (s *Store) switchEpoch(ctx context.Context, info *EpochInfo, rep *EpochReport, whole bool) error {
	s.writeMu.Lock()
	locked := true
	defer func() {
		if locked {
			s.writeMu.Unlock()
		}
	}()
	if !info.Epoch.After(s.Epoch()) {
		return ErrStaleEpoch
	}
	oldNs, oldEpoch := s.namespace(), s.Epoch()
	// Readers keep reading: the old epoch is opened again without a
	// broadcaster (nothing merges into it any more) before the running
	// engine is swapped out and closed.
	quiet, err := s.openEngineWith(nil)
	if err != nil {
		return fmt.Errorf("open the old epoch to read: %w", err)
	}
	if err := s.engine.Swap(quiet).Close(); err != nil {
		s.log.Warn("closing go-ds-crdt to change epoch", "err", err)
	}
	if testAfterStop != nil {
		testAfterStop(s)
	}
	if whole {
		// A merge cut short by the close marks the store dirty. Its
		// blocks may hang below no head yet (a branch joins the heads
		// once merged to its bottom), out of the scan's sight: nothing
		// would carry their writes, and the drop of this epoch would lose
		// them (chaos seed 0x3, a laptop's hand-over still merging).
		if dirty, err := s.base.Has(ctx, s.layout().dirty()); err != nil {
			return s.reopenAfter(err)
		} else if dirty {
			return s.reopenAfter(fmt.Errorf("%w: a merge was under way when go-ds-crdt stopped; try again once it is repaired", ErrBusy))
		}
		d, err := s.scanDAG(ctx)
		if err != nil {
			return s.reopenAfter(err)
		}
		if len(d.missing) > 0 || len(d.unmerged) > 0 {
			return s.reopenAfter(fmt.Errorf("%w: a merge was under way (%d blocks missing, %d not merged below the heads); try again once synced", ErrBusy, len(d.missing), len(d.unmerged)))
		}
	}
	side, _, err := s.openSide(ctx, info.Epoch, false)
	if err != nil {
		return s.reopenAfter(err)
	}
	err = s.carry(ctx, side, info, rep)
	if err == nil && s.opts.HistoryKeep > 0 {
		err = s.archiveHistory(ctx, rep)
	}
	if cerr := side.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return s.reopenAfter(err)
	}
	// The switch: one batch.
	b, err := s.base.Batch(ctx)
	if err == nil {
		_ = b.Put(ctx, s.roots.epoch, []byte(info.raw))
		_ = b.Put(ctx, s.roots.drop.ChildString(oldEpoch.String()), []byte(oldNs.String()))
		_ = b.Delete(ctx, s.roots.build.ChildString(info.Epoch.String()))
		err = b.Commit(ctx)
	}
	if err != nil {
		return s.reopenAfter(fmt.Errorf("make epoch %s current: %w", info.Epoch, err))
	}
	s.setEpoch(info)
	s.observed = s.newObserved()
	eng, err := s.openEngine()
	if err != nil {
		s.health.fail(fmt.Sprintf("opening epoch %s failed (%v)", info.Epoch, err), false)
		return fmt.Errorf("open epoch %s: %w", info.Epoch, err)
	}
	if err := s.engine.Swap(eng).Close(); err != nil {
		s.log.Warn("closing the old epoch", "err", err)
	}
	s.afterEpochChange(ctx)
	s.writeMu.Unlock()
	locked = false

	if s.bcast != nil {
		if payload, err := EncodeHeads(eng.InternalStats(ctx).Heads, info.Epoch); err == nil {
			s.bcast.send(ctx, payload)
		}
	}
	s.log.Info("moved to a new epoch", "epoch", info.Epoch, "from", oldEpoch, "carried", rep.Carried)
	keys, blocks, err := s.dropEpoch(ctx, oldEpoch.String(), oldNs)
	rep.DroppedKeys, rep.DroppedBlocks = keys, blocks
	if err != nil {
		s.log.Warn("dropping the old epoch did not finish; tried again at the next start", "epoch", oldEpoch, "err", err)
	}
	if s.opts.OnEpoch != nil {
		s.opts.OnEpoch(*rep)
	}
	return nil
}

// reopenAfter opens go-ds-crdt again in the current (old) epoch after a
// switch failed, and returns err. The caller holds writeMu.
func (s *Store) reopenAfter(err error) error {
	_ = s.eng().Close()
	eng, oerr := s.openEngine()
	if oerr != nil {
		s.health.fail(fmt.Sprintf("reopening the store after a failed epoch change failed (%v)", oerr), false)
		return errors.Join(err, oerr)
	}
	s.engine.Store(eng)
	return err
}

// afterEpochChange drops what was cached of the old epoch. The caller
// holds writeMu.
func (s *Store) afterEpochChange(ctx context.Context) {
	s.schemaStale.Store(true)
	s.rolesStale.Store(true)
	s.membersStale.Store(true)
	s.badSig.Clear()
	if s.opts.Trust != nil {
		if err := s.loadBadSigs(ctx); err != nil {
			s.log.Warn("reading signature marks of the new epoch", "err", err)
		}
	}
	s.digest.dirtyMu.Lock()
	s.digest.rebuild = true
	s.digest.dirtyMu.Unlock()
	s.unique.invalidate()
	s.dups.invalidate()
	s.grantState.stale.Store(true)
	s.authorityChanged()
}

// setEpoch makes info (nil: the first epoch) the current epoch.
func (s *Store) setEpoch(info *EpochInfo) {
	ns := s.opts.Namespace
	if info != nil {
		ns = info.Epoch.namespace(s.opts.Namespace)
	}
	s.ns.Store(&ns)
	s.epochInfo.Store(info)
}

// resumeDrops finishes dropping old epochs and clears epochs whose build
// was cut short (at start, before anything else uses the store).
func (s *Store) resumeDrops(ctx context.Context) error {
	var errs []error
	for _, root := range []string{s.roots.build.String(), s.roots.drop.String()} {
		res, err := s.base.Query(ctx, query.Query{Prefix: root + "/"})
		if err != nil {
			return err
		}
		entries, err := res.Rest()
		if err != nil {
			return err
		}
		for _, e := range entries {
			ns := ds.RawKey(string(e.Value))
			if ns == s.namespace() || !strings.HasPrefix(ns.String(), s.opts.Namespace.String()) {
				// The current epoch (a build that became current), or not
				// ours: only the marker goes.
				if err := s.base.Delete(ctx, ds.RawKey(e.Key)); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if _, _, err := s.dropEpoch(ctx, strings.TrimPrefix(e.Key, root+"/"), ns); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := s.base.Delete(ctx, ds.RawKey(e.Key)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// dropEpoch removes an old epoch: the blocks it merged (unless the current
// epoch merged them too), then every key of its namespace, then its drop
// marker. It can be run again after a kill.
func (s *Store) dropEpoch(ctx context.Context, name string, ns ds.Key) (keys, blocks int, err error) {
	if ns == s.namespace() {
		return 0, 0, errors.New("drop epoch: it is the current one")
	}
	old := layout{ns: ns}
	processedRoot := prefix(old.processed())
	cur := s.layout().processed()
	res, err := s.base.Query(ctx, query.Query{Prefix: processedRoot, KeysOnly: true})
	if err != nil {
		return 0, 0, fmt.Errorf("drop epoch %s: %w", name, err)
	}
	entries, err := res.Rest()
	if err != nil {
		return 0, 0, fmt.Errorf("drop epoch %s: %w", name, err)
	}
	for _, e := range entries {
		k := strings.TrimPrefix(e.Key, processedRoot)
		if ok, err := s.base.Has(ctx, cur.ChildString(k)); err != nil || ok {
			continue
		}
		c, err := blockCid(k)
		if err != nil {
			continue
		}
		if err := s.dag.Remove(ctx, c); err == nil {
			blocks++
		}
	}
	if s.opts.DropPrefix != nil {
		if keys, err = s.countKeys(ctx, prefix(ns), ""); err == nil {
			err = s.opts.DropPrefix(ctx, prefix(ns))
		}
	}
	if err == nil {
		// What DropPrefix left (badger v1.6.2 can leave a key the
		// memtable held), or everything without it.
		var n int
		n, err = s.countAndClear(ctx, prefix(ns))
		if n > 0 && s.opts.DropPrefix != nil {
			s.log.Info("keys left after dropping an old epoch's prefix, deleted", "keys", n)
		}
		if s.opts.DropPrefix == nil {
			keys = n
		}
	}
	if err != nil {
		return keys, blocks, fmt.Errorf("drop epoch %s: %w", name, err)
	}
	if err := s.base.Delete(ctx, s.roots.drop.ChildString(name)); err != nil {
		return keys, blocks, fmt.Errorf("drop epoch %s: %w", name, err)
	}
	return keys, blocks, nil
}

// countKeys counts the keys under p that end with suffix ("": all).
func (s *Store) countKeys(ctx context.Context, p, suffix string) (int, error) {
	res, err := s.base.Query(ctx, query.Query{Prefix: p, KeysOnly: true})
	if err != nil {
		return 0, err
	}
	defer res.Close()
	n := 0
	for r := range res.Next() {
		if r.Error != nil {
			return n, r.Error
		}
		if strings.HasSuffix(r.Key, suffix) {
			n++
		}
	}
	return n, nil
}

// countAndClear deletes every key under p and returns how many.
func (s *Store) countAndClear(ctx context.Context, p string) (int, error) {
	n := 0
	for {
		res, err := s.base.Query(ctx, query.Query{Prefix: p, KeysOnly: true, Limit: 10000})
		if err != nil {
			return n, err
		}
		entries, err := res.Rest()
		if err != nil {
			return n, err
		}
		if len(entries) == 0 {
			return n, nil
		}
		b, err := s.base.Batch(ctx)
		if err != nil {
			return n, err
		}
		for _, e := range entries {
			if err := b.Delete(ctx, ds.RawKey(e.Key)); err != nil {
				return n, err
			}
		}
		if err := b.Commit(ctx); err != nil {
			return n, err
		}
		n += len(entries)
	}
}
