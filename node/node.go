// Package node is Ferry's daemon, and the composition root of its parts:
// it opens the data dir (node/datadir) and the record store (crdt), joins
// the network (node/p2p, node/heads, node/blocksync, node/peering,
// node/digestsync, node/snapshot, node/enrol) and serves the local API
// (node/api). docs/ARCHITECTURE.md draws the packages and walks a field
// edit through them.
//
// A Go program embeds Ferry with Open (a data dir made by `ferry init`, or
// by Init) or Start (a Config), and talks to a running node with
// api.Dial.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/blockstore"
	badger "github.com/ipfs/go-ds-badger"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/diskfault"
	"github.com/ferry-crm/ferry/internal/lifecycle"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/disk"
	"github.com/ferry-crm/ferry/node/peering"
	"github.com/ferry-crm/ferry/node/workflow"
)

// Roles of a node.
const (
	RoleOffice = crdt.RoleOffice
	RoleLaptop = crdt.RoleLaptop
)

// Config configures a node. Start from DefaultConfig (or TestConfig in
// tests); each field says its default.
type Config struct {
	// Dir is the data dir (see package datadir). Required.
	Dir string
	// Name is a human name for this node, shown to peers. Default empty.
	Name string
	// Role is RoleOffice (the anchor peer) or RoleLaptop (default).
	Role string
	// ListenAddrs are the libp2p addresses to listen on. Default: every
	// interface, a random TCP port and a random QUIC port.
	ListenAddrs []multiaddr.Multiaddr
	// Peers are addresses (ending in /p2p/<id>) to keep connected.
	Peers []multiaddr.Multiaddr
	// Topic is the GossipSub topic of this Ferry network (default "ferry").
	Topic string
	// Offline starts the node without connecting to anyone.
	Offline bool
	// Network false opens only the store and the API: no libp2p at all
	// (the CLI uses this when no node is running). Default true.
	Network bool
	// DialMin and DialMax bound the re-dial backoff of configured peers
	// (default peering.DefaultDialMin, peering.DefaultDialMax).
	DialMin, DialMax time.Duration
	// SyncInterval is how often heads are exchanged with every connected
	// peer besides when connections form and heads change (default 30s;
	// 0: never).
	SyncInterval time.Duration
	// DisableBulkSync leaves catching up to go-ds-crdt's DAG walk over
	// bitswap (for benchmarks against plain go-ds-crdt). Default false.
	DisableBulkSync bool
	// MDNS finds nodes of this network (same Topic) on the LAN and connects
	// to them. Off by default: in an open network any Ferry node on the LAN
	// with the same topic would sync with this one.
	MDNS bool
	// PeerExchangeInterval is how often connected peers are asked for
	// their peers (default peering.DefaultExchangeInterval, 30s): laptops
	// learn each other from the office and keep syncing directly when it
	// is unreachable.
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
	// Store holds the crdt options (default crdt.DefaultOptions()); Writer,
	// Logger, Recover, CheckRoom, HasBlock and Trust are set by the node.
	Store crdt.Options
	// DiskReserve is the free space kept on the data dir's filesystem:
	// below it local writes are refused (nil: disk.DefaultReserve).
	DiskReserve *disk.Reserve
	// MemoryLimit is the Go soft memory limit, in bytes, that Start sets
	// for the whole process (runtime/debug.SetMemoryLimit): Go keeps the
	// memory an import churned through unless a limit makes it give it
	// back. Default DefaultMemoryLimit; 0 leaves the process's limit as it
	// is. GOMEMLIMIT in the environment wins over both.
	MemoryLimit int64
	// ConflictHook, on an office node, is offered every open conflict.
	ConflictHook *HookConfig
	// Workflows, on an office node, act on merged changes
	// (docs/workflows.md).
	Workflows []workflow.Rule
	// Channels, on a laptop, narrows the channels it takes offline to
	// these, within its grants (`ferry subscribe`); nil takes every channel
	// granted. Offices hold every channel.
	Channels []string
	// AllowDuplicates: puts and imports through the API write likely
	// duplicates instead of refusing them (docs/duplicates.md).
	AllowDuplicates bool
	// CompactEvery and CompactRatio are an office's compaction policy: a
	// new epoch once the current one is older than CompactEvery, or once
	// its history holds CompactRatio writes per visible one (0: never).
	// CompactCheck is how often the policy is checked (default
	// DefaultCompactCheck).
	CompactEvery time.Duration
	CompactRatio float64
	CompactCheck time.Duration
	// compactMinWrites: the ratio policy leaves epochs with fewer writes
	// alone (default minCompactWrites; tests lower it).
	compactMinWrites int
	// Logger receives the node's logs (default slog.Default()).
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
		DialMin: peering.DefaultDialMin,
		DialMax: peering.DefaultDialMax,

		SyncInterval: 30 * time.Second,
		Store:        crdt.DefaultOptions(),
		MemoryLimit:  DefaultMemoryLimit,
		Logger:       slog.Default(),
	}
}

