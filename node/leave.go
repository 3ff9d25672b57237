package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/handover"
	"github.com/ferry-crm/ferry/node/heads"
)

// Leaving a channel (docs/channels.md, "When a grant ends"): the node stops
// serving it at once, hands the edits of it that no office holds yet over
// to an office (package handover), then purges it: its keys and blocks go
// with badger's DropPrefix, nothing through go-ds-crdt, so nothing is ever
// broadcast as a delete. A node offline when its grant ended leaves at its
// next contact with an office. The state is kept, so a kill at any step
// resumes at the next start.

// Channel states, kept at /ferry/local/ch/<channel>/state.
const (
	stateHeld    = "held"
	stateLeaving = "leaving"
)

// purgeRoot holds a marker per channel being purged (outside the channel's
// own keys, which the purge drops).
var purgeRoot = ds.NewKey("/ferry/local/purge")

// handOverRetry is how long a node leaving a channel waits between two
// attempts to hand its edits over.
const handOverRetry = 5 * time.Second

func channelStateKey(name string) ds.Key { return channelsLocal.ChildString(name).ChildString("state") }

// leavingChannel is a channel this node is leaving.
type leavingChannel struct {
	since time.Time
	// unacked: edits of this node still to hand over (-1: not counted yet).
	unacked int
	err     string
}

// setChannelState records a channel's state.
func (n *Node) setChannelState(ctx context.Context, name, state string) error {
	if err := n.datastore().Put(ctx, channelStateKey(name), []byte(state)); err != nil {
		return fmt.Errorf("channel %s: record state %s: %w", name, state, err)
	}
	return nil
}

