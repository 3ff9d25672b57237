package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-msgio"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"google.golang.org/protobuf/encoding/protowire"
)

// PeersProtocol is Ferry's peer exchange. The asker sends one frame (a
// uvarint length and a PeersRequest, currently empty) and closes its write
// side; the responder replies with one frame holding a PeersResponse and
// closes. Messages are protobuf-encoded (hand-written with protowire):
//
//	message PeersRequest  {}                       // unknown fields ignored
//	message PeersResponse { repeated PeerRecord peers = 1; }
//	message PeerRecord    { bytes id = 1;          // binary peer id
//	                        repeated bytes addrs = 2; } // binary multiaddrs
//
// A response lists at most maxPeersPerResponse peers with at most
// maxAddrsPerPeer addresses each; a response breaking those limits or the
// framing is dropped whole. Records with an invalid peer id and addresses that
// are not valid, dialable IP multiaddrs are dropped one by one.
const PeersProtocol protocol.ID = "/ferry/peers/1.0.0"

const (
	// DefaultExchangeInterval is how often Discovery asks connected peers
	// for their peers, besides asking on every new connection.
	DefaultExchangeInterval = 30 * time.Second
	// LearnedPeerTag is the connection manager tag on connections to peers
	// Discovery learned (through peer exchange or mDNS). Unlike configured
	// peers they are not Protected: the tag only makes the connection
	// manager trim them after untagged connections.
	LearnedPeerTag = "ferry-learned"

	learnedPeerWeight = 50

	maxLearnedPeers     = 256
	maxPeersPerResponse = 64
	maxAddrsPerPeer     = 16
	maxPeerIDBytes      = 64
	maxAddrBytes        = 128
	// maxPeersFrame fits a response at the limits above:
	// 64 * (4 + 2+64 + 16*(3+128)) = 138,624 bytes.
	maxPeersFrame   = 160 << 10
	maxPeersRequest = 1 << 10

	peersStreamTimeout = 10 * time.Second
	// learnedAddrTTL is the peerstore TTL of learned addresses; a learned
	// peer neither connected nor heard of for that long is forgotten.
	learnedAddrTTL = 2 * time.Hour
	// learnedDialMin is the least time between two dials of one learned
	// peer; failed or short-lived connections double it up to learnedDialMax.
	learnedDialMin = 10 * time.Second
	learnedDialMax = 5 * time.Minute
	// stableConnAge: a connection that lasted that long resets the peer's
	// dial backoff.
	stableConnAge = time.Minute

	maxConcurrentAsks  = 8
	maxConcurrentDials = 8

	discoveryTick = time.Second
	// mdnsRetry is the delay before retrying an mDNS start that failed (no
	// multicast interface, no address yet).
	mdnsRetry = 30 * time.Second
	// mdnsCheckEvery is how often the interfaces and listen addresses are
	// compared with those mDNS was started with; on a change (another
	// network) the service is restarted so it announces current addresses.
	mdnsCheckEvery = 5 * time.Second
)

// DiscoveryConfig configures NewDiscovery.
type DiscoveryConfig struct {
	// MDNS announces this node and browses for others on the local
	// network. The service name is derived from Topic, so nodes of
	// different Ferry networks do not find each other.
	MDNS bool
	// Topic is the Ferry network's pubsub topic (required with MDNS).
	Topic string
	// ExchangeInterval is how often connected peers are asked for their
	// peers (default DefaultExchangeInterval). They are also asked on every
	// new connection.
	ExchangeInterval time.Duration
}

// Discovery finds peers other than the configured ones, so that two laptops
// keep syncing when the office is unreachable: it asks connected peers for
// the Ferry peers they are connected to (PeersProtocol), optionally finds
// peers on the LAN with mDNS, and dials what it learned.
type Discovery struct {
	h        host.Host
	cfg      DiscoveryConfig
	offline  func() bool
	log      *slog.Logger
	notifiee *network.NotifyBundle
	mdnsName string
	tick     time.Duration

	ctx    context.Context
	cancel context.CancelFunc

	lifecycle // its mu also guards the maps below
	learned   map[peer.ID]*learnedPeer
	asking    map[peer.ID]bool
	dialing   map[peer.ID]bool

	askSem  chan struct{}
	dialSem chan struct{}

	// mDNS state, owned by the loop goroutine (and by NewDiscovery before
	// it starts, Close after it ends).
	mdns        mdns.Service
	mdnsFailed  time.Time
	mdnsWarned  bool
	mdnsFP      string
	mdnsChecked time.Time

	exchanging atomic.Bool

	// observed by tests
	attempts atomic.Int64 // dials of learned peers
	asks     atomic.Int64 // peer exchange requests sent
	loops    atomic.Int64 // loop iterations completed
	mdnsOn   atomic.Bool  // mDNS service running

	closeOnce sync.Once
}

