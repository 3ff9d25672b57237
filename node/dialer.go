package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"
)

const (
	// DefaultDialMin is the default first retry delay of the Dialer, and
	// the delay before re-dialing a peer whose connection dropped.
	DefaultDialMin = 500 * time.Millisecond
	// DefaultDialMax is the default largest retry delay of the Dialer.
	DefaultDialMax = 30 * time.Second
	// PeerProtectTag is the connection manager tag protecting configured
	// peers' connections.
	PeerProtectTag = "ferry-peer"

	// dialAttemptTimeout bounds one dial attempt.
	dialAttemptTimeout = 15 * time.Second
)

// DialerConfig configures NewDialer.
type DialerConfig struct {
	// Peers are multiaddrs ending in /p2p/<peer id>. Several addresses of
	// the same peer are merged.
	Peers []multiaddr.Multiaddr
	// Min and Max bound the exponential retry backoff (defaults
	// DefaultDialMin and DefaultDialMax).
	Min, Max time.Duration
}

// Dialer keeps the configured peers connected, and can take the node offline
// (no connections at all).
type Dialer struct {
	h        host.Host
	log      *slog.Logger
	min, max time.Duration
	peers    map[peer.ID]*dialPeer
	notifiee *network.NotifyBundle

	offline  atomic.Bool
	attempts atomic.Int64 // dial attempts so far (observed by tests)

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	mu        sync.Mutex // guards closed vs wg.Add from the notifiee
	closed    bool
	closeOnce sync.Once
}

type dialPeer struct {
	info peer.AddrInfo
	// wake is signalled (non-blocking, capacity 1) when the peer connects or
	// disconnects, or when the node goes back online.
	wake chan struct{}
}

// NewDialer starts one goroutine per configured peer that dials it while it
// is not connected: exponential backoff with jitter from Min to Max, reset
// after a successful connection; when a connection drops, the peer is
// re-dialed after Min. The peers' addresses are added to the peerstore with
// PermanentAddrTTL and their connections are Protected in the connection
// manager (tag PeerProtectTag). A configured address of this host itself is
// ignored.
func NewDialer(h host.Host, cfg DialerConfig, log *slog.Logger) (*Dialer, error) {
	if log == nil {
		log = slog.Default()
	}
	minD, maxD := cfg.Min, cfg.Max
	if minD <= 0 {
		minD = DefaultDialMin
	}
	if maxD <= 0 {
		maxD = DefaultDialMax
	}
	if maxD < minD {
		maxD = minD
	}

	peers := make(map[peer.ID]*dialPeer)
	for _, a := range cfg.Peers {
		if a == nil {
			continue
		}
		info, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, fmt.Errorf("dialer: peer address %s: must end in /p2p/<peer id>: %w", a, err)
		}
		if info.ID == h.ID() {
			log.Debug("ignoring configured address of this node", "addr", a)
			continue
		}
		dp := peers[info.ID]
		if dp == nil {
			dp = &dialPeer{info: peer.AddrInfo{ID: info.ID}, wake: make(chan struct{}, 1)}
			peers[info.ID] = dp
		}
		dp.info.Addrs = append(dp.info.Addrs, info.Addrs...)
	}

	ctx, cancel := context.WithCancel(context.Background())
	d := &Dialer{
		h:      h,
		log:    log,
		min:    minD,
		max:    maxD,
		peers:  peers,
		ctx:    ctx,
		cancel: cancel,
	}
	d.notifiee = &network.NotifyBundle{
		ConnectedF:    d.onConnected,
		DisconnectedF: d.onDisconnected,
	}
	h.Network().Notify(d.notifiee)

	for id, dp := range peers {
		if len(dp.info.Addrs) > 0 {
			h.Peerstore().AddAddrs(id, dp.info.Addrs, peerstore.PermanentAddrTTL)
		}
		h.ConnManager().Protect(id, PeerProtectTag)
		d.wg.Add(1)
		go d.run(dp)
	}
	return d, nil
}

// SetOffline(true) stops dialing, closes every current connection (all
// peers, not only configured ones) and keeps closing connections that come
// up (inbound or dialed by other components) while offline.
// SetOffline(false) resumes dialing configured peers immediately.
func (d *Dialer) SetOffline(offline bool) {
	if d.offline.Swap(offline) == offline {
		return
	}
	if offline {
		d.log.Info("going offline: closing all connections")
		for _, c := range d.h.Network().Conns() {
			_ = c.Close()
		}
	} else {
		d.log.Info("going online")
	}
	for _, dp := range d.peers {
		signal(dp.wake)
	}
}

