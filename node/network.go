package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ipfs/boxo/blockstore"
	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/blocksync"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/digestsync"
	"github.com/ferry-crm/ferry/node/enrol"
	"github.com/ferry-crm/ferry/node/handover"
	"github.com/ferry-crm/ferry/node/heads"
	"github.com/ferry-crm/ferry/node/p2p"
	"github.com/ferry-crm/ferry/node/peering"
	"github.com/ferry-crm/ferry/node/snapshot"
	"github.com/ferry-crm/ferry/node/wire"
)

// servingSlots is how many block-sync requests a node serves at once,
// over the everyone store and every channel (a catch-up of one channel
// by one laptop takes one).
const servingSlots = 8

// netParts is a node's part of the network: the transport go-ds-crdt needs
// (host, GossipSub broadcaster, bitswap) and Ferry's protocols on it.
type netParts struct {
	raw  host.Host // the libp2p host; only enrolment is served on it
	host host.Host // raw, admitting members only when the network is secured
	book *enrol.Book
	// admission is nil in an open network: every peer is admitted.
	admission *enrol.Admission
	bandwidth *metrics.BandwidthCounter

	pubsub  *pubsub.PubSub     // GossipSub, every topic: the everyone store's and each channel's
	topics  *heads.TopicGate   // a channel's topic only to and from peers that may hold it
	bcast   *heads.Broadcaster // GossipSub: go-ds-crdt's own announcements
	gate    *heads.Gate        // holds go-ds-crdt's receive loop until the store is ready
	bitswap *p2p.Bitswap

	heads     *heads.Service        // heads exchange: on connect, on change, periodic, sync-now
	formats   *heads.FormatDetector // peers of another store format (not synced with)
	blocks    *blocksync.Syncer     // bulk catch-up of missing blocks
	peering   *peering.Peering      // configured, learned and mDNS peers; offline mode
	digests   *digestsync.Service   // visible-state comparison (ferry sync, diff)
	snapshots *snapshot.Server      // clean-sync copies
	office    *enrol.Office         // redeems invitations (office nodes of a secured network)
	handover  *handover.Server      // takes the edits of laptops leaving a channel (offices)
	hook      *hookRunner           // the office's conflict hook, if configured
	// servingSlots bounds the block-sync requests served at once, over
	// every store's syncer.
	servingSlots *blocksync.Slots
	// grantsSeen is, per connected peer, the channels it may hold as last
	// enforced (see enforceChannels).
	grantsMu   sync.Mutex
	grantsSeen map[peer.ID]string
	// enforce is what enforceChannels does (set by startTransport).
	enforce func()
	// up: every protocol above is set (the store's merge hooks read them).
	up atomic.Bool
}

// startTransport builds the host, GossipSub broadcaster and bitswap: what
// the crdt store is opened over.
func (n *Node) startTransport(ctx context.Context) (*netParts, error) {
	cfg := n.cfg
	net := &netParts{bandwidth: metrics.NewBandwidthCounter()}
	var err error
	if net.book, err = enrol.LoadBook(ctx, n.guard); err != nil {
		return net, err
	}
	hcfg := p2p.HostConfig{Key: n.key, ListenAddrs: cfg.ListenAddrs, Reporter: net.bandwidth, PSK: cfg.SwarmKey}
	if cfg.secured() {
		net.admission = enrol.NewAdmission(n.self, cfg.Founder, cfg.Peers, net.book, n.log)
		hcfg.Gater = net.admission.Gater()
	}
	if net.raw, err = p2p.NewHost(hcfg); err != nil {
		return net, err
	}
	net.host = net.raw
	if net.admission != nil {
		net.host = net.admission.Host(net.raw)
	}
	everyone := wire.Topic(cfg.Topic)
	channelTopics := wire.ChannelTopic(cfg.Topic, "")
	net.topics = heads.NewTopicGate(func(p peer.ID, topic string) bool {
		c, ok := strings.CutPrefix(topic, channelTopics)
		if !ok {
			return topic == everyone
		}
		return n.storeReady.Load() != nil && n.peerHolds(p, c)
	}, func(topic string) bool {
		return topic == everyone || strings.HasPrefix(topic, channelTopics)
	})
	ps, err := heads.NewPubSub(n.life.Context(), net.host, net.topics.Options()...)
	if err != nil {
		return net, err
	}
	net.pubsub = ps
	net.servingSlots = blocksync.NewSlots(servingSlots)
	net.grantsSeen = map[peer.ID]string{}
	net.enforce = func() { n.enforceGrants() }
	// The topic carries the store format: announcements of another format
	// are never mixed in (cfg.Topic, as configured, still names the network
	// for mDNS and enrolment, so nodes of another format are found and told).
	if net.bcast, err = heads.NewBroadcaster(ctx, ps, n.self, wire.Topic(cfg.Topic), n.log); err != nil {
		return net, err
	}
	if net.admission != nil {
		net.bcast.SetAdmit(net.admission.Admit)
	}
	// A later epoch is offered to the store as soon as heads of it arrive,
	// whatever go-ds-crdt is doing with the queue.
	net.bcast.SetObserve(func(data []byte) {
		if theirs, ep, err := heads.DecodeEpoch(data); err == nil && len(theirs) > 0 && ep.After(n.store.Epoch()) {
			n.store.OfferEpoch(ep, theirs)
		}
	})
	net.gate = heads.NewGate(net.bcast)
	if n.dag, net.bitswap, err = p2p.NewDAGService(n.life.Context(), net.host, n.bstore, cfg.Store.DAGSyncerTimeout); err != nil {
		return net, err
	}
	return net, nil
}

