package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/blockstore"
	ds "github.com/ipfs/go-datastore"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/blocksync"
	"github.com/ferry-crm/ferry/node/chanhost"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/digestsync"
	"github.com/ferry-crm/ferry/node/heads"
	"github.com/ferry-crm/ferry/node/p2p"
	"github.com/ferry-crm/ferry/node/wire"
)

// Channels (docs/channels.md): a routed collection's records live in one
// store per channel, each its own go-ds-crdt DAG with its own blocks,
// GossipSub topic and protocols, and a node holds only the channels it is
// granted. This file opens and closes a node's channels; leave.go hands a
// channel's unacknowledged edits over and purges it when a grant ends.

// channelsRoot is where every channel keeps its keys: /ferry/ch/<channel>/
// holds its go-ds-crdt namespaces, epochs, history archive and blocks.
var channelsRoot = ds.NewKey("/ferry/ch")

// channelsLocal is where a node keeps what it knows of each channel and
// replicates to nobody: /ferry/local/ch/<channel>/ (office heads, state).
var channelsLocal = ds.NewKey("/ferry/local/ch")

// channelReconcile is how often the channels held are compared with the
// ones wanted, besides when grants, the schema or membership change.
const channelReconcile = 30 * time.Second

// channel is one channel this node holds: its store, its blocks and, with
// network, its own protocols on a host that only talks to peers granted it.
type channel struct {
	name   string
	store  *crdt.Store
	bstore blockstore.Blockstore
	acks   *ackTracker
	// opened is store, for the callbacks of the transport and block store,
	// which run on their own goroutines while the store is being opened.
	opened atomic.Pointer[crdt.Store]

	host    *chanhost.Host
	bcast   *heads.Broadcaster
	gate    *heads.Gate
	bitswap *p2p.Bitswap
	heads   *heads.Service
	blocks  *blocksync.Syncer
	digests *digestsync.Service
}

// channelSet is the channels a node holds.
type channelSet struct {
	// mu serialises opening and closing channels (reconcile).
	mu sync.Mutex

	byNameMu sync.RWMutex
	byName   map[string]*channel
	// wake asks the reconcile loop to compare held and wanted channels.
	wake chan struct{}

	leavingMu sync.Mutex
	leaving   map[string]*leavingChannel
}

func (cs *channelSet) get(name string) *channel {
	cs.byNameMu.RLock()
	defer cs.byNameMu.RUnlock()
	return cs.byName[name]
}

func (cs *channelSet) all() []*channel {
	cs.byNameMu.RLock()
	defer cs.byNameMu.RUnlock()
	out := make([]*channel, 0, len(cs.byName))
	for _, c := range cs.byName {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *channel) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	return out
}

func (cs *channelSet) set(c *channel) {
	cs.byNameMu.Lock()
	defer cs.byNameMu.Unlock()
	if cs.byName == nil {
		cs.byName = map[string]*channel{}
	}
	cs.byName[c.name] = c
}

func (cs *channelSet) remove(name string) {
	cs.byNameMu.Lock()
	defer cs.byNameMu.Unlock()
	delete(cs.byName, name)
}

// channelsChanged asks the reconcile loop to look again (from merge hooks:
// it does not block).
func (n *Node) channelsChanged() {
	select {
	case n.chans.wake <- struct{}{}:
	default:
	}
}

// isChannelAuthority reports whether a change of collection may change
// which channels this node or its peers hold.
func isChannelAuthority(collection string) bool {
	switch collection {
	case crdt.GrantsCollection, crdt.ChannelsCollection, crdt.SchemaCollection, crdt.MembersCollection:
		return true
	}
	return false
}

