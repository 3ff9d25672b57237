// Package node is Ferry's daemon: a libp2p host, GossipSub and a heads
// exchange as the go-ds-crdt broadcaster, bitswap as the DAG syncer, the
// dialer that keeps configured peers connected, the embedded store, and the
// local API the CLI talks to.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/blockstore"
	ds "github.com/ipfs/go-datastore"
	badger "github.com/ipfs/go-ds-badger"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/diskfault"
)

// Roles of a node.
const (
	RoleOffice = "office"
	RoleLaptop = "laptop"
)

// IdentityFile is the node's private key inside the data dir.
const IdentityFile = "identity.key"

// Config configures a node. Start from DefaultConfig.
type Config struct {
	// Dir is the data dir: identity key, store, API socket.
	Dir string
	// Name is a human name for this node, shown to peers.
	Name string
	// Role is RoleOffice (the anchor peer) or RoleLaptop.
	Role string
	// ListenAddrs are the libp2p addresses to listen on.
	ListenAddrs []multiaddr.Multiaddr
	// Peers are addresses (ending in /p2p/<id>) to keep connected.
	Peers []multiaddr.Multiaddr
	// Topic is the GossipSub topic of this Ferry network.
	Topic string
	// Offline starts the node without connecting to anyone.
	Offline bool
	// Network false opens only the store and the API: no libp2p at all
	// (the CLI uses this when no node is running).
	Network bool
	// DialMin and DialMax bound the re-dial backoff.
	DialMin, DialMax time.Duration
	// SyncInterval is how often heads are exchanged with every connected
	// peer besides when connections form and heads change (default 30s).
	SyncInterval time.Duration
	// DisableBulkSync leaves catching up to go-ds-crdt's DAG walk over
	// bitswap (for benchmarks against plain go-ds-crdt).
	DisableBulkSync bool
	// MDNS finds nodes of this network (same Topic) on the LAN and connects
	// to them. Off by default: until the network has a shared secret, any
	// Ferry node on the LAN with the same topic would sync with this one.
	MDNS bool
	// PeerExchangeInterval is how often connected peers are asked for
	// their peers (default 30s); laptops learn each other from the office
	// this way and keep syncing directly when it is unreachable.
	PeerExchangeInterval time.Duration
	// SwarmKey, if set, makes the node part of a libp2p private network:
	// only nodes with the same key can connect (TCP only: QUIC cannot carry
	// it). ferry init --office creates one; invitations carry it.
	SwarmKey pnet.PSK
	// Founder is the peer id of the office that created the network. When
	// set, operations are signed and only members' count (crdt.Trust),
	// and only members may use the node's protocols. Empty: an open
	// network, every peer and every operation is accepted.
	Founder string
	// Store holds the crdt options; Writer is filled in from the identity.
	Store crdt.Options
	// DiskReserve is the free space kept on the data dir's filesystem:
	// below it local writes are refused (nil: DefaultDiskReserve).
	DiskReserve *DiskReserve
	// ConflictHook, on an office node, is offered every open conflict.
	ConflictHook *HookConfig
	// Logger receives the node's logs.
	Logger *slog.Logger
}

// DefaultConfig returns a laptop config for dir, listening on every
// interface on random TCP and QUIC ports.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:  dir,
		Role: RoleLaptop,
		ListenAddrs: []multiaddr.Multiaddr{
			multiaddr.StringCast("/ip4/0.0.0.0/tcp/0"),
			multiaddr.StringCast("/ip4/0.0.0.0/udp/0/quic-v1"),
		},
		Topic:   "ferry",
		Network: true,
		DialMin: DefaultDialMin,
		DialMax: DefaultDialMax,

		SyncInterval: 30 * time.Second,
		Store:        crdt.DefaultOptions(),
		Logger:       slog.Default(),
	}
}

