package peering

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Protocol is Ferry's peer exchange. The asker sends one frame (a uvarint
// length and a PeersRequest, currently empty) and closes its write side;
// the responder replies with one frame holding a PeersResponse and closes.
// Messages are protobuf-encoded (hand-written with protowire, see
// exchange_wire.go):
//
//	message PeersRequest  {}                       // unknown fields ignored
//	message PeersResponse { repeated PeerRecord peers = 1; }
//	message PeerRecord    { bytes id = 1;          // binary peer id
//	                        repeated bytes addrs = 2; } // binary multiaddrs
//
// A response lists at most maxPeersPerResponse peers with at most
// maxAddrsPerPeer addresses each; a response breaking those limits or the
// framing is dropped whole. Records with an invalid peer id and addresses
// that are not valid, dialable IP multiaddrs are dropped one by one.
// Loopback addresses are only exchanged over a loopback connection.
const Protocol protocol.ID = "/ferry/peers/1.0.0"

const (
	peersStreamTimeout = 10 * time.Second
	maxConcurrentAsks  = 8
)

var (
	errOffline   = errors.New("peering: offline")
	errMalformed = errors.New("malformed peers response")
)

// exchangeLoop asks every connected peer every ExchangeInterval (besides
// the ask on every new connection, see onConnected).
func (p *Peering) exchangeLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.ExchangeInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if !p.offline.Load() {
			p.startExchangeAll()
		}
		p.ticks.Add(1)
	}
}

// startExchangeAll runs exchangeAll in the background unless one is
// already running.
func (p *Peering) startExchangeAll() {
	if !p.exchanging.CompareAndSwap(false, true) {
		return
	}
	if !p.g.Go(func(context.Context) {
		defer p.exchanging.Store(false)
		p.exchangeAll()
	}) {
		p.exchanging.Store(false)
	}
}

// exchangeAll asks every connected peer known to speak Protocol and
// returns when all answered or failed.
func (p *Peering) exchangeAll() {
	if p.offline.Load() {
		return
	}
	var wg sync.WaitGroup
	for _, id := range p.h.Network().Peers() {
		if protos, _ := p.h.Peerstore().SupportsProtocols(id, Protocol); len(protos) == 0 {
			continue
		}
		if !p.beginAsk(id) {
			continue
		}
		wg.Go(func() { p.askAndLog(id) })
	}
	wg.Wait()
}

// beginAsk reserves an ask of id (one at a time per peer), counted in the
// lifecycle Group; askAndLog ends it.
func (p *Peering) beginAsk(id peer.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.asking[id] || !p.g.Enter() {
		return false
	}
	p.asking[id] = true
	return true
}

// askAndLog runs one ask reserved by beginAsk.
func (p *Peering) askAndLog(id peer.ID) {
	defer p.g.Leave()
	defer func() {
		p.mu.Lock()
		delete(p.asking, id)
		p.mu.Unlock()
	}()
	ctx := p.g.Context()
	select {
	case p.askSem <- struct{}{}:
		defer func() { <-p.askSem }()
	case <-ctx.Done():
		return
	}
	err := p.ask(ctx, id)
	switch {
	case err == nil, ctx.Err() != nil, errors.Is(err, errOffline):
	case errors.Is(err, errMalformed):
		// logged by ask
	default:
		p.log.Debug("peer exchange failed", "peer", id, "err", err)
	}
}

// ask runs one peer exchange with id as the asker, over an existing
// connection, and learns the peers it answers with.
func (p *Peering) ask(ctx context.Context, id peer.ID) error {
	if p.offline.Load() {
		return errOffline
	}
	p.asks.Add(1)
	ctx, cancel := context.WithTimeout(ctx, peersStreamTimeout)
	defer cancel()
	str, err := p.h.NewStream(network.WithNoDial(ctx, "peer exchange"), id, Protocol)
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
	frame, err := readFrame(str, maxPeersFrame)
	if err != nil {
		_ = str.Reset()
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			p.log.Info("dropping malformed peers response", "peer", id, "err", err)
			return fmt.Errorf("%w: %w", errMalformed, err)
		}
		return fmt.Errorf("read peers response: %w", err)
	}
	_ = str.Close()
	loopbackOK := manet.IsIPLoopback(str.Conn().RemoteMultiaddr())
	infos, dropped, err := decodePeersResponse(frame, p.h.ID(), id, loopbackOK)
	if err != nil {
		p.log.Info("dropping malformed peers response", "peer", id, "err", err)
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	if dropped > 0 {
		p.log.Info("peers response: dropped invalid entries", "peer", id, "dropped", dropped, "kept", len(infos))
	}
	p.log.Debug("peers exchanged", "peer", id, "received", len(infos))
	p.learn("exchange:"+id.String(), infos)
	return nil
}

// handle is the responder side.
func (p *Peering) handle(str network.Stream) {
	if !p.g.Enter() {
		_ = str.Reset()
		return
	}
	defer p.g.Leave()
	asker := str.Conn().RemotePeer()
	if p.offline.Load() {
		_ = str.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(p.g.Context(), peersStreamTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	defer stop()
	_ = str.SetDeadline(time.Now().Add(peersStreamTimeout))

	req, err := readFrame(str, maxPeersRequest)
	if err == nil {
		err = checkPeersRequest(req)
	}
	if err != nil {
		_ = str.Reset()
		p.log.Debug("peer exchange: dropping malformed request", "peer", asker, "err", err)
		return
	}
	loopbackOK := manet.IsIPLoopback(str.Conn().RemoteMultiaddr())
	resp := encodePeersResponse(p.shareable(asker, loopbackOK))
	if err := msgio.NewVarintWriter(str).WriteMsg(resp); err != nil {
		_ = str.Reset()
		p.log.Debug("peer exchange: reply failed", "peer", asker, "err", err)
		return
	}
	_ = str.Close()
}

// shareable lists the connected peers speaking Config.Share, other than
// the asker, with their usable peerstore addresses: at most
// maxPeersPerResponse peers (a random subset beyond) and maxAddrsPerPeer
// addresses each. Loopback addresses are shared only with an asker
// connected over loopback.
func (p *Peering) shareable(asker peer.ID, loopbackOK bool) []peer.AddrInfo {
	peers := p.h.Network().Peers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	var out []peer.AddrInfo
	for _, id := range peers {
		if len(out) == maxPeersPerResponse {
			break
		}
		if id == asker || id == p.h.ID() || len(id) > maxPeerIDBytes {
			continue
		}
		if protos, _ := p.h.Peerstore().SupportsProtocols(id, p.cfg.Share); len(protos) == 0 {
			continue
		}
		if addrs := usableAddrs(p.h.Peerstore().Addrs(id), id, loopbackOK); len(addrs) > 0 {
			out = append(out, peer.AddrInfo{ID: id, Addrs: addrs})
		}
	}
	return out
}
