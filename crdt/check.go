package crdt

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	cid "github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore/query"
)

// A store is whole when every block reachable from its heads is held here
// and merged, no merged block is out of reach of the heads (its changes
// would show here and never reach a peer), and every visible operation is
// carried by a block reachable from the heads (or no peer could ever get
// it). Check tells which of these fail; CheckOptions.Repair fixes them.

// OpRef names one write (Field empty: all its fields) or one op of it.
type OpRef struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
	Field      string `json:"field,omitempty"`
	Op         string `json:"op"`
}

// CheckReport is what Check found (and, with Repair, did).
type CheckReport struct {
	Heads int `json:"heads"`
	// Blocks reachable from the heads and held here.
	Blocks int `json:"blocks"`
	// MissingBlocks are reachable from the heads and not held here.
	MissingBlocks []string `json:"missing_blocks"`
	// UnmergedBlocks are held and reachable, and not merged.
	UnmergedBlocks []string `json:"unmerged_blocks"`
	// OrphanBlocks were merged here and no head leads to them.
	OrphanBlocks []string `json:"orphan_blocks"`
	// UnbackedOps are visible and carried by no block reachable from the
	// heads (at most 100 listed; UnbackedCount counts them all).
	UnbackedOps   []OpRef `json:"unbacked_ops"`
	UnbackedCount int     `json:"unbacked_count"`
	// Dirty: go-ds-crdt's dirty bit or a failed merge or write.
	Dirty        bool   `json:"dirty"`
	RepairReason string `json:"repair_reason,omitempty"`
	// Problems says, in words, what is wrong (empty when OK).
	Problems []string `json:"problems"`
	// Repaired says what a repair did.
	Repaired []string `json:"repaired,omitempty"`
	OK       bool     `json:"ok"`
}

// CheckOptions configure Check.
type CheckOptions struct {
	// Repair fixes what can be fixed: blocks merged but out of reach
	// become heads again; Fetch gets missing blocks; branches whose
	// missing blocks are lost for good (DropLost) are cut from the heads;
	// visible operations carried by no reachable block are written again
	// in a new delta; unmerged blocks are merged.
	Repair bool
	// Fetch, if set, asks peers for missing blocks (the node's DAG service
	// through bitswap) and returns once it has what it could get.
	Fetch func(ctx context.Context, missing []cid.Cid) error
	// DropLost, if set, says whether missing blocks that Fetch could not
	// get are lost for good, so that the branches leading to them are cut
	// from the heads: an office decides so after asking its peers (and
	// Declare records it); any other node when an office declared them lost
	// (see DeclaredLost).
	DropLost func(ctx context.Context, missing []cid.Cid) bool
	// Declare records the blocks cut as lost in LostCollection, so that
	// every node that received the broken history cuts it too.
	Declare bool
}

// dagScan is the DAG as reachable from the heads.
type dagScan struct {
	heads     map[string]uint64 // block key -> height
	reachable map[string]bool   // held here and reachable
	missing   map[string]bool   // reachable and not held
	links     map[string][]string
	heights   map[string]uint64
	unmerged  []string
}

// HasBlock, when set in Options, says whether a block is held here without
// asking the network.
type HasBlock func(ctx context.Context, c cid.Cid) (bool, error)

func (s *Store) hasBlock(ctx context.Context, key string) bool {
	c, err := blockCid(key)
	if err != nil {
		return false
	}
	if s.opts.HasBlock != nil {
		ok, err := s.opts.HasBlock(ctx, c)
		return err == nil && ok
	}
	_, _, err = s.blockLinks(ctx, key)
	return err == nil
}

