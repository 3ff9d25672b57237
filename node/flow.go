package node

import (
	"context"
	"time"

	"github.com/ipfs/boxo/blockstore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/blocksync"
	"github.com/ferry-crm/ferry/node/heads"
)

// The data flow between the parts, as named methods: what happens when the
// store changes, and when a peer sends its heads.

// changed is the store's OnChange: a record (or a record of an internal
// collection) changed, by a local write or a merge. It runs inside
// go-ds-crdt's merge hooks, so nothing here blocks: each part is only told.
func (n *Node) changed(collection, escapedID string) {
	n.watch.changed(collection, escapedID)
	if n.wf != nil {
		n.wf.Changed()
	}
	if collection == crdt.NodesCollection {
		n.names.invalidate()
	}
	if isChannelAuthority(collection) {
		n.channelsChanged()
	}
	if n.net == nil {
		return
	}
	if collection == crdt.MembersCollection && n.net.admission != nil {
		n.net.admission.Changed() // disconnect revoked members
	}
	// Before the protocols are up, nobody is told: the heads service
	// compares heads once a second anyway and the hook scans every open
	// conflict when it starts.
	if !n.net.up.Load() {
		return
	}
	n.net.heads.Changed() // announce our new heads to every peer
	if n.net.hook != nil {
		n.net.hook.changed(collection, escapedID)
	}
}

// receiveHeads is given the heads a peer sent in a heads exchange: an
// office's heads are recorded (acknowledgements), missing blocks are
// fetched in bulk, and the heads are handed to go-ds-crdt through the
// broadcaster, as if they had come over GossipSub.
func (n *Node) receiveHeads(ctx context.Context, from peer.ID, payload []byte) {
	n.acks.heard(ctx, from, payload)
	payload = n.catchUpWith(n.store, n.bstore, n.net.blocks, from, payload)
	if err := n.net.bcast.Inject(ctx, from, payload); err != nil {
		n.log.Debug("heads from peer not queued", "peer", from, "err", err)
	}
}

// catchUpTimeout bounds one bulk fetch of missing blocks.
const catchUpTimeout = 10 * time.Minute

// catchUp runs before a peer's heads are handed to go-ds-crdt: when some of
// them are not in the local blockstore, every block this node lacks is
// fetched from that peer in bulk (blocksync), so go-ds-crdt's DAG walk then
// finds them locally instead of fetching one level per bitswap round trip.
// It returns the heads to hand over: the peer's current ones after a fetch,
// or the payload as received (bitswap stays the fallback).
func (n *Node) catchUpWith(store *crdt.Store, bstore blockstore.Blockstore, blocks *blocksync.Syncer, from peer.ID, payload []byte) []byte {
	if n.cfg.DisableBulkSync {
		return payload
	}
	theirs, ep, err := heads.DecodeEpoch(payload)
	if err != nil {
		return payload
	}
	if cur := store.Epoch(); ep != cur && !ep.After(cur) {
		return payload // an earlier epoch: that peer moves to ours
	}
	ctx, cancel := context.WithTimeout(n.life.Context(), catchUpTimeout)
	defer cancel()
	missing := false
	for _, h := range theirs {
		if has, err := bstore.Has(ctx, h); err != nil || !has {
			missing = true
			break
		}
	}
	if !missing {
		return payload
	}
	ours, err := store.Heads(ctx)
	if err != nil {
		return payload
	}
	res, err := blocks.Fetch(ctx, from, ours, nil)
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
	out, err := heads.EncodeEpoch(res.Heads, ep)
	if err != nil {
		return payload
	}
	return out
}
