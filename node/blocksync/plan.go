package blocksync

import (
	"container/heap"
	"context"
	"errors"

	"github.com/ferry-crm/ferry/crdt"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// DAG walks.

// blockGetter is the part of a blockstore the walks use.
type blockGetter interface {
	Get(context.Context, cid.Cid) (blocks.Block, error)
}

// dagBlock is what the walks need of a block: its links and go-ds-crdt
// priority (0 if none), and its size.
type dagBlock struct {
	crdt.Block
	size int
}

// loadBlock reads c from bs; found is false if bs lacks it. Links and
// priority come from crdt.ReadBlock: links of dag-pb nodes only (none for a
// block that does not decode), priority 0 unless the block is a delta.
func loadBlock(ctx context.Context, bs blockGetter, c cid.Cid) (b dagBlock, found bool, err error) {
	blk, err := bs.Get(ctx, c)
	if ipld.IsNotFound(err) {
		return b, false, nil
	}
	if err != nil {
		return b, false, err
	}
	raw := blk.RawData()
	return dagBlock{Block: crdt.ReadBlock(c, raw), size: len(raw)}, true, nil
}

// blockRef is a block to send.
type blockRef struct {
	c    cid.Cid
	size int
}

type blockPlan struct {
	refs  []blockRef
	bytes int64
}

func (p *blockPlan) add(c cid.Cid, size int) {
	p.refs = append(p.refs, blockRef{c: c, size: size})
	p.bytes += int64(size)
}

const (
	walkPriority = "priority"
	walkClosure  = "closure"
)

// errNoPriorities stops the priority walk: some block has no usable
// priority (not a go-ds-crdt delta, or not above its children's).
var errNoPriorities = errors.New("blocks without usable priorities")

// planBlocks returns the blocks reachable from ours and not from theirs in
// bs (blocks bs lacks are skipped), top-down, and the walk used. Blocks
// larger than MaxBlockSize are left out (a requester would refuse them).
func planBlocks(ctx context.Context, bs blockGetter, ours, theirs []cid.Cid) (blockPlan, string, error) {
	plan, err := planByPriority(ctx, bs, ours, theirs)
	if errors.Is(err, errNoPriorities) {
		plan, err = planByClosure(ctx, bs, ours, theirs)
		return plan, walkClosure, err
	}
	return plan, walkPriority, err
}

const (
	flagWant uint8 = 1 << iota // reachable from our heads
	flagHave                   // reachable from the requester's CIDs
)

type prioNode struct {
	c       cid.Cid
	key     string
	prio    uint64
	size    int
	links   []cid.Cid
	flags   uint8
	missing bool
	popped  bool
}

type prioHeap []*prioNode

func (h prioHeap) Len() int { return len(h) }
func (h prioHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio > h[j].prio
	}
	return h[i].key < h[j].key
}
func (h prioHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *prioHeap) Push(x any)   { *h = append(*h, x.(*prioNode)) }
func (h *prioHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return n
}

// planByPriority walks both sides at once, highest priority first. Since a
// block's priority is above its children's, when a block is popped every
// block linking to it has been popped already, so its flags are final: it
// is sent if it is reachable from ours only. The walk stops when no block
// left to visit is reachable from ours only (nothing below can be sent).
//
// It fails with errNoPriorities on a block without a priority or a link
// it follows to a child whose priority is not lower. Links it does not
// follow are not checked: with priorities wrong there (e.g. a CID of theirs
// linking to a block of higher priority) it may send blocks the requester
// has, but never misses one (a block reachable from ours only is reached
// through blocks reachable from ours only, which are all visited).
func planByPriority(ctx context.Context, bs blockGetter, ours, theirs []cid.Cid) (blockPlan, error) {
	var plan blockPlan
	nodes := make(map[string]*prioNode)
	var h prioHeap
	pendingWant := 0 // nodes in h whose flags are exactly flagWant

	add := func(c cid.Cid, flags uint8, parent *prioNode) error {
		k := string(c.Hash())
		if n, ok := nodes[k]; ok {
			if n.missing {
				return nil
			}
			if parent != nil && n.prio >= parent.prio {
				return errNoPriorities
			}
			if n.popped {
				return nil
			}
			if n.flags == flagWant && flags&flagHave != 0 {
				pendingWant--
			}
			n.flags |= flags
			return nil
		}
		b, found, err := loadBlock(ctx, bs, c)
		if err != nil {
			return err
		}
		if !found {
			nodes[k] = &prioNode{missing: true}
			return nil
		}
		if b.Priority == 0 || (parent != nil && b.Priority >= parent.prio) {
			return errNoPriorities
		}
		n := &prioNode{c: c, key: k, prio: b.Priority, size: b.size, links: b.Links, flags: flags}
		nodes[k] = n
		heap.Push(&h, n)
		if flags == flagWant {
			pendingWant++
		}
		return nil
	}
	for _, c := range theirs {
		if err := add(c, flagHave, nil); err != nil {
			return plan, err
		}
	}
	for _, c := range ours {
		if err := add(c, flagWant, nil); err != nil {
			return plan, err
		}
	}
	for i := 0; pendingWant > 0; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return plan, err
			}
		}
		n := heap.Pop(&h).(*prioNode)
		n.popped = true
		if n.flags == flagWant {
			pendingWant--
			if n.size <= MaxBlockSize {
				plan.add(n.c, n.size)
			}
		}
		for _, l := range n.links {
			if err := add(l, n.flags, n); err != nil {
				return plan, err
			}
		}
		n.links = nil
	}
	return plan, nil
}

// planByClosure computes the closure of theirs, then walks down from ours
// (breadth-first) without descending below it.
func planByClosure(ctx context.Context, bs blockGetter, ours, theirs []cid.Cid) (blockPlan, error) {
	var plan blockPlan
	have := make(map[string]struct{})
	stack := append([]cid.Cid(nil), theirs...)
	for i := 0; len(stack) > 0; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return plan, err
			}
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		k := string(c.Hash())
		if _, ok := have[k]; ok {
			continue
		}
		have[k] = struct{}{} // also when missing: not walked twice
		b, found, err := loadBlock(ctx, bs, c)
		if err != nil {
			return plan, err
		}
		if found {
			stack = append(stack, b.Links...)
		}
	}
	seen := make(map[string]struct{})
	queue := append([]cid.Cid(nil), ours...)
	for i := 0; len(queue) > 0; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return plan, err
			}
		}
		c := queue[0]
		queue = queue[1:]
		k := string(c.Hash())
		if _, ok := have[k]; ok {
			continue
		}
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		b, found, err := loadBlock(ctx, bs, c)
		if err != nil {
			return plan, err
		}
		if !found {
			continue
		}
		if b.size <= MaxBlockSize {
			plan.add(c, b.size)
		}
		queue = append(queue, b.Links...)
	}
	return plan, nil
}