// channelsOnDisk returns the channels this data dir holds or is leaving,
// by state.
func (n *Node) channelsOnDisk(ctx context.Context) (map[string]string, error) {
	res, err := n.base.Query(ctx, query.Query{Prefix: channelsLocal.String() + "/"})
	if err != nil {
		return nil, fmt.Errorf("channels on disk: %w", err)
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, fmt.Errorf("channels on disk: %w", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		rest := strings.TrimPrefix(e.Key, channelsLocal.String()+"/")
		name, what, ok := strings.Cut(rest, "/")
		if ok && what == "state" {
			out[name] = string(e.Value)
		}
	}
	return out, nil
}

// leaveChannelLocked stops serving a channel at once and starts handing
// over, then purging it in the background. n.chans.mu is held.
func (n *Node) leaveChannelLocked(ctx context.Context, ch *channel) error {
	if n.router != nil {
		n.router.Remove(ch.name)
	}
	n.chans.remove(ch.name)
	err := n.setChannelState(ctx, ch.name, stateLeaving)
	n.stopChannelNet(ch)
	n.chans.leavingMu.Lock()
	if n.chans.leaving == nil {
		n.chans.leaving = map[string]*leavingChannel{}
	}
	n.chans.leaving[ch.name] = &leavingChannel{since: time.Now(), unacked: -1}
	n.chans.leavingMu.Unlock()
	n.log.Info("leaving channel", "channel", ch.name)
	if !n.life.Go(func(ctx context.Context) { n.finishLeave(ctx, ch) }) {
		return errors.Join(err, n.closeChannel(ch))
	}
	return err
}

// stopChannelNet stops everything that serves or sends a channel: its
// protocols, topic and bitswap (the store stays open for the hand-over).
func (n *Node) stopChannelNet(ch *channel) {
	var cs []interface{ Close() error }
	if ch.heads != nil {
		cs = append(cs, ch.heads)
	}
	if ch.blocks != nil {
		cs = append(cs, ch.blocks)
	}
	if ch.digests != nil {
		cs = append(cs, ch.digests)
	}
	if ch.bcast != nil {
		cs = append(cs, ch.bcast)
	}
	if ch.bitswap != nil {
		cs = append(cs, ch.bitswap)
	}
	for _, c := range cs {
		if err := c.Close(); err != nil {
			n.log.Debug("stopping a channel", "channel", ch.name, "err", err)
		}
	}
	ch.heads, ch.blocks, ch.digests, ch.bcast, ch.bitswap = nil, nil, nil, nil, nil
}

// finishLeave hands a channel's edits over, retrying until an office
// takes them, then purges the channel.
func (n *Node) finishLeave(ctx context.Context, ch *channel) {
	for {
		err := n.handOver(ctx, ch)
		if err == nil {
			break
		}
		n.chans.leavingMu.Lock()
		if l := n.chans.leaving[ch.name]; l != nil {
			l.err = err.Error()
		}
		n.chans.leavingMu.Unlock()
		n.log.Info("channel not purged yet", "channel", ch.name, "err", err)
		select {
		case <-ctx.Done():
			_ = n.closeChannel(ch) // resumed at the next start
			return
		case <-time.After(handOverRetry):
		}
	}
	err := n.closeChannel(ch)
	if err == nil {
		err = n.purgeChannel(ctx, ch.name)
	}
	n.chans.leavingMu.Lock()
	delete(n.chans.leaving, ch.name)
	n.chans.leavingMu.Unlock()
	if err != nil {
		n.log.Warn("purging a channel", "channel", ch.name, "err", err)
		return
	}
	n.log.Info("channel purged", "channel", ch.name)
	n.channelsChanged() // granted again meanwhile: fetch it afresh
}

// handOver delivers this node's edits of a channel that no office is known
// to hold, if any, to a connected office.
func (n *Node) handOver(ctx context.Context, ch *channel) error {
	if n.cfg.Role == RoleOffice {
		return nil
	}
	un, err := ch.acks.unacked(ctx)
	if err != nil {
		return err
	}
	n.chans.leavingMu.Lock()
	if l := n.chans.leaving[ch.name]; l != nil {
		l.unacked = un.Count
	}
	n.chans.leavingMu.Unlock()
	if un.Count == 0 {
		return nil
	}
	if !n.netUp() || n.Offline() {
		return fmt.Errorf("%d edits to hand over to an office first: offline", un.Count)
	}
	blks, ours, err := ch.acks.unheld(ctx, true)
	if err != nil {
		return err
	}
	payload, err := heads.EncodeEpoch(ours, ch.store.Epoch())
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range n.net.host.Network().Peers() {
		if n.roleOf(ctx, p) != RoleOffice {
			continue
		}
		got, err := handover.Send(ctx, n.net.host, p, ch.name, blks, payload)
		if errors.Is(err, handover.ErrWantAll) {
			// The office compacted the channel since: every block.
			all, _, aerr := ch.acks.unheld(ctx, false)
			if aerr != nil {
				return aerr
			}
			n.log.Info("the office wants every block of the channel", "channel", ch.name, "office", p, "blocks", len(all))
			got, err = handover.Send(ctx, n.net.host, p, ch.name, all, payload)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.log.Info("handed a channel's edits over", "channel", ch.name, "office", p, "edits", un.Count, "blocks", got)
		return nil
	}
	if len(errs) == 0 {
		return fmt.Errorf("%d edits to hand over: no office connected", un.Count)
	}
	return fmt.Errorf("%d edits to hand over: %w", un.Count, errors.Join(errs...))
}

// purgeChannel deletes every key of a channel, blocks included, behind a
// marker that makes a start after a kill finish it.
func (n *Node) purgeChannel(ctx context.Context, name string) error {
	marker := purgeRoot.ChildString(name)
	if err := n.datastore().Put(ctx, marker, nil); err != nil {
		return fmt.Errorf("purge channel %s: %w", name, err)
	}
	for _, p := range []ds.Key{channelsRoot.ChildString(name), channelsLocal.ChildString(name)} {
		prefix := p.String() + "/"
		if err := n.guard.DropPrefix(prefix); err != nil {
			return fmt.Errorf("purge channel %s: %w", name, err)
		}
		if err := n.sweep(ctx, prefix); err != nil {
			return fmt.Errorf("purge channel %s: %w", name, err)
		}
	}
	if err := n.datastore().Delete(ctx, marker); err != nil {
		return fmt.Errorf("purge channel %s: %w", name, err)
	}
	// The purged values' write-ahead copies are in badger's current
	// value-log file, which GC never touches: a new file is started, so
	// that the GC below deletes that one, and the values leave the disk.
	if err := n.guard.RotateValueLog(ctx); err != nil {
		n.log.Warn("purged a channel, but its values stay in badger's value log until it is rewritten", "channel", name, "err", err)
	}
	if n.gc != nil {
		n.life.Go(func(ctx context.Context) {
			if _, err := n.gc.Reclaim(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("freeing the disk after a purge", "err", err)
			}
		})
	}
	return nil
}

// sweep deletes the keys under prefix that DropPrefix left (badger v1.6.2
// can leave what its memtable held).
func (n *Node) sweep(ctx context.Context, prefix string) error {
	res, err := n.base.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return err
	}
	entries, err := res.Rest()
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	b, err := n.datastore().Batch(ctx)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := b.Delete(ctx, ds.NewKey(e.Key)); err != nil {
			return err
		}
	}
	return b.Commit(ctx)
}

// noteChannelsOnDisk records as held the channels whose keys a clean sync
// copied (their state is this node's own, not copied): a channel copied
// but not wanted (not taken offline) is then left like any other.
func (n *Node) noteChannelsOnDisk(ctx context.Context) error {
	known, err := n.store.Channels(ctx)
	if err != nil {
		return err
	}
	disk, err := n.channelsOnDisk(ctx)
	if err != nil {
		return err
	}
	for _, c := range known {
		if _, ok := disk[c]; ok {
			continue
		}
		res, err := n.base.Query(ctx, query.Query{Prefix: channelsRoot.ChildString(c).String() + "/", KeysOnly: true, Limit: 1})
		if err != nil {
			return err
		}
		entries, err := res.Rest()
		if err != nil {
			return err
		}
		if len(entries) > 0 {
			if err := n.setChannelState(ctx, c, stateHeld); err != nil {
				return err
			}
		}
	}
	return nil
}