// startProtocols opens the gate to go-ds-crdt and starts Ferry's
// protocols, once the store is open.
func (n *Node) startProtocols(ctx context.Context) error {
	cfg, net := n.cfg, n.net
	if net.admission != nil {
		net.admission.SetStore(n.store)
	}
	if err := n.recordNodeInfo(ctx); err != nil {
		return err
	}
	net.gate.Open()
	// Blocks fetched in bulk are announced to bitswap: a peer may be
	// waiting for one of them already (its GossipSub message overtook us).
	net.blocks = blocksync.New(net.host, net.bitswap.Notifying(n.bstore), n.store.Heads, n.log, blocksync.WithServingSlots(net.servingSlots))
	var err error
	name := func(p peer.ID) string { return n.Names(n.life.Context())[p.String()].Name }
	if net.formats, err = heads.NewFormatDetector(net.host, name, n.log); err != nil {
		return err
	}
	net.heads = heads.New(net.host, heads.Config{Heads: n.store.Heads, Epoch: n.store.Epoch, Receive: n.receiveHeads, Interval: cfg.SyncInterval,
		Formats: net.formats}, n.log)
	pcfg := peering.Config{Peers: cfg.Peers, DialMin: cfg.DialMin, DialMax: cfg.DialMax, MDNS: cfg.MDNS, Topic: cfg.Topic,
		ExchangeInterval: cfg.PeerExchangeInterval, Share: heads.Protocol, Offline: cfg.Offline}
	if net.peering, err = peering.New(net.host, pcfg, n.log); err != nil {
		return err
	}
	net.digests = digestsync.New(net.host, n.store, n.log)
	net.snapshots = snapshot.NewServer(net.host, n.base, cfg.snapshotLayout(), n.log)
	// A clean sync copies the channels the requester may hold, of those
	// held here.
	net.snapshots.SetExtra(func(p peer.ID) []string {
		var out []string
		for _, ch := range n.chans.all() {
			if n.peerHolds(p, ch.name) {
				out = append(out, channelsRoot.ChildString(ch.name).String()+"/")
			}
		}
		return out
	})
	if net.admission != nil {
		if cfg.Role == RoleOffice {
			net.office = enrol.NewOffice(net.raw, net.book, n.store.AddMember, n.log)
		}
		net.admission.Enforce(net.raw)
	}
	// A first digest reads the whole store: build it now, not when the
	// first `ferry status` asks.
	n.life.Go(func(ctx context.Context) {
		if _, err := n.store.Digest(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("digest", "err", err)
		}
	})
	if cfg.ConflictHook != nil {
		net.hook = newHookRunner(n, *cfg.ConflictHook)
		n.life.Go(net.hook.run)
	}
	if n.wf != nil {
		n.life.Go(n.wf.Run)
	}
	if cfg.Role == RoleOffice {
		net.handover = handover.NewServer(net.host, handOverReceiver{n}, n.log)
		n.life.Go(n.moveLoop)
	}
	n.life.Go(n.channelLoop)
	if cfg.Role == RoleOffice && (cfg.CompactEvery > 0 || cfg.CompactRatio > 0) {
		n.life.Go(n.compactLoop)
	}
	net.up.Store(true)
	return nil
}

