package crdt

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"time"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// go-ds-crdt v0.6.8 merges a local delta (elements, then the processed mark)
// before it records the new block as a head. A process killed in between
// leaves ops in the store that no head leads to: the node shows them, but
// never announces them, and DAG repair (which walks down from the heads)
// never finds them. recoverOrphans finds such blocks and makes them heads
// again, so they are announced and, if their merge was cut short, repaired.
// It reads go-ds-crdt's layout (engine.go): heads under <ns>/h/<block> (uvarint
// height), processed marks under <ns>/b/<block>, elements under
// <ns>/s/s/<op key>/<block>.

// recoverOrphans runs while go-ds-crdt is closed. It returns the blocks it
// made heads.
func (s *Store) recoverOrphans(ctx context.Context) ([]cid.Cid, error) {
	found, err := s.findOrphans(ctx)
	if err != nil {
		return nil, err
	}
	headsRoot := prefix(s.layout().heads())
	var out []cid.Cid
	for _, o := range found {
		buf := make([]byte, binary.MaxVarintLen64)
		n := binary.PutUvarint(buf, o.height)
		if err := s.base.Put(ctx, ds.NewKey(headsRoot+o.key), buf[:n]); err != nil {
			return nil, fmt.Errorf("recover: %w", err)
		}
		for _, l := range o.replaces {
			if err := s.base.Delete(ctx, ds.NewKey(headsRoot+l)); err != nil {
				return nil, fmt.Errorf("recover: %w", err)
			}
		}
		out = append(out, o.cid)
	}
	if len(out) > 0 {
		if err := s.base.Sync(ctx, ds.NewKey(headsRoot)); err != nil {
			return nil, fmt.Errorf("recover: %w", err)
		}
	}
	return out, nil
}

// orphans lists the blocks recoverOrphans would make heads.
func (s *Store) orphans(ctx context.Context) ([]cid.Cid, error) {
	found, err := s.findOrphans(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]cid.Cid, len(found))
	for i, o := range found {
		out[i] = o.cid
	}
	return out, nil
}

// orphan is a block merged here that no head leads to, and no other such
// block links to.
type orphan struct {
	key      string // block id (its multihash key)
	cid      cid.Cid
	height   uint64
	replaces []string // current heads it links to
}

// findOrphans finds blocks merged (processed, or with elements) but not
// reachable from the heads, and not below another such block.
func (s *Store) findOrphans(ctx context.Context) ([]orphan, error) {
	l := s.layout()
	headsRoot := prefix(l.heads())
	heads, err := s.listBlockKeys(ctx, headsRoot, false)
	if err != nil {
		return nil, fmt.Errorf("recover: heads: %w", err)
	}
	merged, err := s.listBlockKeys(ctx, prefix(l.processed()), false)
	if err != nil {
		return nil, fmt.Errorf("recover: processed blocks: %w", err)
	}
	partial, err := s.listBlockKeys(ctx, prefix(l.elems()), true)
	if err != nil {
		return nil, fmt.Errorf("recover: elements: %w", err)
	}
	for k := range partial {
		merged[k] = true
	}
	// Everything reachable from the heads.
	links := map[string][]string{} // block -> its links, for the blocks read
	reachable := map[string]bool{}
	var queue []string
	for h := range heads {
		reachable[h] = true
		queue = append(queue, h)
	}
	for len(queue) > 0 {
		k := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		ls, _, err := s.blockLinks(ctx, k)
		if err != nil {
			continue // not here (yet): nothing below it was merged from it
		}
		links[k] = ls
		for _, l := range ls {
			if !reachable[l] {
				reachable[l] = true
				queue = append(queue, l)
			}
		}
	}
	cut, err := s.listBlockKeys(ctx, s.roots.cut.String()+"/", false)
	if err != nil {
		return nil, fmt.Errorf("recover: cut blocks: %w", err)
	}
	// Orphans: merged, unreachable, not cut on purpose (see
	// cutLostBranches), and not below another orphan.
	orphans := map[string]uint64{}
	below := map[string]bool{}
	for k := range merged {
		if reachable[k] || cut[k] {
			continue
		}
		ls, height, err := s.blockLinks(ctx, k)
		if err != nil {
			continue
		}
		links[k] = ls
		orphans[k] = height
		for _, l := range ls {
			below[l] = true
		}
	}
	var out []orphan
	for k, height := range orphans {
		if below[k] {
			continue
		}
		c, err := blockCid(k)
		if err != nil {
			continue
		}
		o := orphan{key: k, cid: c, height: height}
		for _, l := range links[k] {
			if heads[l] { // now below the orphan, as go-ds-crdt would have replaced it
				o.replaces = append(o.replaces, l)
			}
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out, nil
}

// listBlockKeys lists the block ids under root: the first key segment after
// it, or with last, the last segment (element keys end with their block).
func (s *Store) listBlockKeys(ctx context.Context, root string, last bool) (map[string]bool, error) {
	res, err := s.base.Query(ctx, query.Query{Prefix: root, KeysOnly: true})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	out := map[string]bool{}
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		rest := strings.TrimPrefix(r.Key, root)
		if last {
			rest = rest[strings.LastIndex(rest, "/")+1:]
		} else if i := strings.Index(rest, "/"); i >= 0 {
			rest = rest[:i]
		}
		if rest != "" {
			out[rest] = true
		}
	}
	return out, nil
}

// blockLinks reads a block held here: its links (as block ids) and its
// height. It does not wait for the network.
func (s *Store) blockLinks(ctx context.Context, key string) ([]string, uint64, error) {
	c, err := blockCid(key)
	if err != nil {
		return nil, 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	nd, err := s.dag.Get(cctx, c)
	if err != nil {
		return nil, 0, err
	}
	prio, err := deltaPriority(nd)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	for _, l := range nd.Links() {
		out = append(out, blockKey(l.Cid))
	}
	return out, prio, nil
}
