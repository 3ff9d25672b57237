package crdt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// The repairs Check makes with CheckOptions.Repair that go beyond
// go-ds-crdt's own: branches leading to blocks lost for good are cut from
// the heads (and the blocks declared lost, so that every node cuts them),
// and visible values no reachable block carries are written again.

// LostCollection lists the blocks an office declared lost for good (record
// id: the block's CID; field lost). Only office members write it. A node
// whose history leads to a declared block cuts that branch (its values are
// written again by the office that declared it).
const LostCollection = "_lost"

// DeclaredLost reports whether an office declared every block of cids lost.
func (s *Store) DeclaredLost(ctx context.Context, cids []cid.Cid) bool {
	if len(cids) == 0 {
		return false
	}
	for _, c := range cids {
		if _, err := s.Get(ctx, LostCollection, c.String()); err != nil {
			return false
		}
	}
	return true
}

// declareLost writes one LostCollection record per block.
func (s *Store) declareLost(ctx context.Context, cids []cid.Cid) error {
	if err := s.checkWritable(ctx, LostCollection, ""); err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	for _, c := range cids {
		eid, err := EscapeID(c.String())
		if err != nil {
			return err
		}
		cur, err := s.readRecord(ctx, LostCollection, eid)
		if err != nil {
			return err
		}
		if _, err := s.writeRecord(ctx, LostCollection, eid, cur, map[string]any{"lost": true}, newestRules); err != nil {
			return fmt.Errorf("declare block %s lost: %w", c, err)
		}
	}
	return nil
}

// cutLostBranches makes the heads the highest blocks whose whole history
// is held here, dropping heads that lead to missing blocks. The blocks
// stay; their visible operations are carried again by republish. It
// returns how many blocks are no longer reachable.
func (s *Store) cutLostBranches(ctx context.Context, d *dagScan) (int, error) {
	whole := map[string]bool{}
	var isWhole func(k string, depth int) bool
	state := map[string]int{} // 1 visiting, 2 done
	isWhole = func(k string, depth int) bool {
		if state[k] == 2 {
			return whole[k]
		}
		if !d.reachable[k] || depth > 1<<16 {
			state[k] = 2
			return false
		}
		state[k] = 1
		ok := true
		for _, l := range d.links[k] {
			if !isWhole(l, depth+1) {
				ok = false
			}
		}
		whole[k], state[k] = ok, 2
		return ok
	}
	for k := range d.reachable {
		isWhole(k, 0)
	}
	covered := map[string]bool{}
	for k := range d.reachable {
		if whole[k] {
			for _, l := range d.links[k] {
				covered[l] = true
			}
		}
	}
	newHeads := map[string]uint64{}
	cut := 0
	for k := range d.reachable {
		switch {
		case !whole[k]:
			cut++
		case !covered[k]:
			newHeads[k] = d.heights[k]
		}
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	old := s.eng()
	if err := old.Close(); err != nil {
		s.log.Warn("closing go-ds-crdt to cut lost branches", "err", err)
	}
	headsRoot := prefix(s.layout().heads())
	err := func() error {
		b, err := s.base.Batch(ctx)
		if err != nil {
			return err
		}
		for k := range d.heads {
			if _, keep := newHeads[k]; !keep {
				if err := b.Delete(ctx, ds.NewKey(headsRoot+k)); err != nil {
					return err
				}
			}
		}
		for k := range d.reachable {
			if !whole[k] {
				if err := b.Put(ctx, s.roots.cut.ChildString(k), nil); err != nil {
					return err
				}
			}
		}
		for k, h := range newHeads {
			buf := make([]byte, binary.MaxVarintLen64)
			if err := b.Put(ctx, ds.NewKey(headsRoot+k), buf[:binary.PutUvarint(buf, h)]); err != nil {
				return err
			}
		}
		if err := b.Commit(ctx); err != nil {
			return err
		}
		return s.base.Sync(ctx, ds.NewKey(headsRoot))
	}()
	eng, oerr := s.openEngine()
	if oerr != nil {
		return 0, errors.Join(err, fmt.Errorf("reopen: %w", oerr))
	}
	s.engine.Store(eng)
	if err != nil {
		return 0, fmt.Errorf("rewrite heads: %w", err)
	}
	s.log.Warn("cut branches that lead to lost blocks from the heads", "blocks", cut, "heads", len(newHeads))
	return cut, nil
}

// republish writes visible writes (write keys) again, unchanged, in new
// deltas of up to BatchOps writes, so that a block reachable from the heads
// carries them.
func (s *Store) republish(ctx context.Context, keys []string) (int, error) {
	keys = slices.Clone(keys)
	sort.Strings(keys)
	keys = slices.Compact(keys)
	var chunks [][]string
	for len(keys) > 0 {
		n := min(len(keys), s.opts.BatchOps)
		chunks = append(chunks, keys[:n])
		keys = keys[n:]
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	n := 0
	for _, chunk := range chunks {
		b, err := s.openBatch(ctx)
		if err != nil {
			return n, err
		}
		for _, k := range chunk {
			v, err := s.eng().Get(ctx, ds.NewKey(k))
			if errors.Is(err, ds.ErrNotFound) {
				continue
			}
			if err != nil {
				b.end(ctx)
				return n, err
			}
			if err := b.Put(ctx, ds.NewKey(k), v); err != nil {
				b.end(ctx)
				return n, err
			}
		}
		if !b.staged {
			continue
		}
		if err := s.commit(ctx, b); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	return n, nil
}