// snapshotLayout is what a clean-sync snapshot carries: go-ds-crdt's
// namespaces (every epoch's: "/ferry/crdt" and "/ferry/crdt-<epoch>"), the
// epoch keys (which one is current, which are being dropped), the history
// archive and the blockstore, all read in one transaction: the copy opens
// in the epoch the office was in, and drops what the office was dropping.
func (c *Config) snapshotLayout() snapshot.Layout {
	return snapshot.Layout{
		Prefixes: []string{c.Store.Namespace.String() + "/", c.Store.Namespace.String() + "-", crdt.EpochRoot, crdt.HistoryRoot,
			datadir.BlockNamespace.String() + "/"},
		Blocks:        datadir.BlockNamespace.Child(blockstore.BlockPrefix).String() + "/",
		Channels:      channelsRoot.String() + "/",
		ChannelBlocks: ds.NewKey("blocks").Child(blockstore.BlockPrefix).String()[1:] + "/",
	}
}

// enforceChannels closes the connection of every peer whose grants changed
// since they were last enforced: GossipSub filters a peer's subscriptions
// only when they arrive, and bitswap keeps its streams open, so a peer must
// connect again to be filtered by its new grants (peering dials again at
// once; revocation does the same).
func (net *netParts) enforceChannels() {
	if net.enforce != nil {
		net.enforce()
	}
}

func (n *Node) enforceGrants() {
	if !n.cfg.secured() || n.storeReady.Load() == nil {
		return
	}
	ctx := n.life.Context()
	g, err := n.store.Grants(ctx)
	if err != nil {
		return
	}
	net := n.net
	net.grantsMu.Lock()
	defer net.grantsMu.Unlock()
	seen := map[peer.ID]string{}
	for _, p := range net.host.Network().Peers() {
		sig := n.roleOf(ctx, p) + ":" + strings.Join(g.Current(p.String()), ",")
		seen[p] = sig
		if prev, ok := net.grantsSeen[p]; ok && prev != sig {
			n.log.Info("grants of a peer changed: reconnecting", "peer", p, "was", prev, "now", sig)
			_ = net.host.Network().ClosePeer(p)
		}
	}
	net.grantsSeen = seen
}

// closeProtocols stops what talks to peers, outside-in: no new
// connections (peering), no new sync (heads, block sync), the request
// servers, then the broadcaster, so that go-ds-crdt's receive loop
// returns before the store closes.
func (net *netParts) closeProtocols() error {
	var errs []error
	add := func(what string, c interface{ Close() error }) {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	if net.peering != nil {
		add("peering", net.peering)
	}
	if net.heads != nil {
		add("heads exchange", net.heads)
	}
	if net.formats != nil {
		add("store format detector", net.formats)
	}
	if net.blocks != nil {
		add("block sync", net.blocks)
	}
	if net.digests != nil {
		add("digest", net.digests)
	}
	if net.snapshots != nil {
		add("snapshot", net.snapshots)
	}
	if net.office != nil {
		add("enrolment", net.office)
	}
	if net.handover != nil {
		add("hand-over", net.handover)
	}
	if net.admission != nil {
		add("admission", net.admission)
	}
	if net.bcast != nil {
		add("broadcaster", net.bcast)
	}
	return errors.Join(errs...)
}

// closeTransport stops bitswap, then the host (after the store).
func (net *netParts) closeTransport() error {
	var errs []error
	if net.bitswap != nil {
		if err := net.bitswap.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bitswap: %w", err))
		}
	}
	if net.raw != nil {
		if err := net.raw.Close(); err != nil {
			errs = append(errs, fmt.Errorf("host: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Host returns the libp2p host (nil without network).
func (n *Node) Host() host.Host {
	if n.net == nil {
		return nil
	}
	return n.net.host
}

// SetOffline takes the node off the network (all connections closed, no
// dialing) or back on; coming back, configured and learned peers are
// dialed at once and heads are exchanged on every new connection.
func (n *Node) SetOffline(offline bool) error {
	if !n.netUp() {
		return errNoNetwork
	}
	n.net.peering.SetOffline(offline)
	return nil
}

// Offline reports whether the node is offline (always, without network).
func (n *Node) Offline() bool { return !n.netUp() || n.net.peering.Offline() }

// netUp reports whether the node's protocols are up (a node opened with
// network is still starting before: the repair loop may already run).
func (n *Node) netUp() bool { return n.net != nil && n.net.up.Load() }

// IncompatiblePeers lists the peers that run another store format than
// this node (nothing replicated is exchanged with them), sorted by peer id;
// each one's Reason names both formats and which node to upgrade. Nil
// without network.
func (n *Node) IncompatiblePeers() []heads.Incompatible {
	if !n.netUp() {
		return nil
	}
	return n.net.formats.Incompatible()
}