func (s *Store) scanDAG(ctx context.Context) (*dagScan, error) {
	l := s.layout()
	headsRoot := prefix(l.heads())
	d := &dagScan{heads: map[string]uint64{}, reachable: map[string]bool{}, missing: map[string]bool{},
		links: map[string][]string{}, heights: map[string]uint64{}}
	res, err := s.base.Query(ctx, query.Query{Prefix: headsRoot})
	if err != nil {
		return nil, fmt.Errorf("check: heads: %w", err)
	}
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return nil, fmt.Errorf("check: heads: %w", r.Error)
		}
		h, _ := binary.Uvarint(r.Value)
		d.heads[strings.TrimPrefix(r.Key, headsRoot)] = h
	}
	res.Close()
	seen := map[string]bool{}
	var queue []string
	for h := range d.heads {
		seen[h] = true
		queue = append(queue, h)
	}
	processedRoot := l.processed()
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if !s.hasBlock(ctx, k) {
			d.missing[k] = true
			continue
		}
		ls, height, err := s.blockLinks(ctx, k)
		if err != nil {
			d.missing[k] = true
			continue
		}
		d.reachable[k] = true
		d.links[k], d.heights[k] = ls, height
		if ok, err := s.base.Has(ctx, processedRoot.ChildString(k)); err != nil {
			return nil, fmt.Errorf("check: %w", err)
		} else if !ok {
			d.unmerged = append(d.unmerged, k)
		}
		for _, l := range ls {
			if !seen[l] {
				seen[l] = true
				queue = append(queue, l)
			}
		}
	}
	return d, nil
}

// unbacked lists the visible operations that no reachable block carries.
// Element keys (<op key>/<block>) and value keys (<op key>/v) come sorted
// by op key from the datastore: one pass over both, in step, in constant
// memory (a map of 800,000 op keys took most of a check's 2 GB at 100,000
// contacts).
func (s *Store) unbacked(ctx context.Context, reachable map[string]bool) ([]string, error) {
	l := s.layout()
	elemsRoot, valuesRoot := l.elems().String(), l.values().String()
	elems, err := s.base.Query(ctx, query.Query{Prefix: elemsRoot + "/", KeysOnly: true})
	if err != nil {
		return nil, fmt.Errorf("check: elements: %w", err)
	}
	defer elems.Close()
	values, err := s.base.Query(ctx, query.Query{Prefix: valuesRoot + "/", KeysOnly: true})
	if err != nil {
		return nil, fmt.Errorf("check: values: %w", err)
	}
	defer values.Close()
	// The current element: its op key with a trailing slash (so that keys
	// compare in the datastore's order) and its block.
	var elemOp, elemBlock string
	elemsDone := false
	nextElem := func() error {
		for {
			r, ok := elems.NextSync()
			if !ok {
				elemsDone = true
				return nil
			}
			if r.Error != nil {
				return fmt.Errorf("check: elements: %w", r.Error)
			}
			rest := strings.TrimPrefix(r.Key, elemsRoot)
			if i := strings.LastIndex(rest, "/"); i > 0 {
				elemOp, elemBlock = rest[:i+1], rest[i+1:]
				return nil
			}
		}
	}
	if err := nextElem(); err != nil {
		return nil, err
	}
	var out []string
	for {
		r, ok := values.NextSync()
		if !ok {
			break
		}
		if r.Error != nil {
			return nil, fmt.Errorf("check: values: %w", r.Error)
		}
		if !strings.HasSuffix(r.Key, "/v") {
			continue
		}
		op := strings.TrimSuffix(strings.TrimPrefix(r.Key, valuesRoot), "v")
		for !elemsDone && elemOp < op {
			if err := nextElem(); err != nil {
				return nil, err
			}
		}
		backed := false
		for !elemsDone && elemOp == op {
			backed = backed || reachable[elemBlock]
			if err := nextElem(); err != nil {
				return nil, err
			}
		}
		if !backed {
			out = append(out, strings.TrimSuffix(op, "/"))
		}
	}
	return out, nil
}