// wantedChannels returns the channels this node should hold: an office (or
// any node of an open network) every channel of the network, a laptop its
// grants; both narrowed by Config.Channels.
func (n *Node) wantedChannels(ctx context.Context) ([]string, error) {
	var want []string
	if n.cfg.Role == RoleOffice || !n.cfg.secured() {
		all, err := n.store.Channels(ctx)
		if err != nil {
			return nil, err
		}
		want = all
	} else {
		g, err := n.store.Grants(ctx)
		if err != nil {
			return nil, err
		}
		want = g.Current(n.self.String())
	}
	if sub := n.subscription(); sub != nil && n.cfg.Role != RoleOffice {
		want = slices.DeleteFunc(want, func(c string) bool { return !slices.Contains(sub, c) })
	}
	return want, nil
}

// reconcileChannels opens the channels wanted and not held, and leaves
// (hands over, then purges) the ones held and no longer wanted.
func (n *Node) reconcileChannels(ctx context.Context) error {
	n.chans.mu.Lock()
	defer n.chans.mu.Unlock()
	want, err := n.wantedChannels(ctx)
	if err != nil {
		return fmt.Errorf("channels wanted: %w", err)
	}
	disk, err := n.channelsOnDisk(ctx)
	if err != nil {
		return err
	}
	leaving := n.leavingChannels()
	var errs []error
	for _, c := range want {
		if _, busy := leaving[c]; busy || n.chans.get(c) != nil {
			continue // a channel being left is opened again once purged
		}
		if _, err := n.openChannelLocked(ctx, c, true); err != nil {
			errs = append(errs, fmt.Errorf("open channel %s: %w", c, err))
		}
	}
	if n.net == nil {
		// A CLI command opened the store: it reads what is held, and
		// leaves nothing (a hand-over needs the network).
		return errors.Join(errs...)
	}
	for _, ch := range n.chans.all() {
		if slices.Contains(want, ch.name) {
			continue
		}
		if err := n.leaveChannelLocked(ctx, ch); err != nil {
			errs = append(errs, fmt.Errorf("leave channel %s: %w", ch.name, err))
		}
	}
	// Channels left on disk: being left when the node stopped, or no longer
	// wanted (a grant ended, or the subscription narrowed, while stopped).
	leaving = n.leavingChannels() // with those left just above
	for c, state := range disk {
		if _, busy := leaving[c]; busy || n.chans.get(c) != nil {
			continue
		}
		if state != stateLeaving && slices.Contains(want, c) {
			continue
		}
		ch, err := n.openChannelLocked(ctx, c, false)
		if err == nil {
			err = n.leaveChannelLocked(ctx, ch)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("leave channel %s: %w", c, err))
		}
	}
	if n.net != nil {
		n.net.enforceChannels()
	}
	return errors.Join(errs...)
}

