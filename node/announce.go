package node

import (
	"context"
	"slices"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// go-ds-crdt announces only the heads of its own writes (and, every minute,
// heads nobody else announced). A node that merged a peer's heads does not
// pass them on, so a laptop connected only to the office would wait for the
// other laptop's rebroadcast timer. The announcer closes that gap: whenever
// this node's heads change, for any reason, it exchanges heads with every
// connected peer over the heads protocol (a direct stream, not a GossipSub
// message that can be lost while a mesh forms).

const (
	// announceDebounce groups head changes (a catch-up changes heads once per
	// merged block) into one announcement.
	announceDebounce = 50 * time.Millisecond
	// announceCheck is the fallback period at which heads are compared.
	announceCheck = time.Second
	// announceTimeout bounds one exchange.
	announceTimeout = 10 * time.Second
)

// headsChanged is called from go-ds-crdt's merge hooks: it must not block.
func (n *Node) headsChanged() {
	select {
	case n.announce <- struct{}{}:
	default:
	}
}

func (n *Node) announceLoop() {
	defer n.wg.Done()
	var last []cid.Cid
	tick := time.NewTicker(announceCheck)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		case <-n.announce:
			select {
			case <-time.After(announceDebounce):
			case <-n.ctx.Done():
				return
			}
		}
		heads, err := n.store.Heads(n.ctx)
		if err != nil || len(heads) == 0 {
			continue
		}
		slices.SortFunc(heads, cmpKeys)
		if slices.Equal(heads, last) {
			continue
		}
		last = heads
		n.exchangeWithAll(n.ctx)
	}
}

func cmpKeys(a, b cid.Cid) int {
	switch ka, kb := a.KeyString(), b.KeyString(); {
	case ka < kb:
		return -1
	case ka > kb:
		return 1
	}
	return 0
}

// exchangeWithAll exchanges heads with every connected peer, in parallel.
func (n *Node) exchangeWithAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range n.host.Network().Peers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ectx, cancel := context.WithTimeout(ctx, announceTimeout)
			defer cancel()
			if err := n.heads.Exchange(ectx, p); err != nil && ctx.Err() == nil {
				n.log.Debug("announce heads", "peer", p, "err", err)
			}
		}()
	}
	wg.Wait()
}

// catchUpTimeout bounds one bulk fetch of missing blocks.
const catchUpTimeout = 10 * time.Minute

// catchUp runs before a peer's heads are handed to go-ds-crdt: when some of
// them are not in the local blockstore, every block this node lacks is
// fetched from that peer in bulk (BlockSync), so go-ds-crdt's DAG walk then
// finds them locally instead of fetching one level per bitswap round trip.
// It returns the heads to hand over: the peer's current ones after a fetch,
// or the payload as received (bitswap stays the fallback).
func (n *Node) catchUp(from peer.ID, payload []byte) []byte {
	if n.cfg.DisableBulkSync {
		return payload
	}
	heads, err := ValidateHeadsPayload(payload)
	if err != nil {
		return payload
	}
	missing := false
	for _, h := range heads {
		if has, err := n.bstore.Has(n.ctx, h); err != nil || !has {
			missing = true
			break
		}
	}
	if !missing {
		return payload
	}
	ctx, cancel := context.WithTimeout(n.ctx, catchUpTimeout)
	defer cancel()
	ours, err := n.store.Heads(ctx)
	if err != nil {
		return payload
	}
	res, err := n.blocks.Fetch(ctx, from, ours, nil)
	if err != nil {
		n.log.Info("bulk catch-up failed; falling back to bitswap", "peer", from, "err", err)
		return payload
	}
	if res.Blocks > 0 {
		n.log.Info("caught up in bulk", "peer", from, "blocks", res.Blocks, "bytes", res.Bytes, "took", res.Duration)
	}
	if len(res.Heads) == 0 {
		return payload
	}
	out, err := EncodeHeads(res.Heads)
	if err != nil {
		return payload
	}
	return out
}