// Check verifies the store (see CheckReport) and, with opts.Repair, fixes
// what it can, then checks again.
func (s *Store) Check(ctx context.Context, opts CheckOptions) (*CheckReport, error) {
	if !opts.Repair {
		return s.check(ctx)
	}
	var done []string
	orphans, err := s.orphans(ctx)
	if err != nil {
		return nil, err
	}
	if len(orphans) > 0 {
		if err := s.recoverInPlace(ctx); err != nil {
			return nil, fmt.Errorf("repair: %w", err)
		}
		done = append(done, fmt.Sprintf("made %d block(s) merged here but out of reach of the heads heads again, so that peers get them", len(orphans)))
	}
	d, err := s.scanDAG(ctx)
	if err != nil {
		return nil, err
	}
	if len(d.missing) > 0 && opts.Fetch != nil {
		want := cidsOf(d.missing)
		if err := opts.Fetch(ctx, want); err != nil {
			s.log.Warn("fetching missing blocks", "err", err)
		}
		before := len(d.missing)
		if d, err = s.scanDAG(ctx); err != nil {
			return nil, err
		}
		if got := before - len(d.missing); got > 0 {
			done = append(done, fmt.Sprintf("fetched %d missing block(s) from peers", got))
		}
	}
	if len(d.missing) > 0 && opts.DropLost != nil && opts.DropLost(ctx, cidsOf(d.missing)) {
		lost := cidsOf(d.missing)
		cut, err := s.cutLostBranches(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("repair: %w", err)
		}
		done = append(done, fmt.Sprintf("cut %d block(s) whose history is lost for good from the heads (%d missing block(s))", cut, len(lost)))
		// Declared on top of the cut history, not of the broken one.
		if opts.Declare {
			if err := s.declareLost(ctx, lost); err != nil {
				return nil, fmt.Errorf("repair: %w", err)
			}
			done = append(done, fmt.Sprintf("declared %d block(s) lost for good, so that the nodes that received them cut them too", len(lost)))
		}
		if d, err = s.scanDAG(ctx); err != nil {
			return nil, err
		}
	}
	keys, err := s.unbacked(ctx, d.reachable)
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		n, err := s.republish(ctx, keys)
		if err != nil {
			return nil, fmt.Errorf("repair: %w", err)
		}
		done = append(done, fmt.Sprintf("wrote %d visible value(s) that no block of the history carried again, in new deltas", n))
	}
	if len(d.unmerged) > 0 || s.Stats(ctx).Dirty {
		if err := s.Repair(ctx); err != nil {
			done = append(done, "merging the history again failed: "+err.Error())
		} else {
			done = append(done, "merged the history again from the heads")
		}
	}
	r, err := s.check(ctx)
	if err != nil {
		return nil, err
	}
	r.Repaired = done
	return r, nil
}

func cidsOf(keys map[string]bool) []cid.Cid {
	var out []cid.Cid
	for k := range keys {
		if c, err := blockCid(k); err == nil {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyString() < out[j].KeyString() })
	return out
}

func (s *Store) check(ctx context.Context) (*CheckReport, error) {
	d, err := s.scanDAG(ctx)
	if err != nil {
		return nil, err
	}
	orphans, err := s.orphans(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := s.unbacked(ctx, d.reachable)
	if err != nil {
		return nil, err
	}
	st := s.Stats(ctx)
	r := &CheckReport{Heads: len(d.heads), Blocks: len(d.reachable), Dirty: st.Dirty, RepairReason: st.RepairReason,
		MissingBlocks: []string{}, UnmergedBlocks: []string{}, OrphanBlocks: []string{}, UnbackedOps: []OpRef{}, Problems: []string{}}
	for _, c := range cidsOf(d.missing) {
		r.MissingBlocks = append(r.MissingBlocks, c.String())
	}
	for _, k := range d.unmerged {
		if c, err := blockCid(k); err == nil {
			r.UnmergedBlocks = append(r.UnmergedBlocks, c.String())
		}
	}
	sort.Strings(r.UnmergedBlocks)
	for _, c := range orphans {
		r.OrphanBlocks = append(r.OrphanBlocks, c.String())
	}
	r.UnbackedCount = len(keys)
	for _, k := range keys {
		if len(r.UnbackedOps) == 100 {
			break
		}
		kp, err := parseOpKey(k)
		if err != nil {
			continue
		}
		id, _ := UnescapeID(kp.EscapedID)
		r.UnbackedOps = append(r.UnbackedOps, OpRef{Collection: kp.Collection, ID: id, Op: kp.Op.String()})
	}
	if n := len(r.MissingBlocks); n > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d block(s) of the history are missing here: until a peer sends them, this node's history is incomplete and a new node cannot finish syncing from it", n))
	}
	if n := len(r.UnmergedBlocks); n > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d block(s) are held but not merged: the changes they carry do not show yet", n))
	}
	if n := len(r.OrphanBlocks); n > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d block(s) were merged here but no head leads to them: their changes show here and never reach a peer", n))
	}
	if n := r.UnbackedCount; n > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d visible value(s) are carried by no block of the history: no peer can receive them", n))
	}
	if r.Dirty {
		reason := "a merge failed or was cut short"
		if r.RepairReason != "" {
			reason = r.RepairReason
		}
		r.Problems = append(r.Problems, "the store needs repair: "+reason)
	}
	r.OK = len(r.Problems) == 0
	return r, nil
}