// channelLoop reconciles the channels held whenever grants, the schema or
// the membership change, and every channelReconcile.
func (n *Node) channelLoop(ctx context.Context) {
	t := time.NewTicker(channelReconcile)
	defer t.Stop()
	for {
		if err := n.reconcileChannels(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("channels", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-n.chans.wake:
		case <-t.C:
		}
	}
}

// ensureChannel opens a channel's store if it is not held yet (an office
// writing into a channel for the first time).
func (n *Node) ensureChannel(ctx context.Context, name string) (*crdt.Store, error) {
	n.chans.mu.Lock()
	defer n.chans.mu.Unlock()
	if ch := n.chans.get(name); ch != nil {
		return ch.store, nil
	}
	if n.cfg.Role == RoleOffice {
		if err := n.store.RegisterChannel(ctx, name); err != nil {
			return nil, err
		}
	}
	if _, busy := n.leavingChannels()[name]; busy {
		return nil, fmt.Errorf("channel %s is being purged: try again when it is done", name)
	}
	ch, err := n.openChannelLocked(ctx, name, true)
	if err != nil {
		return nil, err
	}
	return ch.store, nil
}

// openChannelLocked opens a channel's store, over its own blockstore and,
// with network and serve, its own bitswap, topic and protocols; a channel
// opened to be left (not serve) is neither served nor readable. n.chans.mu
// is held.
func (n *Node) openChannelLocked(ctx context.Context, name string, serve bool) (_ *channel, err error) {
	root := channelsRoot.ChildString(name)
	ch := &channel{name: name}
	ch.bstore = datadir.NewReportingBlockstore(datadir.NewBlockstoreAt(n.datastore(), root.ChildString("blocks")), func(err error) {
		if s := ch.opened.Load(); s != nil {
			s.WriteFailed("block", err)
		}
	})
	defer func() {
		if err != nil {
			n.closeChannel(ch)
		}
	}()
	var dag ipld.DAGService = p2p.NewOfflineDAGService(ch.bstore)
	network := serve && n.net != nil
	if network {
		if dag, err = n.startChannelTransport(ctx, ch); err != nil {
			return nil, err
		}
	}
	opts := n.storeOptions()
	opts.Root, opts.Namespace = root, ds.Key{}
	opts.Channel, opts.Authority = name, n.store
	opts.HasBlock = ch.bstore.Has
	userChange := opts.OnChange
	opts.OnChange = func(collection, escapedID string) {
		n.changedIn(ch, collection, escapedID)
		if userChange != nil {
			userChange(collection, escapedID)
		}
	}
	if ch.gate != nil {
		ch.store, err = crdt.New(ctx, n.datastore(), dag, ch.gate, opts)
	} else {
		ch.store, err = crdt.New(ctx, n.datastore(), dag, nil, opts)
	}
	if err != nil {
		return nil, err
	}
	ch.opened.Store(ch.store)
	ch.acks = newAckTracker(ctx, n, ch.store, ch.bstore, channelsLocal.ChildString(name).ChildString("office-heads"))
	if !serve {
		return ch, nil
	}
	if err := n.setChannelState(ctx, name, stateHeld); err != nil {
		return nil, err
	}
	if network {
		n.startChannelProtocols(ch)
		// Peers already connected hear of it now, not at the next
		// periodic exchange: a laptop just granted a channel fetches it.
		svc := ch.heads
		n.life.Go(func(ctx context.Context) { svc.ExchangeAll(ctx) })
	}
	if err := n.router.Add(ch.store); err != nil {
		return nil, err
	}
	n.chans.set(ch)
	n.log.Info("holding channel", "channel", name)
	return ch, nil
}

// channelProtocol is the protocol id of one of a channel's protocols, e.g.
// /ferry/ch/east/heads/2.0.0.
func channelProtocol(channel, what string) protocol.ID {
	return wire.ChannelPrefix(channel) + protocol.ID("/"+what+"/"+wire.Version)
}

// startChannelTransport builds what a channel's store is opened over: its
// host (granted peers only), GossipSub topic and bitswap.
func (n *Node) startChannelTransport(ctx context.Context, ch *channel) (ipld.DAGService, error) {
	net, name := n.net, ch.name
	allow := func(p peer.ID) bool { return n.peerHolds(p, name) }
	ch.host = chanhost.New(net.host, name, allow, n.log)
	var err error
	if ch.bcast, err = heads.NewBroadcaster(ctx, net.pubsub, n.self, wire.ChannelTopic(n.cfg.Topic, name), n.log); err != nil {
		return nil, err
	}
	ch.bcast.SetAdmit(allow)
	ch.bcast.SetObserve(func(data []byte) {
		s := ch.opened.Load()
		if s == nil {
			return
		}
		if theirs, ep, err := heads.DecodeEpoch(data); err == nil && len(theirs) > 0 && ep.After(s.Epoch()) {
			s.OfferEpoch(ep, theirs)
		}
	})
	ch.gate = heads.NewGate(ch.bcast)
	dag, bs, err := p2p.NewDAGService(n.life.Context(), ch.host, ch.bstore, n.cfg.Store.DAGSyncerTimeout,
		p2p.WithProtocolPrefix(wire.ChannelPrefix(name)), p2p.WithAllow(allow), p2p.WithSmallEngine())
	if err != nil {
		return nil, err
	}
	ch.bitswap = bs
	return dag, nil
}

// startChannelProtocols starts a channel's heads exchange, block sync and
// digests, once its store is open.
func (n *Node) startChannelProtocols(ch *channel) {
	net, name := n.net, ch.name
	allow := func(p peer.ID) bool { return n.peerHolds(p, name) }
	ch.gate.Open()
	ch.blocks = blocksync.New(ch.host, ch.bitswap.Notifying(ch.bstore), ch.store.Heads, n.log,
		blocksync.WithProtocol(channelProtocol(name, "blocks")), blocksync.WithServingSlots(net.servingSlots))
	ch.heads = heads.New(ch.host, heads.Config{Protocol: channelProtocol(name, "heads"), Allow: allow,
		Heads: ch.store.Heads, Epoch: ch.store.Epoch, Interval: n.cfg.SyncInterval,
		Receive: func(ctx context.Context, from peer.ID, payload []byte) { n.receiveIn(ctx, ch, from, payload) }}, n.log)
	ch.digests = digestsync.New(ch.host, ch.store, n.log, digestsync.WithProtocol(channelProtocol(name, "digest")))
	// A first digest reads the whole channel: build it now (record counts,
	// sync --wait), not when the first request asks.
	st := ch.store
	n.life.Go(func(ctx context.Context) {
		if _, err := st.Digest(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("digest", "channel", name, "err", err)
		}
	})
}

// closeChannel stops a channel's protocols, closes its store, then its
// bitswap, in the order Close takes the node's own parts down.
func (n *Node) closeChannel(ch *channel) error {
	var errs []error
	add := func(what string, c interface{ Close() error }) {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("channel %s: %s: %w", ch.name, what, err))
		}
	}
	if ch.heads != nil {
		add("heads exchange", ch.heads)
	}
	if ch.blocks != nil {
		add("block sync", ch.blocks)
	}
	if ch.digests != nil {
		add("digest", ch.digests)
	}
	if ch.bcast != nil {
		add("broadcaster", ch.bcast)
	}
	if ch.store != nil {
		add("store", ch.store)
	}
	if ch.bitswap != nil {
		add("bitswap", ch.bitswap)
	}
	return errors.Join(errs...)
}

