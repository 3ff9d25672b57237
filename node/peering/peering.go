// Package peering keeps a Ferry node connected to its peers. One Peering
// owns one dial loop and one backoff for every peer that should be
// connected: the configured peers (kept forever, Protected in the
// connection manager) and the peers learned through peer exchange
// (Protocol) or mDNS (they expire when neither connected nor heard of for
// a while). It also owns the node's offline mode: while offline nothing is
// dialed, asked or announced, and every connection is closed.
package peering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-crm/ferry/internal/lifecycle"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
)

const (
	// DefaultDialMin is the default Config.DialMin: the first retry delay
	// of a configured peer, and the delay before re-dialing a configured
	// peer whose connection dropped.
	DefaultDialMin = 500 * time.Millisecond
	// DefaultDialMax is the default Config.DialMax: the largest retry
	// delay of a configured peer.
	DefaultDialMax = 30 * time.Second
	// DefaultExchangeInterval is the default Config.ExchangeInterval.
	DefaultExchangeInterval = 30 * time.Second

	// ProtectTag is the connection manager tag Protecting configured
	// peers' connections.
	ProtectTag = "ferry-peer"
	// LearnedTag is the connection manager tag on connections to learned
	// peers. Unlike configured peers they are not Protected: the tag only
	// makes the connection manager trim them after untagged connections.
	LearnedTag = "ferry-learned"
)

// Config configures New. The zero value is valid: no configured peer, no
// mDNS, default delays.
type Config struct {
	// Peers are multiaddrs ending in /p2p/<peer id>. Several addresses of
	// the same peer are merged; an address of this host is ignored.
	Peers []multiaddr.Multiaddr
	// DialMin and DialMax bound the retry backoff of configured peers
	// (defaults DefaultDialMin and DefaultDialMax). Learned peers use
	// fixed, slower bounds (10s to 5min).
	DialMin, DialMax time.Duration
	// MDNS announces this node and browses for others on the local
	// network. The service name is MDNSServiceName(Topic), so nodes of
	// different Ferry networks do not find each other.
	MDNS bool
	// Topic is the Ferry network's pubsub topic (required with MDNS).
	Topic string
	// ExchangeInterval is how often connected peers are asked for their
	// peers (default DefaultExchangeInterval). They are also asked on every
	// new connection.
	ExchangeInterval time.Duration
	// Share selects the peers this node tells others about: connected
	// peers known to speak this protocol (the node passes its heads
	// protocol). Default: Protocol.
	Share protocol.ID
	// Offline starts in offline mode (see SetOffline).
	Offline bool
}

// Peering keeps configured and learned peers connected, runs the peer
// exchange and mDNS, and owns the offline mode. Make one with New.
type Peering struct {
	h        host.Host
	cfg      Config
	log      *slog.Logger
	g        *lifecycle.Group
	notifiee *network.NotifyBundle
	// configured is the dial kind of configured peers (from Config).
	configured kind

	offline atomic.Bool
	// wake (capacity 1) makes the dial loop look at every target now.
	wake chan struct{}
	// mdnsWake (capacity 1) makes the mDNS loop reconcile now.
	mdnsWake chan struct{}

	mu       sync.Mutex
	targets  map[peer.ID]*target
	nLearned int    // targets with learned set
	epoch    uint64 // bumped by SetOffline: older dial results are ignored
	asking   map[peer.ID]bool

	exchanging atomic.Bool
	askSem     chan struct{}
	dialSem    chan struct{}

	mdns mdnsState // owned by New, then by the mDNS loop

	// observed by tests
	attempts atomic.Int64 // dials started
	asks     atomic.Int64 // peer exchange requests sent
	loops    atomic.Int64 // dial loop iterations
	ticks    atomic.Int64 // exchange loop iterations
	mdnsOn   atomic.Bool  // mDNS service running
}