// TestConfig is DefaultConfig for tests: loopback TCP only, no mDNS, and
// the timers a test would otherwise wait on short (re-dials from 50 ms,
// peer exchange every 200 ms). The periodic heads exchange keeps its 30 s,
// so that a test of the exchanges on connect and on change is not passed
// by it. The process's memory limit is left alone: a test process runs
// many nodes at once.
func TestConfig(dir string) Config {
	cfg := DefaultConfig(dir)
	cfg.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.DialMin, cfg.DialMax = 50*time.Millisecond, 500*time.Millisecond
	cfg.PeerExchangeInterval = 200 * time.Millisecond
	cfg.MDNS = false
	cfg.MemoryLimit = 0
	return cfg
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
	case len(c.Workflows) > 0 && c.Role != RoleOffice:
		return errors.New("workflows run on an office node only")
	case c.Role == RoleOffice && c.Channels != nil:
		return errors.New("an office holds every channel: taking some offline (channels:) is for laptops")
	case c.MemoryLimit < 0:
		return fmt.Errorf("memory limit %d: want bytes, or 0 for none", c.MemoryLimit)
	}
	return nil
}

// secured reports whether the network has members (a founder): in an open
// network (tests, old data dirs) every peer and operation is accepted.
func (c *Config) secured() bool { return c.Founder != "" }

// Node is a running Ferry node: a store, and with Config.Network its part
// of the network (net).
type Node struct {
	cfg  Config
	log  *slog.Logger
	key  crypto.PrivKey
	self peer.ID
	life *lifecycle.Group // the node's own loops: repair, hook, first digest

	// storage, outside-in: base is badger; every write goes through guard
	// (and fault, when injected); bstore holds the DAG's blocks under it;
	// gc reclaims badger's value log, through guard.
	base   *badger.Datastore
	guard  *datadir.Guard
	gc     *datadir.GC
	fault  *diskfault.Store // set through disk.FaultFullEnv (tests, fault harness)
	disk   *disk.Watch
	bstore blockstore.Blockstore
	dag    ipld.DAGService
	store  *crdt.Store // the everyone store
	// router reads and writes records in the everyone store and the
	// channels held (chans).
	router *crdt.Router
	chans  channelSet
	moves  moveQueue // records an office moves to their channel
	// subMu guards cfg.Channels (ferry subscribe changes it).
	subMu sync.Mutex
	// unclean: the last run did not close cleanly (every store recovers).
	unclean bool
	// storeReady is store once open, for callbacks that may run before.
	storeReady atomic.Pointer[crdt.Store]
	acks       *ackTracker
	names      nameCache
	watch      watchers
	wf         *workflow.Engine // nil without workflows

	net *netParts // nil without Config.Network

	// started: Start completed. A start that failed keeps the open marker
	// (the store may have been left unclean, or was found unclean).
	started   bool
	closeOnce sync.Once
	closeErr  error
}