// closeChannels closes every channel held (Close, step 3).
func (n *Node) closeChannels() error {
	var errs []error
	for _, ch := range n.chans.all() {
		if n.router != nil {
			n.router.Remove(ch.name)
		}
		n.chans.remove(ch.name)
		errs = append(errs, n.closeChannel(ch))
	}
	return errors.Join(errs...)
}

// peerHolds reports whether peer p may hold channel c: in an open network
// every peer may; in a secured one, offices and the peers granted c.
func (n *Node) peerHolds(p peer.ID, c string) bool {
	if !n.cfg.secured() {
		return true
	}
	return n.store.Granted(n.life.Context(), p.String(), c)
}

// changedIn is a channel store's OnChange.
func (n *Node) changedIn(ch *channel, collection, escapedID string) {
	n.watch.changed(collection, escapedID)
	n.movesChanged(ch.name, collection, escapedID)
	if n.wf != nil {
		n.wf.Changed()
	}
	if n.net == nil || !n.net.up.Load() {
		return
	}
	if ch.heads != nil {
		ch.heads.Changed()
	}
	if n.net.hook != nil {
		n.net.hook.changed(collection, escapedID)
	}
}

// receiveIn is receiveHeads for a channel.
func (n *Node) receiveIn(ctx context.Context, ch *channel, from peer.ID, payload []byte) {
	ch.acks.heard(ctx, from, payload)
	payload = n.catchUpWith(ch.store, ch.bstore, ch.blocks, from, payload)
	if err := ch.bcast.Inject(ctx, from, payload); err != nil {
		n.log.Debug("heads from peer not queued", "peer", from, "channel", ch.name, "err", err)
	}
}
