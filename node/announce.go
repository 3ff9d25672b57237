package node

import (
	"context"
	"slices"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"
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