type learnedPeer struct {
	addrs    []multiaddr.Multiaddr // newest first, at most maxAddrsPerPeer
	source   string
	seen     time.Time // last heard of or connected
	backoff  time.Duration
	nextDial time.Time
}

// NewDiscovery registers the PeersProtocol handler and a network notifiee
// on h, asks the peers already connected, starts mDNS if configured and not
// offline (a failure to start mDNS is logged and retried, not returned), and
// starts a loop that asks connected peers every ExchangeInterval and dials
// learned peers that are not connected. Nothing is dialed, asked or
// announced while offline() returns true. Learned peers' connections are
// tagged LearnedPeerTag in the connection manager.
func NewDiscovery(h host.Host, cfg DiscoveryConfig, offline func() bool, log *slog.Logger) (*Discovery, error) {
	if h == nil {
		return nil, errors.New("discovery: no host")
	}
	if cfg.MDNS && cfg.Topic == "" {
		return nil, errors.New("discovery: mDNS needs a topic")
	}
	if cfg.ExchangeInterval <= 0 {
		cfg.ExchangeInterval = DefaultExchangeInterval
	}
	if offline == nil {
		offline = func() bool { return false }
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Discovery{
		h:        h,
		cfg:      cfg,
		offline:  offline,
		log:      log,
		mdnsName: MDNSServiceName(cfg.Topic),
		tick:     discoveryTick,
		ctx:      ctx,
		cancel:   cancel,
		learned:  make(map[peer.ID]*learnedPeer),
		asking:   make(map[peer.ID]bool),
		dialing:  make(map[peer.ID]bool),
		askSem:   make(chan struct{}, maxConcurrentAsks),
		dialSem:  make(chan struct{}, maxConcurrentDials),
	}
	d.notifiee = &network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) { d.onConnected(c) },
	}
	h.SetStreamHandler(PeersProtocol, d.handle)
	h.Network().Notify(d.notifiee)
	for _, c := range h.Network().Conns() {
		d.onConnected(c)
	}
	d.reconcileMDNS(offline())
	d.wg.Add(1)
	go d.run()
	return d, nil
}

// MDNSServiceName is the mDNS service Discovery announces and browses for a
// Ferry network's topic: "_ferry-<8 hex digits of sha256(topic)>._udp".
func MDNSServiceName(topic string) string {
	sum := sha256.Sum256([]byte(topic))
	return "_ferry-" + hex.EncodeToString(sum[:4]) + "._udp"
}