// Start opens the store and, with Config.Network, joins the network. The
// parts come up inside-out: data dir and store, then the network's
// transport (host, GossipSub, bitswap) that go-ds-crdt needs, then the
// crdt store, then Ferry's protocols; Close takes them down outside-in.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	key, err := datadir.LoadOrCreateIdentity(filepath.Join(cfg.Dir, datadir.IdentityFile))
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), key: key, self: self, life: lifecycle.New()}
	n.chans.wake = make(chan struct{}, 1)
	n.moves.wake = make(chan struct{}, 1)
	applyMemoryLimit(cfg.MemoryLimit, n.log)
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	unclean, err := n.openDataDir(ctx)
	if err != nil {
		return nil, err
	}
	// Value-log GC writes too: through the guard, and only with room.
	n.gc = datadir.StartGC(n.guard, cfg.Dir, datadir.GCOptions{Room: n.disk.CheckRoom, Logger: n.log})
	if cfg.Network {
		if n.net, err = n.startTransport(ctx); err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
	}
	if err := n.openStore(ctx, unclean); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	if err := n.resumePurges(ctx); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	if err := n.noteChannelsOnDisk(ctx); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	if err := n.reconcileChannels(ctx); err != nil {
		n.log.Warn("channels", "err", err)
	}
	if err := n.openWorkflows(); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	if n.net != nil {
		if err := n.startProtocols(ctx); err != nil {
			return nil, fmt.Errorf("start node: %w", err)
		}
		n.log.Info("node started", "peer", self, "role", cfg.Role, "addrs", n.Addrs())
	}
	n.started = true
	return n, nil
}

// Close shuts the node down, outside-in, and is safe to call twice:
//  1. the node's context is cancelled and the network's protocols stop
//     (see network.close: peering, heads, block sync, digest, snapshot,
//     enrolment, then the broadcaster, so that go-ds-crdt's receive loop
//     returns);
//  2. the node's own loops end (repair, conflict hook, first digest);
//  3. the channels held close (each: its protocols, its store, its
//     bitswap), then the everyone store (go-ds-crdt's workers stop);
//  4. bitswap, then the libp2p host;
//  5. the value-log GC (a round in progress finishes), then the
//     datastore; last, the open marker goes, recording a clean shutdown,
//     unless a merge was cut short (then the next start recovers as after
//     a crash).
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		add := func(what string, err error) {
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
			}
		}
		interrupted := n.mergeUnfinished(context.Background())
		n.life.Close(func() { // 1, then 2 as Close waits
			if n.net != nil {
				add("network", n.net.closeProtocols())
			}
		})
		add("channels", n.closeChannels()) // 3
		if n.store != nil {
			add("store", n.store.Close())
		}
		if n.net != nil { // 4
			add("network", n.net.closeTransport())
		}
		if n.gc != nil { // 5
			add("value-log GC", n.gc.Close())
		}
		if n.base != nil {
			add("datastore", n.base.Close())
			if interrupted {
				n.log.Warn("closed during a merge: the next start re-walks the DAG")
			}
			if len(errs) == 0 && !interrupted && n.started {
				add("marker", datadir.MarkClosed(n.cfg.Dir))
			}
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// Store returns the node's records: Put, Get, List, Delete, Conflicts,
// Resolve, History, Import, across the everyone store and the channels held.
func (n *Node) Store() *crdt.Router { return n.router }

// ID returns the node's peer id.
func (n *Node) ID() peer.ID { return n.self }

// Config returns the node's configuration.
func (n *Node) Config() Config { return n.cfg }

// Addrs returns the node's full listen addresses (with /p2p/<id>); none
// without network.
func (n *Node) Addrs() []multiaddr.Multiaddr {
	if n.net == nil {
		return nil
	}
	p2p, _ := multiaddr.NewComponent("p2p", n.self.String())
	var out []multiaddr.Multiaddr
	for _, a := range n.net.host.Addrs() {
		out = append(out, a.Encapsulate(p2p))
	}
	return out
}

func validPeerID(s string) bool {
	_, err := peer.Decode(s)
	return err == nil
}