func (c *Config) validate() error {
	switch {
	case c.Dir == "":
		return errors.New("no data dir")
	case c.Role != RoleOffice && c.Role != RoleLaptop:
		return fmt.Errorf("role %q: want %s or %s", c.Role, RoleOffice, RoleLaptop)
	case c.Network && c.Topic == "":
		return errors.New("no pubsub topic")
	case c.Logger == nil:
		return errors.New("no logger")
	case c.Founder != "" && !validPeerID(c.Founder):
		return fmt.Errorf("founder %q is not a peer id", c.Founder)
	case c.ConflictHook != nil && c.Role != RoleOffice:
		return errors.New("a conflict hook runs on an office node only")
	case c.ConflictHook != nil && len(c.ConflictHook.Command) == 0 && c.ConflictHook.URL == "":
		return errors.New("conflict hook: give a command or a URL")
	}
	return nil
}

// Node is a running Ferry node.
type Node struct {
	cfg   Config
	log   *slog.Logger
	self  peer.ID
	base  *badger.Datastore
	guard *guardedStore // base, for every write
	store *crdt.Store

	// network parts, nil when Config.Network is false
	host    host.Host // raw, wrapped to admit members only when secured
	raw     host.Host
	invites *inviteBook
	enforce chan struct{}
	refused atomic.Uint64 // streams refused to peers that are not members
	// storeReady is the store once it is open, for libp2p's callbacks.
	storeReady atomic.Pointer[crdt.Store]
	bcast      *Broadcaster
	bitswap    *BitswapHandle
	heads      *HeadSync
	blocks     *BlockSync
	dialer     *Dialer
	discovery  *Discovery

	bstore    blockstore.Blockstore
	dag       ipld.DAGService
	disk      *diskWatch
	fault     *diskfault.Store // set through FaultDiskFullEnv (tests, fault harness)
	acks      *ackTracker
	bandwidth *metrics.BandwidthCounter

	announce  chan struct{} // signalled when heads may have changed
	peerHeads sync.Map      // peer.ID -> []cid.Cid last announced
	hook      *hookRunner   // nil unless a conflict hook is configured

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// started: Start completed. A start that failed keeps the open marker
	// (the store may have been left unclean, or was found unclean).
	started   bool
	closeOnce sync.Once
	closeErr  error
}