// Offline reports whether the Dialer is in offline mode.
func (d *Dialer) Offline() bool { return d.offline.Load() }

// Close stops dialing, removes the notifiee and unprotects the peers. It does
// not close connections. Safe to call more than once.
func (d *Dialer) Close() error {
	d.closeOnce.Do(func() {
		d.h.Network().StopNotify(d.notifiee)
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.cancel()
		d.wg.Wait()
		for id := range d.peers {
			d.h.ConnManager().Unprotect(id, PeerProtectTag)
		}
	})
	return nil
}

func (d *Dialer) onConnected(_ network.Network, c network.Conn) {
	if d.offline.Load() {
		// Never block the notifiee: close from a goroutine.
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.closed {
			return
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.log.Debug("offline: closing new connection", "peer", c.RemotePeer())
			_ = c.Close()
		}()
		return
	}
	if dp := d.peers[c.RemotePeer()]; dp != nil {
		signal(dp.wake)
	}
}

func (d *Dialer) onDisconnected(_ network.Network, c network.Conn) {
	if dp := d.peers[c.RemotePeer()]; dp != nil {
		signal(dp.wake)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run keeps one peer connected until Close.
func (d *Dialer) run(dp *dialPeer) {
	defer d.wg.Done()
	p := dp.info.ID
	log := d.log.With("peer", p)
	var backoff time.Duration // 0: dial at once
	wasConnected := false

	// wait returns false when the Dialer is closed.
	wait := func(delay time.Duration) bool {
		if delay <= 0 {
			return d.ctx.Err() == nil
		}
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-dp.wake:
			return true
		case <-d.ctx.Done():
			return false
		}
	}

	for d.ctx.Err() == nil {
		if d.offline.Load() {
			wasConnected = false
			backoff = 0
			select {
			case <-dp.wake:
			case <-d.ctx.Done():
				return
			}
			continue
		}

		if d.h.Network().Connectedness(p) == network.Connected {
			if !wasConnected {
				wasConnected = true
				backoff = 0
			}
			select {
			case <-dp.wake:
			case <-d.ctx.Done():
				return
			}
			continue
		}

		if wasConnected {
			// The connection dropped: re-dial after Min.
			wasConnected = false
			log.Info("peer disconnected, re-dialing")
			if !d.sleep(d.min, dp.wake) {
				return
			}
			continue
		}

		if !wait(jitter(backoff)) {
			return
		}
		if d.offline.Load() || d.h.Network().Connectedness(p) == network.Connected {
			continue
		}

		d.attempts.Add(1)
		err := d.dial(dp.info)
		switch {
		case err == nil:
			log.Info("connected to peer")
			wasConnected = true
			backoff = 0
		case d.ctx.Err() != nil:
			return
		default:
			backoff = d.nextBackoff(backoff)
			log.Debug("dial failed", "err", err, "backoff", backoff)
		}
	}
}

// sleep waits for delay, ignoring wake-ups except those that take the node
// offline. It returns false when the Dialer is closed.
func (d *Dialer) sleep(delay time.Duration, wake chan struct{}) bool {
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-wake:
			if d.offline.Load() {
				return true
			}
		case <-d.ctx.Done():
			return false
		}
	}
}

func (d *Dialer) dial(info peer.AddrInfo) error {
	ctx, cancel := context.WithTimeout(d.ctx, dialAttemptTimeout)
	defer cancel()
	// Our own backoff governs retries: bypass the swarm's per-address dial
	// backoff, which grows to minutes after a few failures.
	ctx = network.WithForceDirectDial(ctx, "ferry configured peer")
	if len(info.Addrs) == 0 {
		return errors.New("no address")
	}
	return d.h.Connect(ctx, info)
}

// nextBackoff returns the next nominal delay (Min, then doubling up to Max).
func (d *Dialer) nextBackoff(prev time.Duration) time.Duration {
	if prev <= 0 {
		return d.min
	}
	return min(prev*2, d.max)
}

// jitter draws a delay uniformly from [nominal/2, nominal].
func jitter(nominal time.Duration) time.Duration {
	if nominal <= 0 {
		return 0
	}
	return nominal/2 + rand.N(nominal/2+1)
}