// New adds the configured peers' addresses to the peerstore (permanent TTL)
// and Protects them (ProtectTag), registers the Protocol handler and a
// network notifiee on h, asks the peers already connected, starts mDNS if
// configured and online (a failure is logged and retried, not returned) and
// starts the dial, exchange and mDNS loops.
//
// Every target is dialed at once, then on failure after a delay from
// nextBackoff with jitter; see dialer.go for the rules.
func New(h host.Host, cfg Config, log *slog.Logger) (*Peering, error) {
	if h == nil {
		return nil, errors.New("peering: no host")
	}
	if cfg.MDNS && cfg.Topic == "" {
		return nil, errors.New("peering: mDNS needs a topic")
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.DialMin <= 0 {
		cfg.DialMin = DefaultDialMin
	}
	if cfg.DialMax <= 0 {
		cfg.DialMax = DefaultDialMax
	}
	cfg.DialMax = max(cfg.DialMax, cfg.DialMin)
	if cfg.ExchangeInterval <= 0 {
		cfg.ExchangeInterval = DefaultExchangeInterval
	}
	if cfg.Share == "" {
		cfg.Share = Protocol
	}

	targets := make(map[peer.ID]*target)
	for _, a := range cfg.Peers {
		if a == nil {
			continue
		}
		info, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, fmt.Errorf("peering: peer address %s: must end in /p2p/<peer id>: %w", a, err)
		}
		if info.ID == h.ID() {
			log.Debug("ignoring configured address of this node", "addr", a)
			continue
		}
		t := targets[info.ID]
		if t == nil {
			t = &target{configured: true}
			targets[info.ID] = t
		}
		t.addrs = append(t.addrs, info.Addrs...)
	}

	p := &Peering{
		h:          h,
		cfg:        cfg,
		log:        log,
		g:          lifecycle.New(),
		configured: kind{min: cfg.DialMin, max: cfg.DialMax},
		wake:       make(chan struct{}, 1),
		mdnsWake:   make(chan struct{}, 1),
		targets:    targets,
		asking:     make(map[peer.ID]bool),
		askSem:     make(chan struct{}, maxConcurrentAsks),
		dialSem:    make(chan struct{}, maxConcurrentDials),
		mdns:       mdnsState{name: MDNSServiceName(cfg.Topic)},
	}
	p.offline.Store(cfg.Offline)
	for id, t := range targets {
		if len(t.addrs) > 0 {
			h.Peerstore().AddAddrs(id, t.addrs, peerstore.PermanentAddrTTL)
		}
		h.ConnManager().Protect(id, ProtectTag)
	}

	p.notifiee = &network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { p.onConnected(c) },
		DisconnectedF: func(network.Network, network.Conn) { signal(p.wake) },
	}
	h.SetStreamHandler(Protocol, p.handle)
	h.Network().Notify(p.notifiee)
	for _, c := range h.Network().Conns() {
		p.onConnected(c)
	}

	p.g.Go(p.dialLoop)
	p.g.Go(p.exchangeLoop)
	if cfg.MDNS {
		p.reconcileMDNS(p.offline.Load())
		p.g.Go(p.mdnsLoop)
	}
	return p, nil
}

// SetOffline(true) stops dialing, asking and mDNS, closes every current
// connection (all peers, not only configured ones) and keeps closing
// connections that come up (inbound or dialed by other components) while
// offline. SetOffline(false) resumes: every peer, configured or learned,
// is dialed at once.
func (p *Peering) SetOffline(offline bool) {
	if p.offline.Swap(offline) == offline {
		return
	}
	p.resetBackoffs()
	if offline {
		p.log.Info("going offline: closing all connections")
		for _, c := range p.h.Network().Conns() {
			_ = c.Close()
		}
	} else {
		p.log.Info("going online")
	}
	signal(p.wake)
	signal(p.mdnsWake)
}

// Offline reports whether the node is in offline mode.
func (p *Peering) Offline() bool { return p.offline.Load() }

// DialAttempts returns how many dials (of configured and learned peers)
// were started so far.
func (p *Peering) DialAttempts() int64 { return p.attempts.Load() }

// Close stops the loops, mDNS, running exchanges and dials, removes the
// protocol handler and the notifiee, unprotects configured peers and
// untags learned ones. It does not close connections. Safe to call more
// than once.
func (p *Peering) Close() error {
	p.g.Close(
		func() { p.h.RemoveStreamHandler(Protocol) },
		func() { p.h.Network().StopNotify(p.notifiee) },
		p.untagAll,
	)
	return nil
}

// untagAll undoes the connection manager marks. Taggers check g.Closed
// under mu, so none tags after this ran.
func (p *Peering) untagAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, t := range p.targets {
		if t.configured {
			p.h.ConnManager().Unprotect(id, ProtectTag)
		}
		if t.learned {
			p.h.ConnManager().UntagPeer(id, LearnedTag)
		}
	}
}

// onConnected is called from the network notifiee; it must not block.
func (p *Peering) onConnected(c network.Conn) {
	if p.offline.Load() {
		p.g.Go(func(context.Context) {
			p.log.Debug("offline: closing new connection", "peer", c.RemotePeer())
			_ = c.Close()
		})
		return
	}
	signal(p.wake)
	if c.Stat().Limited {
		return
	}
	id := c.RemotePeer()
	p.mu.Lock()
	if t := p.targets[id]; t != nil && t.learned && !p.g.Closed() {
		t.seen = time.Now()
		p.h.ConnManager().TagPeer(id, LearnedTag, learnedPeerWeight)
	}
	p.mu.Unlock()
	if p.beginAsk(id) {
		go p.askAndLog(id) // NewStream waits for identify on the connection
	}
}

// signal wakes a loop without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