// Learned returns the peers learned so far (through peer exchange or mDNS,
// connected or not), sorted by id.
func (d *Discovery) Learned() []peer.AddrInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]peer.AddrInfo, 0, len(d.learned))
	for id, lp := range d.learned {
		out = append(out, peer.AddrInfo{ID: id, Addrs: slices.Clone(lp.addrs)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Close stops the loop, mDNS, running exchanges and dials, removes the
// protocol handler and the notifiee and untags learned peers. It does not
// close connections. Safe to call more than once.
func (d *Discovery) Close() error {
	d.closeOnce.Do(func() {
		d.h.RemoveStreamHandler(PeersProtocol)
		d.h.Network().StopNotify(d.notifiee)
		d.shut(d.cancel)
		d.stopMDNS()
		d.mu.Lock()
		for id := range d.learned {
			d.h.ConnManager().UntagPeer(id, LearnedPeerTag)
		}
		d.mu.Unlock()
	})
	return nil
}

// run is the loop: mDNS on/off with offline mode, periodic exchanges, dials
// of learned peers whose backoff elapsed, expiry.
func (d *Discovery) run() {
	defer d.wg.Done()
	t := time.NewTicker(d.tick)
	defer t.Stop()
	nextExchange := time.Now().Add(d.cfg.ExchangeInterval)
	wasOffline := d.offline()
	for {
		select {
		case <-t.C:
		case <-d.ctx.Done():
			return
		}
		now := time.Now()
		off := d.offline()
		d.reconcileMDNS(off)
		if !off {
			if wasOffline {
				d.resetBackoffs()
			}
			if !now.Before(nextExchange) {
				nextExchange = now.Add(d.cfg.ExchangeInterval)
				d.startExchangeAll()
			}
			d.dialDue()
		}
		wasOffline = off
		d.expire(now)
		d.loops.Add(1)
	}
}

// startExchangeAll runs exchangeAll in the background unless one is
// already running.
func (d *Discovery) startExchangeAll() {
	if !d.exchanging.CompareAndSwap(false, true) {
		return
	}
	if !d.enter() {
		d.exchanging.Store(false)
		return
	}
	go func() {
		defer d.wg.Done()
		defer d.exchanging.Store(false)
		d.exchangeAll()
	}()
}

// exchangeAll asks every connected peer known to speak PeersProtocol and
// returns when all answered or failed.
func (d *Discovery) exchangeAll() {
	if d.offline() {
		return
	}
	var wg sync.WaitGroup
	for _, p := range d.h.Network().Peers() {
		if protos, _ := d.h.Peerstore().SupportsProtocols(p, PeersProtocol); len(protos) == 0 {
			continue
		}
		if !d.beginAsk(p) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.askAndLog(p)
		}()
	}
	wg.Wait()
}

// beginAsk reserves an ask of p (one at a time per peer) and a wg slot.
func (d *Discovery) beginAsk(p peer.ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.asking[p] {
		return false
	}
	d.asking[p] = true
	d.wg.Add(1)
	return true
}

// askAndLog runs one ask reserved by beginAsk.
func (d *Discovery) askAndLog(p peer.ID) {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		delete(d.asking, p)
		d.mu.Unlock()
	}()
	select {
	case d.askSem <- struct{}{}:
		defer func() { <-d.askSem }()
	case <-d.ctx.Done():
		return
	}
	err := d.ask(d.ctx, p)
	switch {
	case err == nil, d.ctx.Err() != nil, errors.Is(err, errDiscoveryOffline):
	case errors.Is(err, errMalformedPeers):
		// logged by ask
	default:
		d.log.Debug("peer exchange failed", "peer", p, "err", err)
	}
}

var (
	errDiscoveryOffline = errors.New("discovery: offline")
	errMalformedPeers   = errors.New("malformed peers response")
)

// ask runs one peer exchange with p as the asker, over an existing
// connection, and learns the peers it answers with.
func (d *Discovery) ask(ctx context.Context, p peer.ID) error {
	if d.offline() {
		return errDiscoveryOffline
	}
	d.asks.Add(1)
	ctx, cancel := context.WithTimeout(ctx, peersStreamTimeout)
	defer cancel()
	str, err := d.h.NewStream(network.WithNoDial(ctx, "peer exchange"), p, PeersProtocol)
	if err != nil {
		return fmt.Errorf("open peers stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	defer stop()
	_ = str.SetDeadline(time.Now().Add(peersStreamTimeout))
	fail := func(err error) error {
		_ = str.Reset()
		return err
	}
	if err := msgio.NewVarintWriter(str).WriteMsg(nil); err != nil { // empty PeersRequest
		return fail(fmt.Errorf("send peers request: %w", err))
	}
	if err := str.CloseWrite(); err != nil {
		return fail(fmt.Errorf("send peers request: %w", err))
	}
	frame, err := readPeersFrame(str, maxPeersFrame)
	if err != nil {
		_ = str.Reset()
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			d.log.Info("dropping malformed peers response", "peer", p, "err", err)
			return fmt.Errorf("%w: %w", errMalformedPeers, err)
		}
		return fmt.Errorf("read peers response: %w", err)
	}
	_ = str.Close()
	loopbackOK := manet.IsIPLoopback(str.Conn().RemoteMultiaddr())
	infos, dropped, err := decodePeersResponse(frame, d.h.ID(), p, loopbackOK)
	if err != nil {
		d.log.Info("dropping malformed peers response", "peer", p, "err", err)
		return fmt.Errorf("%w: %w", errMalformedPeers, err)
	}
	if dropped > 0 {
		d.log.Info("peers response: dropped invalid entries", "peer", p, "dropped", dropped, "kept", len(infos))
	}
	d.log.Debug("peers exchanged", "peer", p, "received", len(infos))
	d.learn("exchange:"+p.String(), infos)
	return nil
}

// handle is the responder side.
func (d *Discovery) handle(str network.Stream) {
	if !d.enter() {
		_ = str.Reset()
		return
	}
	defer d.wg.Done()
	asker := str.Conn().RemotePeer()
	if d.offline() {
		_ = str.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, peersStreamTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	defer stop()
	_ = str.SetDeadline(time.Now().Add(peersStreamTimeout))

	req, err := readPeersFrame(str, maxPeersRequest)
	if err == nil {
		err = checkPeersRequest(req)
	}
	if err != nil {
		_ = str.Reset()
		d.log.Debug("peer exchange: dropping malformed request", "peer", asker, "err", err)
		return
	}
	loopbackOK := manet.IsIPLoopback(str.Conn().RemoteMultiaddr())
	resp := encodePeersResponse(d.shareable(asker, loopbackOK))
	if err := msgio.NewVarintWriter(str).WriteMsg(resp); err != nil {
		_ = str.Reset()
		d.log.Debug("peer exchange: reply failed", "peer", asker, "err", err)
		return
	}
	_ = str.Close()
}

// shareable lists the connected peers speaking HeadsProtocol, other than
// the asker, with their usable peerstore addresses: at most
// maxPeersPerResponse peers (a random subset beyond) and maxAddrsPerPeer
// addresses each. Loopback addresses are shared only with an asker
// connected over loopback.
func (d *Discovery) shareable(asker peer.ID, loopbackOK bool) []peer.AddrInfo {
	peers := d.h.Network().Peers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	var out []peer.AddrInfo
	for _, p := range peers {
		if len(out) == maxPeersPerResponse {
			break
		}
		if p == asker || p == d.h.ID() {
			continue
		}
		if protos, _ := d.h.Peerstore().SupportsProtocols(p, HeadsProtocol); len(protos) == 0 {
			continue
		}
		var addrs []multiaddr.Multiaddr
		for _, a := range d.h.Peerstore().Addrs(p) {
			if len(addrs) == maxAddrsPerPeer {
				break
			}
			if u, ok := usablePeerAddr(a, p, loopbackOK); ok && len(u.Bytes()) <= maxAddrBytes && !containsMultiaddr(addrs, u) {
				addrs = append(addrs, u)
			}
		}
		if len(addrs) > 0 && len(p) <= maxPeerIDBytes {
			out = append(out, peer.AddrInfo{ID: p, Addrs: addrs})
		}
	}
	return out
}

// learn records peers (never this host) and their addresses, then dials
// those due.
func (d *Discovery) learn(source string, infos []peer.AddrInfo) {
	now := time.Now()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	for _, info := range infos {
		if info.ID == d.h.ID() || info.ID == "" || len(info.Addrs) == 0 {
			continue
		}
		lp := d.learned[info.ID]
		if lp == nil {
			if len(d.learned) >= maxLearnedPeers && !d.evictLocked() {
				d.log.Debug("learned peers full, ignoring peer", "peer", info.ID, "source", source)
				continue
			}
			lp = &learnedPeer{}
			d.learned[info.ID] = lp
			d.log.Debug("learned peer", "peer", info.ID, "source", source, "addrs", info.Addrs)
		}
		lp.addrs = mergeLearnedAddrs(info.Addrs, lp.addrs)
		lp.source = source
		lp.seen = now
		d.h.Peerstore().AddAddrs(info.ID, info.Addrs, learnedAddrTTL)
		if d.h.Network().Connectedness(info.ID) == network.Connected {
			d.h.ConnManager().TagPeer(info.ID, LearnedPeerTag, learnedPeerWeight)
		}
	}
	d.mu.Unlock()
	d.dialDue()
}

// evictLocked forgets the learned peer heard of longest ago among those not
// connected. It returns false if all are connected.
func (d *Discovery) evictLocked() bool {
	var victim peer.ID
	var oldest time.Time
	for id, lp := range d.learned {
		if d.h.Network().Connectedness(id) == network.Connected {
			continue
		}
		if victim == "" || lp.seen.Before(oldest) {
			victim, oldest = id, lp.seen
		}
	}
	if victim == "" {
		return false
	}
	delete(d.learned, victim)
	d.h.ConnManager().UntagPeer(victim, LearnedPeerTag)
	return true
}

// expire forgets learned peers neither connected nor heard of for
// learnedAddrTTL.
func (d *Discovery) expire(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, lp := range d.learned {
		if d.h.Network().Connectedness(id) == network.Connected {
			lp.seen = now
			continue
		}
		if now.Sub(lp.seen) > learnedAddrTTL && !d.dialing[id] {
			delete(d.learned, id)
			d.h.ConnManager().UntagPeer(id, LearnedPeerTag)
		}
	}
}

// resetBackoffs makes every learned peer due for a dial (coming back
// online).
func (d *Discovery) resetBackoffs() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, lp := range d.learned {
		lp.backoff, lp.nextDial = 0, time.Time{}
	}
}

// dialDue dials, in the background, each learned peer that is not
// connected, not being dialed and whose backoff elapsed. Nothing while
// offline.
func (d *Discovery) dialDue() {
	if d.offline() {
		return
	}
	now := time.Now()
	var due []peer.AddrInfo
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	for id, lp := range d.learned {
		if id == d.h.ID() || d.dialing[id] {
			continue
		}
		if d.h.Network().Connectedness(id) == network.Connected {
			if lp.backoff > 0 && connectedSince(d.h, id, now) > stableConnAge {
				lp.backoff, lp.nextDial = 0, time.Time{}
			}
			continue
		}
		if now.Before(lp.nextDial) {
			continue
		}
		lp.backoff = nextLearnedBackoff(lp.backoff)
		lp.nextDial = now.Add(lp.backoff)
		d.dialing[id] = true
		d.attempts.Add(1)
		d.wg.Add(1)
		due = append(due, peer.AddrInfo{ID: id, Addrs: slices.Clone(lp.addrs)})
	}
	d.mu.Unlock()
	for _, info := range due {
		go d.dial(info)
	}
}

func nextLearnedBackoff(prev time.Duration) time.Duration {
	if prev <= 0 {
		return learnedDialMin
	}
	return min(prev*2, learnedDialMax)
}

// connectedSince returns how long the oldest connection to p has been open.
func connectedSince(h host.Host, p peer.ID, now time.Time) time.Duration {
	var age time.Duration
	for _, c := range h.Network().ConnsToPeer(p) {
		age = max(age, now.Sub(c.Stat().Opened))
	}
	return age
}

// dial is one attempt reserved by dialDue.
func (d *Discovery) dial(info peer.AddrInfo) {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		delete(d.dialing, info.ID)
		d.mu.Unlock()
	}()
	select {
	case d.dialSem <- struct{}{}:
		defer func() { <-d.dialSem }()
	case <-d.ctx.Done():
		return
	}
	if d.offline() || d.h.Network().Connectedness(info.ID) == network.Connected {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, dialAttemptTimeout)
	defer cancel()
	if err := d.h.Connect(ctx, info); err != nil {
		if d.ctx.Err() == nil {
			d.log.Debug("dial of learned peer failed", "peer", info.ID, "err", err)
		}
		return
	}
	d.log.Info("connected to learned peer", "peer", info.ID)
	d.mu.Lock()
	if _, ok := d.learned[info.ID]; ok && !d.closed {
		d.h.ConnManager().TagPeer(info.ID, LearnedPeerTag, learnedPeerWeight)
	}
	d.mu.Unlock()
}

// onConnected is called from the network notifiee; it must not block.
func (d *Discovery) onConnected(c network.Conn) {
	if c.Stat().Limited {
		return
	}
	p := c.RemotePeer()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	if lp := d.learned[p]; lp != nil {
		lp.seen = time.Now()
		d.h.ConnManager().TagPeer(p, LearnedPeerTag, learnedPeerWeight)
	}
	d.mu.Unlock()
	if d.offline() {
		return
	}
	if d.beginAsk(p) {
		go d.askAndLog(p) // NewStream waits for identify on the connection
	}
}

// mdnsNotifee receives mDNS results.
type mdnsNotifee struct{ d *Discovery }

// HandlePeerFound is called by the mdns service, from its own goroutines,
// possibly after Close.
func (n mdnsNotifee) HandlePeerFound(info peer.AddrInfo) {
	d := n.d
	if info.ID == d.h.ID() || d.offline() {
		return
	}
	var addrs []multiaddr.Multiaddr
	for _, a := range info.Addrs {
		if len(addrs) == maxAddrsPerPeer {
			break
		}
		if u, ok := usablePeerAddr(a, info.ID, true); ok && !containsMultiaddr(addrs, u) {
			addrs = append(addrs, u)
		}
	}
	if len(addrs) == 0 {
		return
	}
	d.learn("mdns", []peer.AddrInfo{{ID: info.ID, Addrs: addrs}})
}

// reconcileMDNS runs mDNS exactly when configured and online, restarting it
// when the network changed. Called from NewDiscovery and the loop only.
func (d *Discovery) reconcileMDNS(offline bool) {
	if !d.cfg.MDNS || offline {
		if d.mdns != nil {
			d.stopMDNS()
			d.log.Info("mDNS stopped (offline)")
		}
		return
	}
	now := time.Now()
	if d.mdns != nil {
		if now.Sub(d.mdnsChecked) < mdnsCheckEvery {
			return
		}
		d.mdnsChecked = now
		if fp := d.netFingerprint(); fp != d.mdnsFP {
			d.log.Info("network changed: restarting mDNS")
			d.stopMDNS()
			d.startMDNS(now)
		}
		return
	}
	if !d.mdnsFailed.IsZero() && now.Sub(d.mdnsFailed) < mdnsRetry {
		return
	}
	d.startMDNS(now)
}

func (d *Discovery) startMDNS(now time.Time) {
	fp := d.netFingerprint()
	svc := mdns.NewMdnsService(d.h, d.mdnsName, mdnsNotifee{d})
	if err := svc.Start(); err != nil {
		_ = svc.Close()
		d.mdnsFailed = now
		level := slog.LevelDebug
		if !d.mdnsWarned {
			d.mdnsWarned, level = true, slog.LevelWarn
		}
		d.log.Log(d.ctx, level, "mDNS unavailable, will retry", "err", err, "retry_in", mdnsRetry)
		return
	}
	d.mdns, d.mdnsFP, d.mdnsChecked, d.mdnsFailed, d.mdnsWarned = svc, fp, now, time.Time{}, false
	d.mdnsOn.Store(true)
	d.log.Info("mDNS started", "service", d.mdnsName)
}

func (d *Discovery) stopMDNS() {
	if d.mdns == nil {
		return
	}
	_ = d.mdns.Close()
	d.mdns = nil
	d.mdnsOn.Store(false)
}

// netFingerprint summarises the multicast interfaces and the host's
// interface listen addresses, which mDNS uses when it starts.
func (d *Discovery) netFingerprint() string {
	var parts []string
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifi := range ifaces {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
				parts = append(parts, fmt.Sprintf("if:%d:%s", ifi.Index, ifi.Name))
			}
		}
	}
	if addrs, err := d.h.Network().InterfaceListenAddresses(); err == nil {
		for _, a := range addrs {
			parts = append(parts, a.String())
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// usablePeerAddr returns a (without a trailing /p2p/<id>) if it is worth
// dialing for peer id: an /ip4 or /ip6 address with a transport, not
// unspecified, no relay, no /p2p of another peer, loopback only if
// loopbackOK.
func usablePeerAddr(a multiaddr.Multiaddr, id peer.ID, loopbackOK bool) (multiaddr.Multiaddr, bool) {
	if len(a) == 0 {
		return nil, false
	}
	transport, pid := peer.SplitAddr(a)
	if pid != "" && pid != id {
		return nil, false
	}
	if len(transport) < 2 {
		return nil, false
	}
	switch transport[0].Protocol().Code {
	case multiaddr.P_IP4, multiaddr.P_IP6:
	default:
		return nil, false
	}
	for _, c := range transport {
		switch c.Protocol().Code {
		case multiaddr.P_P2P, multiaddr.P_CIRCUIT:
			return nil, false
		}
	}
	if manet.IsIPUnspecified(transport) || (!loopbackOK && manet.IsIPLoopback(transport)) {
		return nil, false
	}
	return transport, true
}

func containsMultiaddr(list []multiaddr.Multiaddr, a multiaddr.Multiaddr) bool {
	return slices.ContainsFunc(list, a.Equal)
}

// mergeLearnedAddrs returns newer then older, without duplicates, at most
// maxAddrsPerPeer.
func mergeLearnedAddrs(newer, older []multiaddr.Multiaddr) []multiaddr.Multiaddr {
	out := make([]multiaddr.Multiaddr, 0, min(len(newer)+len(older), maxAddrsPerPeer))
	for _, list := range [][]multiaddr.Multiaddr{newer, older} {
		for _, a := range list {
			if len(out) == maxAddrsPerPeer {
				return out
			}
			if !containsMultiaddr(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// readPeersFrame reads one uvarint-length-prefixed frame of at most limit bytes.
func readPeersFrame(str network.Stream, limit int) ([]byte, error) {
	r := msgio.NewVarintReaderSize(str, limit)
	msg, err := r.ReadMsg()
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(msg))
	copy(out, msg)
	r.ReleaseMsg(msg)
	return out, nil
}

// checkPeersRequest validates a PeersRequest: well-formed protobuf; all
// fields are unknown (ignored) in this version.
func checkPeersRequest(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// encodePeersResponse encodes a PeersResponse.
func encodePeersResponse(infos []peer.AddrInfo) []byte {
	var out, rec []byte
	for _, info := range infos {
		rec = rec[:0]
		rec = protowire.AppendTag(rec, 1, protowire.BytesType)
		rec = protowire.AppendBytes(rec, []byte(info.ID))
		for _, a := range info.Addrs {
			rec = protowire.AppendTag(rec, 2, protowire.BytesType)
			rec = protowire.AppendBytes(rec, a.Bytes())
		}
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, rec)
	}
	return out
}

// decodePeersResponse decodes a PeersResponse received from peer from. It
// fails (the whole response is to be dropped) on malformed protobuf, more
// than maxPeersPerResponse records or more than maxAddrsPerPeer addresses in
// a record. Records with an invalid or oversized peer id, for this host,
// for from, or duplicated are dropped and counted; so are records left
// without a usable address (see usablePeerAddr) once invalid ones are dropped.
func decodePeersResponse(b []byte, self, from peer.ID, loopbackOK bool) (infos []peer.AddrInfo, dropped int, err error) {
	records := 0
	seen := map[peer.ID]bool{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, fmt.Errorf("response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num != 1 {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, 0, fmt.Errorf("response field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if typ != protowire.BytesType {
			return nil, 0, fmt.Errorf("response: peers field has wire type %d", typ)
		}
		rec, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, 0, fmt.Errorf("response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if records++; records > maxPeersPerResponse {
			return nil, 0, fmt.Errorf("response lists more than %d peers", maxPeersPerResponse)
		}
		info, ok, err := decodePeerRecord(rec, loopbackOK)
		if err != nil {
			return nil, 0, fmt.Errorf("peer record %d: %w", records, err)
		}
		if !ok || info.ID == self || info.ID == from || seen[info.ID] {
			dropped++
			continue
		}
		seen[info.ID] = true
		infos = append(infos, info)
	}
	return infos, dropped, nil
}

// decodePeerRecord decodes a PeerRecord. ok is false when the record must
// be dropped (bad id, no usable address); err is set when the response is
// structurally invalid.
func decodePeerRecord(b []byte, loopbackOK bool) (info peer.AddrInfo, ok bool, err error) {
	var rawID []byte
	var rawAddrs [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return info, false, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return info, false, protowire.ParseError(n)
			}
			b = b[n:]
			if num == 1 {
				if rawID != nil {
					return info, false, errors.New("two peer ids")
				}
				rawID = v
				if rawID == nil {
					rawID = []byte{}
				}
			} else {
				if len(rawAddrs) == maxAddrsPerPeer {
					return info, false, fmt.Errorf("more than %d addresses", maxAddrsPerPeer)
				}
				rawAddrs = append(rawAddrs, v)
			}
		case num == 1 || num == 2:
			return info, false, fmt.Errorf("field %d has wire type %d", num, typ)
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return info, false, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	if len(rawID) == 0 || len(rawID) > maxPeerIDBytes {
		return info, false, nil
	}
	id, idErr := peer.IDFromBytes(rawID)
	if idErr != nil {
		return info, false, nil
	}
	info.ID = id
	for _, raw := range rawAddrs {
		if len(raw) == 0 || len(raw) > maxAddrBytes {
			continue
		}
		a, err := multiaddr.NewMultiaddrBytes(raw)
		if err != nil {
			continue
		}
		if u, usable := usablePeerAddr(a, id, loopbackOK); usable && !containsMultiaddr(info.Addrs, u) {
			info.Addrs = append(info.Addrs, u)
		}
	}
	return info, len(info.Addrs) > 0, nil
}