// resumePurges finishes the purges a kill interrupted.
func (n *Node) resumePurges(ctx context.Context) error {
	res, err := n.base.Query(ctx, query.Query{Prefix: purgeRoot.String() + "/", KeysOnly: true})
	if err != nil {
		return err
	}
	entries, err := res.Rest()
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := strings.TrimPrefix(e.Key, purgeRoot.String()+"/")
		if err := n.purgeChannel(ctx, name); err != nil {
			return err
		}
		n.log.Info("finished purging a channel", "channel", name)
	}
	return nil
}

// leavingChannels returns the channels being left, by name.
func (n *Node) leavingChannels() map[string]leavingChannel {
	n.chans.leavingMu.Lock()
	defer n.chans.leavingMu.Unlock()
	out := make(map[string]leavingChannel, len(n.chans.leaving))
	for k, v := range n.chans.leaving {
		out[k] = *v
	}
	return out
}

// handOverReceiver is an office's side of a hand-over.
type handOverReceiver struct{ n *Node }

func (r handOverReceiver) Accept(ctx context.Context, from peer.ID, channel string) error {
	n := r.n
	if n.cfg.Role != RoleOffice {
		return errors.New("only an office takes a hand-over")
	}
	if n.cfg.secured() {
		if m, ok, err := n.store.Member(ctx, from.String()); err != nil || !ok {
			return fmt.Errorf("%s is not a member", from)
		} else if m.Revoked {
			return fmt.Errorf("%s was revoked", from)
		}
	}
	_, err := n.ensureChannel(ctx, channel)
	return err
}

func (r handOverReceiver) Put(ctx context.Context, channel string, blk blocks.Block) error {
	ch := r.n.chans.get(channel)
	if ch == nil {
		return fmt.Errorf("channel %s: %w", channel, crdt.ErrChannelNotHeld)
	}
	return ch.bstore.Put(ctx, blk)
}

func (r handOverReceiver) Merge(ctx context.Context, from peer.ID, channel string, payload []byte, received []cid.Cid) error {
	ch := r.n.chans.get(channel)
	if ch == nil || ch.bcast == nil {
		return fmt.Errorf("channel %s: %w", channel, crdt.ErrChannelNotHeld)
	}
	theirs, ep, err := heads.DecodeEpoch(payload)
	if err != nil {
		return err
	}
	cur := ch.store.Epoch()
	if ep != cur && !cur.After(ep) {
		ch.store.OfferEpoch(ep, theirs)
		return fmt.Errorf("this office is not in epoch %s of the channel yet: try again", ep)
	}
	// The laptop no longer serves the channel: nothing below its heads can
	// be fetched from it, so it sends what is missing here.
	if missing, err := ch.store.BlocksMissingBelow(ctx, theirs); err != nil {
		return err
	} else if missing {
		return handover.ErrWantAll
	}
	if cur.After(ep) {
		// The laptop was away across a compaction of the channel, and can
		// no longer adopt the new epoch: its DAG is merged here and what
		// the cut does not cover carried over.
		_, err := ch.store.MergeOldEpoch(ctx, ep, theirs)
		if errors.Is(err, crdt.ErrBlocksMissing) {
			return handover.ErrWantAll
		}
		return err
	}
	if err := ch.bcast.Inject(ctx, from, payload); err != nil {
		return err
	}
	// Every block, not only the heads: go-ds-crdt merges from the heads
	// down, and the laptop purges the channel once this returns. A block
	// still to merge then is not seen from the heads (a branch joins them
	// once merged to its bottom); a compaction switching meanwhile would
	// drop it, and it would be lost (chaos seed 0x3).
	pending := append(slices.Clone(theirs), received...)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		for len(pending) > 0 {
			ok, err := ch.store.Processed(ctx, pending[0])
			if err != nil || !ok {
				break
			}
			pending = pending[1:]
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("merging %d heads (%d blocks not merged yet): %w", len(theirs), len(pending), ctx.Err())
		case <-t.C:
		}
	}
}

// unheld returns the blocks reachable from the store's heads that no office
// is known to hold (all of them unless known), and those heads.
func (a *ackTracker) unheld(ctx context.Context, known bool) ([]blocks.Block, []cid.Cid, error) {
	ours, err := a.store.Heads(ctx)
	if err != nil {
		return nil, nil, err
	}
	var officeCids []cid.Cid
	a.mu.Lock()
	for _, oh := range a.office {
		for _, s := range oh.Heads {
			if c, err := cid.Decode(s); err == nil && known {
				officeCids = append(officeCids, c)
			}
		}
	}
	a.mu.Unlock()
	held := map[cid.Cid]bool{}
	if err := a.walk(ctx, officeCids, held, nil); err != nil {
		return nil, nil, err
	}
	var out []blocks.Block
	stack := slices.Clone(ours)
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if held[c] {
			continue
		}
		held[c] = true
		blk, err := a.bstore.Get(ctx, c)
		if err != nil {
			continue
		}
		out = append(out, blk)
		stack = append(stack, crdt.ReadBlock(c, blk.RawData()).Links...)
	}
	return out, ours, nil
}