// Start opens the store and, with Config.Network, joins the network.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	key, err := LoadOrCreateIdentity(filepath.Join(cfg.Dir, IdentityFile))
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), self: self, ctx: nctx, cancel: cancel,
		announce: make(chan struct{}, 1), enforce: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()

	wait := time.Duration(0)
	if cfg.Network {
		wait = 10 * time.Second // a CLI command may hold the store for a moment
	}
	if n.base, err = openDatastoreWait(ctx, cfg.Dir, wait); err != nil {
		return nil, err
	}
	unclean, err := markOpen(cfg.Dir)
	if err != nil {
		return nil, err
	}
	reserve := DefaultDiskReserve
	if cfg.DiskReserve != nil {
		reserve = *cfg.DiskReserve
	}
	n.disk = newDiskWatch(cfg.Dir, reserve)
	// Every write goes through the guard (see guardedStore): badger's value
	// log must not go on after a write that failed part-way.
	n.guard = newGuardedStore(n.base, n.log)
	var store ds.Batching = n.guard
	if path := os.Getenv(FaultDiskFullEnv); path != "" {
		n.fault = diskfault.Wrap(n.guard)
		n.fault.FullWhileExists(path)
		store = n.fault
		n.log.Warn("fault injection: every write fails while a file exists", "env", FaultDiskFullEnv, "path", path)
	}
	// A block that cannot be written (a full disk) leaves a merge undone:
	// the store is told, so that it knows it needs repair.
	bstore := reportingBlockstore{Blockstore: NewBlockstore(store), failed: func(err error) {
		if st := n.storeReady.Load(); st != nil {
			st.WriteFailed("block", err)
		}
	}}
	n.bstore = bstore
	dag := NewOfflineDAGService(bstore)
	var bcast *Broadcaster
	if cfg.Network {
		if n.invites, err = loadInvites(ctx, n.guard); err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
		n.bandwidth = metrics.NewBandwidthCounter()
		hcfg := HostConfig{Key: key, ListenAddrs: cfg.ListenAddrs, Reporter: n.bandwidth, PSK: cfg.SwarmKey}
		if n.secured() {
			hcfg.Gater = gater{n}
		}
		if n.raw, err = NewHost(hcfg); err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
		n.host = n.raw
		if n.secured() {
			n.host = &memberHost{Host: n.raw, n: n}
		}
		ps, err := NewPubSub(nctx, n.host)
		if err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
		if bcast, err = NewBroadcaster(ctx, ps, self, cfg.Topic, n.log); err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
		n.bcast = bcast
		if n.secured() {
			bcast.SetAdmit(n.admit)
		}
		if dag, n.bitswap, err = NewDAGService(nctx, n.host, bstore, cfg.Store.DAGSyncerTimeout); err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
	}

	sopts := cfg.Store
	sopts.Writer = self.String()
	sopts.Logger = n.log
	sopts.Recover = unclean
	sopts.CheckRoom = n.disk.checkRoom
	sopts.HasBlock = bstore.Has
	if n.secured() {
		sopts.Trust = newTrust(key, cfg.Founder)
	}
	if cfg.Network && cfg.ConflictHook != nil {
		n.hook = newHookRunner(n, *cfg.ConflictHook)
	}
	if onChange := sopts.OnChange; cfg.Network {
		sopts.OnChange = func(collection, escapedID string) {
			n.headsChanged()
			if collection == crdt.MembersCollection {
				n.membershipChanged()
			}
			if n.hook != nil {
				n.hook.changed(collection, escapedID)
			}
			if onChange != nil {
				onChange(collection, escapedID)
			}
		}
	}
	var gate *gatedBroadcaster
	if bcast != nil {
		gate = newGatedBroadcaster(bcast)
		n.store, err = crdt.New(ctx, store, dag, gate, sopts)
	} else {
		n.store, err = crdt.New(ctx, store, dag, nil, sopts)
	}
	n.dag = dag
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	n.storeReady.Store(n.store)
	if unclean || n.store.Stats(ctx).Dirty {
		n.log.Warn("store was not closed cleanly, or a merge failed: re-walking the DAG")
	}
	n.wg.Add(1)
	go n.repairLoop(unclean || n.store.Stats(ctx).Dirty)
	n.acks = newAckTracker(ctx, n, bstore)
	if cfg.Network {
		if err := n.store.SetNodeInfo(ctx, cfg.Name, cfg.Role); err != nil {
			// On a full disk a node that has written before still starts
			// (to be read, and to merge once there is room); a node that
			// never wrote must not open its gate without a head of its own.
			if !errors.Is(err, crdt.ErrNotWritten) || len(n.store.Stats(ctx).Heads) == 0 {
				return nil, fmt.Errorf("start node: %w", err)
			}
			n.log.Warn("could not record this node's name and role; starting anyway", "err", err)
		}
		gate.Open()
		// Blocks fetched in bulk are announced to bitswap: a peer may be
		// waiting for one of them already (its GossipSub message overtook us).
		n.blocks = NewBlockSync(n.host, notifyingBlockstore{Blockstore: bstore, bitswap: n.bitswap}, n.store.Heads, n.log)
		n.heads = NewHeadSync(n.host, n.store.Heads, func(ctx context.Context, from peer.ID, payload []byte) {
			n.acks.heard(ctx, from, payload)
			payload = n.catchUp(from, payload)
			if heads, err := ValidateHeadsPayload(payload); err == nil {
				n.peerHeads.Store(from, heads)
			}
			if err := bcast.Inject(ctx, from, payload); err != nil {
				n.log.Debug("heads from peer not queued", "peer", from, "err", err)
			}
		}, n.log)
		if n.dialer, err = NewDialer(n.host, DialerConfig{Peers: cfg.Peers, Min: cfg.DialMin, Max: cfg.DialMax}, n.log); err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
		if cfg.Offline {
			n.dialer.SetOffline(true)
		}
		dcfg := DiscoveryConfig{MDNS: cfg.MDNS, Topic: cfg.Topic, ExchangeInterval: cfg.PeerExchangeInterval}
		if n.discovery, err = NewDiscovery(n.host, dcfg, n.dialer.Offline, n.log); err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
		n.host.SetStreamHandler(DigestProtocol, n.handleDigest)
		n.host.SetStreamHandler(SnapshotProtocol, n.handleSnapshot)
		if n.secured() {
			if cfg.Role == RoleOffice {
				n.raw.SetStreamHandler(JoinProtocol, n.handleJoin)
			}
			n.wg.Add(1)
			go n.enforceLoop()
		}
		n.wg.Add(1)
		go func() { // a first digest reads the whole store: build it now
			defer n.wg.Done()
			if _, err := n.store.Digest(n.ctx); err != nil && n.ctx.Err() == nil {
				n.log.Warn("digest", "err", err)
			}
		}()
		n.wg.Add(1)
		go n.announceLoop()
		if cfg.SyncInterval > 0 {
			n.wg.Add(1)
			go n.syncLoop(cfg.SyncInterval)
		}
		if n.hook != nil {
			n.wg.Add(1)
			go n.hook.run()
		}
		n.log.Info("node started", "peer", self, "role", cfg.Role, "addrs", n.Addrs())
	}
	n.started = true
	return n, nil
}

// Close shuts the node down, outside-in: discovery, dialer, heads exchange
// and block sync (no new sync), broadcaster (so go-ds-crdt's receive loop returns), crdt store,
// bitswap, host, datastore; last, the open marker goes, recording a clean
// shutdown. Safe to call twice.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		add := func(what string, err error) {
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
			}
		}
		// A merge cut short by this shutdown (blocks queued, or a failed
		// fetch) leaves go-ds-crdt's walk half done: keep the open marker,
		// so that the next start recovers and repairs as after a crash.
		interrupted := false
		if n.store != nil {
			st := n.store.Stats(n.ctx)
			interrupted = st.QueuedJobs > 0 || st.Dirty
		}
		n.cancel()
		if n.host != nil {
			n.host.RemoveStreamHandler(DigestProtocol)
			n.host.RemoveStreamHandler(SnapshotProtocol)
			n.raw.RemoveStreamHandler(JoinProtocol)
		}
		if n.discovery != nil {
			add("discovery", n.discovery.Close())
		}
		if n.dialer != nil {
			add("dialer", n.dialer.Close())
		}
		if n.heads != nil {
			add("heads exchange", n.heads.Close())
		}
		if n.blocks != nil {
			add("block sync", n.blocks.Close())
		}
		if n.bcast != nil {
			add("broadcaster", n.bcast.Close())
		}
		n.wg.Wait()
		if n.store != nil {
			add("store", n.store.Close())
		}
		if n.bitswap != nil {
			add("bitswap", n.bitswap.Close())
		}
		if n.host != nil {
			add("host", n.host.Close())
		}
		if n.base != nil {
			add("datastore", n.base.Close())
			if interrupted {
				n.log.Warn("closed during a merge: the next start re-walks the DAG")
			}
			if len(errs) == 0 && !interrupted && n.started {
				add("marker", markClosed(n.cfg.Dir))
			}
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// Store returns the node's record store.
func (n *Node) Store() *crdt.Store { return n.store }

// ID returns the node's peer id.
func (n *Node) ID() peer.ID { return n.self }

// Host returns the libp2p host (nil without network).
func (n *Node) Host() host.Host { return n.host }

// Config returns the node's configuration.
func (n *Node) Config() Config { return n.cfg }

// Addrs returns the node's full listen addresses (with /p2p/<id>).
func (n *Node) Addrs() []multiaddr.Multiaddr {
	if n.host == nil {
		return nil
	}
	p2p, _ := multiaddr.NewComponent("p2p", n.self.String())
	var out []multiaddr.Multiaddr
	for _, a := range n.host.Addrs() {
		out = append(out, a.Encapsulate(p2p))
	}
	return out
}

// SetOffline takes the node off the network (all connections closed, no
// dialing) or back on; coming back, configured peers are dialed at once and
// heads are exchanged on every new connection.
func (n *Node) SetOffline(offline bool) error {
	if n.dialer == nil {
		return errNoNode
	}
	n.dialer.SetOffline(offline)
	return nil
}

// Offline reports whether the node is offline.
func (n *Node) Offline() bool { return n.dialer == nil || n.dialer.Offline() }

// PeerInfo describes a peer this node knows.
type PeerInfo struct {
	ID         string   `json:"peer_id"`
	Name       string   `json:"name,omitempty"`
	Role       string   `json:"role,omitempty"`
	Addrs      []string `json:"addrs,omitempty"`
	Connected  bool     `json:"connected"`
	Configured bool     `json:"configured"`
	// Learned: found through peer exchange or mDNS.
	Learned  bool      `json:"learned,omitempty"`
	LastSync time.Time `json:"last_sync,omitzero"`
}

// Peers lists configured, connected and known peers (those that wrote their
// name into the replicated _nodes collection), sorted by id.
func (n *Node) Peers(ctx context.Context) ([]PeerInfo, error) {
	byID := map[string]*PeerInfo{}
	get := func(id string) *PeerInfo {
		if p := byID[id]; p != nil {
			return p
		}
		p := &PeerInfo{ID: id}
		byID[id] = p
		return p
	}
	err := n.store.List(ctx, crdt.NodesCollection, func(r *crdt.Record) error {
		if r.ID == n.self.String() {
			return nil
		}
		p := get(r.ID)
		p.Name, _ = r.Fields["name"].Value.(string)
		p.Role, _ = r.Fields["role"].Value.(string)
		if id, err := peer.Decode(r.ID); err == nil && n.secured() {
			p.Role = n.roleOf(ctx, id) // the membership's, not what it says
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	for _, a := range n.cfg.Peers {
		if info, err := peer.AddrInfoFromP2pAddr(a); err == nil && info.ID != n.self {
			get(info.ID.String()).Configured = true
		}
	}
	if n.discovery != nil {
		for _, i := range n.discovery.Learned() {
			get(i.ID.String()).Learned = true
		}
	}
	if n.host != nil {
		for _, id := range n.host.Network().Peers() {
			get(id.String()).Connected = true
		}
		for id, p := range byID {
			pid, err := peer.Decode(id)
			if err != nil {
				continue
			}
			for _, a := range n.host.Peerstore().Addrs(pid) {
				p.Addrs = append(p.Addrs, a.String())
			}
			if t, ok := n.heads.LastExchange(pid); ok {
				p.LastSync = t
			}
		}
	}
	out := make([]PeerInfo, 0, len(byID))
	for _, p := range byID {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Status is what `ferry status` shows.
type Status struct {
	PeerID         string   `json:"peer_id"`
	Name           string   `json:"name,omitempty"`
	Role           string   `json:"role"`
	Dir            string   `json:"dir"`
	Running        bool     `json:"running"`
	Online         bool     `json:"online"`
	ListenAddrs    []string `json:"listen_addrs"`
	ConnectedPeers int      `json:"connected_peers"`
	Heads          []string `json:"heads"`
	DAGHeight      uint64   `json:"dag_height"`
	Dirty          bool     `json:"dirty"`
	// RepairReason says why the store needs repair (a failed merge or
	// write; empty when only go-ds-crdt's dirty bit says so). The node
	// repairs itself as soon as it can (see repairLoop).
	RepairReason string `json:"repair_reason,omitempty"`
	// FailedWrites counts writes to the store that failed since start.
	FailedWrites uint64 `json:"failed_writes"`
	// Disk is the free space of the data dir's filesystem and the reserve
	// under which local writes are refused.
	Disk         *DiskSpace `json:"disk,omitempty"`
	QueuedJobs   int        `json:"queued_jobs"`
	MalformedOps uint64     `json:"malformed_ops"`
	// Digest is the hash of the visible state: equal on two nodes that show
	// the same records and conflicts.
	Digest string `json:"digest"`
	// DigestPending: the digest is being computed (a first build reads
	// the whole store); ask again.
	DigestPending bool `json:"digest_pending,omitempty"`
	// Unacked: local edits no office node holds yet (absent without network).
	Unacked *Unacked `json:"unacked,omitempty"`
	// BlocksFetched counts DAG blocks received in bulk catch-ups since start.
	BlocksFetched int64 `json:"blocks_fetched"`
	// CatchUp is the bulk catch-up in progress, if any.
	CatchUp *CatchUp `json:"catch_up,omitempty"`
	// Secured: the network has a founder (signed operations, members only);
	// Private: it has a swarm key.
	Secured bool   `json:"secured"`
	Private bool   `json:"private_network"`
	Founder string `json:"founder,omitempty"`
	// Member: this node is a current member (absent in an open network).
	Member *bool `json:"member,omitempty"`
	// IgnoredOps counts operations not shown because they failed the trust
	// checks; Ignored details them (computed with the digest: absent while
	// it is pending or without a running node).
	IgnoredOps int           `json:"ignored_ops"`
	Ignored    []IgnoredJSON `json:"ignored,omitempty"`
	// RefusedStreams counts protocol streams refused to non-members.
	RefusedStreams uint64 `json:"refused_streams"`
}

// CatchUp is a bulk fetch of missing blocks in progress.
type CatchUp struct {
	Peer      string `json:"peer_id"`
	Blocks    int    `json:"blocks"`
	Remaining int    `json:"remaining"`
	Bytes     int64  `json:"bytes"`
}

// Status reports the node's identity, network and replication state.
func (n *Node) Status(ctx context.Context) Status {
	st := n.store.Stats(ctx)
	s := Status{
		PeerID:       n.self.String(),
		Name:         n.cfg.Name,
		Role:         n.cfg.Role,
		Dir:          n.cfg.Dir,
		Running:      n.host != nil,
		Online:       n.host != nil && !n.Offline(),
		ListenAddrs:  []string{},
		Heads:        make([]string, len(st.Heads)),
		DAGHeight:    st.MaxHeight,
		Dirty:        st.Dirty,
		RepairReason: st.RepairReason,
		FailedWrites: st.FailedWrites,
		QueuedJobs:   st.QueuedJobs,
		MalformedOps: st.Malformed,
	}
	if sp, err := n.disk.space(); err == nil {
		s.Disk = &sp
	}
	for i, h := range st.Heads {
		s.Heads[i] = h.String()
	}
	if n.blocks != nil {
		bs := n.blocks.Stats()
		s.BlocksFetched = bs.FetchedBlocks
		if bs.InProgress {
			s.CatchUp = &CatchUp{Peer: bs.Peer.String(), Blocks: bs.Current.Blocks,
				Remaining: max(0, bs.Current.Total-bs.Current.Blocks), Bytes: bs.Current.Bytes}
		}
	}
	if n.acks != nil {
		if u, err := n.acks.unacked(ctx); err == nil {
			s.Unacked = &u
		} else {
			n.log.Warn("status: unacknowledged edits", "err", err)
		}
	}
	// Without a running node (a CLI command opened the store) the digest is
	// not computed: a first one reads the whole store.
	if n.host != nil {
		switch d, ok, err := n.store.TryDigest(ctx); {
		case err != nil:
			n.log.Warn("status: digest", "err", err)
		case ok:
			s.Digest = d.String()
			s.ignored(ctx, n)
		default:
			s.DigestPending = true
		}
	}
	sort.Strings(s.Heads)
	s.Secured, s.Private, s.Founder = n.secured(), n.cfg.SwarmKey != nil, n.cfg.Founder
	s.RefusedStreams = n.refused.Load()
	if n.secured() {
		m := n.store.IsCurrentMember(ctx, n.self.String())
		s.Member = &m
	}
	for _, a := range n.Addrs() {
		s.ListenAddrs = append(s.ListenAddrs, a.String())
	}
	if n.host != nil {
		s.ConnectedPeers = len(n.host.Network().Peers())
	}
	return s
}

// ignored fills in the ignored operations (the digest is up to date).
func (s *Status) ignored(ctx context.Context, n *Node) {
	ig, err := n.store.Ignored(ctx)
	if err != nil {
		n.log.Warn("status: ignored operations", "err", err)
		return
	}
	s.IgnoredOps = len(ig)
	if len(ig) > 0 {
		s.Ignored = toIgnoredJSON(ig)
	}
}

func validPeerID(s string) bool {
	_, err := peer.Decode(s)
	return err == nil
}

// DirExists reports whether dir holds an initialised node (identity key).
func DirExists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, IdentityFile))
	return err == nil
}
