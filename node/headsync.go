package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	msmux "github.com/multiformats/go-multistream"
)

// HeadsProtocol is Ferry's heads exchange protocol: the initiator sends one
// frame with its heads, the responder replies with one frame with its heads.
// A frame is a uvarint length followed by a go-ds-crdt broadcast payload
// (pb.CRDTBroadcast) of at most MaxHeadsPayload bytes.
const HeadsProtocol protocol.ID = "/ferry/heads/1.0.0"

const (
	// headsStreamTimeout bounds one exchange on the wire (open, write, read).
	headsStreamTimeout = 10 * time.Second
	// headsSinkTimeout bounds handing received heads to the sink.
	headsSinkTimeout = 30 * time.Second
	// inboundExchangeDelay: on an inbound connection we let the dialing side
	// initiate the exchange (one exchange per connection syncs both ways)
	// and only initiate ourselves if none happened after this delay.
	inboundExchangeDelay = 2 * time.Second
)

// HeadsFunc returns our current heads (the caller gives the crdt store's
// InternalStats().Heads).
type HeadsFunc func(ctx context.Context) ([]cid.Cid, error)

// HeadsSink receives a validated heads payload from peer from (the caller
// passes a Broadcaster.Inject-like function).
type HeadsSink func(ctx context.Context, from peer.ID, payload []byte)

// HeadSync exchanges heads with a peer as soon as a connection to it comes
// up, so that a reconnecting replica does not wait for go-ds-crdt's periodic
// rebroadcast (or for a GossipSub message that may be lost while the mesh
// forms).
type HeadSync struct {
	h        host.Host
	heads    HeadsFunc
	sink     HeadsSink
	log      *slog.Logger
	notifiee *network.NotifyBundle

	ctx    context.Context
	cancel context.CancelFunc

	lifecycle                       // its mu also guards the maps below
	running   map[peer.ID]int       // exchanges in progress, either role
	last      map[peer.ID]time.Time // last successful exchange, either role

	closeOnce sync.Once
}

// NewHeadSync registers the HeadsProtocol handler and a network notifiee on
// h. Whenever a connection comes up, an exchange runs in the background: at
// once on outbound connections, and on inbound ones only if the dialing side
// did not start one within a short delay. Exchanges also start for peers
// already connected when NewHeadSync is called.
func NewHeadSync(h host.Host, heads HeadsFunc, sink HeadsSink, log *slog.Logger) *HeadSync {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &HeadSync{
		h:       h,
		heads:   heads,
		sink:    sink,
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		running: make(map[peer.ID]int),
		last:    make(map[peer.ID]time.Time),
	}
	s.notifiee = &network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) { s.onConnected(c) },
	}
	h.SetStreamHandler(HeadsProtocol, s.handle)
	h.Network().Notify(s.notifiee)
	for _, c := range h.Network().Conns() {
		s.onConnected(c)
	}
	return s
}

// onConnected is called from the network notifiee; it must not block.
func (s *HeadSync) onConnected(c network.Conn) {
	if c.Stat().Limited {
		return
	}
	p := c.RemotePeer()
	inbound := c.Stat().Direction == network.DirInbound
	opened := c.Stat().Opened

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if !inbound && s.running[p] > 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if inbound {
			t := time.NewTimer(inboundExchangeDelay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-s.ctx.Done():
				return
			}
			if s.h.Network().Connectedness(p) != network.Connected {
				return
			}
			if last, ok := s.LastExchange(p); ok && !last.Before(opened) {
				return // the dialing side did it
			}
		}
		if !s.begin(p, true) {
			return
		}
		defer s.end(p)
		err := s.exchange(s.ctx, p)
		switch {
		case err == nil:
		case s.ctx.Err() != nil:
		case errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}):
			s.log.Debug("peer does not support heads exchange", "peer", p)
		case s.h.Network().Connectedness(p) != network.Connected:
			// The connection went away (e.g. closed while offline).
			s.log.Debug("heads exchange failed", "peer", p, "err", err)
		default:
			s.log.Info("heads exchange failed", "peer", p, "err", err)
		}
	}()
}

// begin marks an exchange with p as running. With skipIfRunning it refuses
// when one is already running. It refuses after Close.
func (s *HeadSync) begin(p peer.ID, skipIfRunning bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || (skipIfRunning && s.running[p] > 0) {
		return false
	}
	s.running[p]++
	return true
}

func (s *HeadSync) end(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[p]--; s.running[p] <= 0 {
		delete(s.running, p)
	}
}

func (s *HeadSync) recordExchange(p peer.ID) {
	s.mu.Lock()
	s.last[p] = time.Now()
	s.mu.Unlock()
}

// Exchange runs a heads exchange with p now, over an existing connection (it
// does not dial): our heads go to p, p's heads go to the sink. It returns
// once both directions are done and p's heads were handed to the sink.
func (s *HeadSync) Exchange(ctx context.Context, p peer.ID) error {
	if !s.enter() {
		return errors.New("heads exchange: closed")
	}
	defer s.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	if !s.begin(p, false) {
		return errors.New("heads exchange: closed")
	}
	defer s.end(p)
	return s.exchange(ctx, p)
}

// LastExchange returns the time of the last successful exchange with p (as
// initiator or responder).
func (s *HeadSync) LastExchange(p peer.ID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.last[p]
	return t, ok
}

// Close removes the protocol handler and the notifiee, cancels running
// exchanges and waits for them. Safe to call more than once.
func (s *HeadSync) Close() error {
	s.closeOnce.Do(func() {
		s.h.RemoveStreamHandler(HeadsProtocol)
		s.h.Network().StopNotify(s.notifiee)
		s.shut(s.cancel)
	})
	return nil
}

// exchange is the initiator side.
func (s *HeadSync) exchange(ctx context.Context, p peer.ID) error {
	ours, err := s.ourPayload(ctx)
	if err != nil {
		return err
	}

	nctx, cancel := context.WithTimeout(ctx, headsStreamTimeout)
	defer cancel()
	str, err := s.h.NewStream(network.WithNoDial(nctx, "heads exchange"), p, HeadsProtocol)
	if err != nil {
		return fmt.Errorf("open heads stream: %w", err)
	}
	// Reset the stream if ctx ends while we are blocked on it.
	stop := context.AfterFunc(nctx, func() { _ = str.Reset() })
	fail := func(err error) error {
		stop()
		_ = str.Reset()
		return err
	}
	_ = str.SetDeadline(time.Now().Add(headsStreamTimeout))

	if err := writeHeadsFrame(str, ours); err != nil {
		return fail(fmt.Errorf("send heads: %w", err))
	}
	if err := str.CloseWrite(); err != nil {
		return fail(fmt.Errorf("send heads: %w", err))
	}
	reply, err := readHeadsFrame(str)
	if err != nil {
		return fail(fmt.Errorf("read heads: %w", err))
	}
	theirs, err := ValidateHeadsPayload(reply)
	if err != nil {
		return fail(fmt.Errorf("peer sent invalid heads: %w", err))
	}
	if !stop() {
		return errors.New("heads exchange: cancelled")
	}
	_ = str.Close()
	s.recordExchange(p)
	s.log.Debug("heads exchanged", "peer", p, "sent_bytes", len(ours), "received_heads", len(theirs), "role", "initiator")
	s.deliver(ctx, p, reply, len(theirs))
	return nil
}

// handle is the responder side.
func (s *HeadSync) handle(str network.Stream) {
	p := str.Conn().RemotePeer()
	if !s.enter() {
		_ = str.Reset()
		return
	}
	defer s.wg.Done()
	if !s.begin(p, false) {
		_ = str.Reset()
		return
	}
	defer s.end(p)

	ctx, cancel := context.WithTimeout(s.ctx, headsStreamTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	fail := func(msg string, level slog.Level, err error) {
		stop()
		_ = str.Reset()
		s.log.Log(s.ctx, level, msg, "peer", p, "err", err)
	}
	_ = str.SetDeadline(time.Now().Add(headsStreamTimeout))

	payload, err := readHeadsFrame(str)
	if err != nil {
		fail("heads exchange: read failed", slog.LevelInfo, err)
		return
	}
	theirs, err := ValidateHeadsPayload(payload)
	if err != nil {
		fail("heads exchange: dropping malformed heads", slog.LevelWarn, err)
		return
	}
	ours, err := s.ourPayload(ctx)
	if err != nil {
		fail("heads exchange: cannot list our heads", slog.LevelWarn, err)
		return
	}
	if err := writeHeadsFrame(str, ours); err != nil {
		fail("heads exchange: reply failed", slog.LevelInfo, err)
		return
	}
	if !stop() {
		s.log.Info("heads exchange: cancelled", "peer", p)
		return
	}
	_ = str.Close()
	s.recordExchange(p)
	s.log.Debug("heads exchanged", "peer", p, "sent_bytes", len(ours), "received_heads", len(theirs), "role", "responder")
	s.deliver(s.ctx, p, payload, len(theirs))
}

// deliver hands a validated payload to the sink, bounded in time.
func (s *HeadSync) deliver(ctx context.Context, p peer.ID, payload []byte, n int) {
	if n == 0 || s.sink == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, headsSinkTimeout)
	defer cancel()
	s.sink(ctx, p, payload)
}

// ourPayload encodes our current heads, keeping at most MaxHeads of them so
// the peer accepts the payload (the rest travel with go-ds-crdt's broadcasts).
func (s *HeadSync) ourPayload(ctx context.Context) ([]byte, error) {
	heads, err := s.heads(ctx)
	if err != nil {
		return nil, fmt.Errorf("list heads: %w", err)
	}
	if len(heads) > MaxHeads {
		s.log.Warn("too many heads for one exchange, sending a subset", "heads", len(heads), "max", MaxHeads)
		heads = heads[:MaxHeads]
	}
	payload, err := EncodeHeads(heads)
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxHeadsPayload {
		return nil, fmt.Errorf("heads payload too large: %d bytes", len(payload))
	}
	return payload, nil
}

func writeHeadsFrame(str network.Stream, payload []byte) error {
	return msgio.NewVarintWriter(str).WriteMsg(payload)
}

func readHeadsFrame(str network.Stream) ([]byte, error) {
	r := msgio.NewVarintReaderSize(str, MaxHeadsPayload)
	msg, err := r.ReadMsg()
	if err != nil {
		return nil, err
	}
	if len(msg) == 0 {
		return []byte{}, nil
	}
	out := make([]byte, len(msg))
	copy(out, msg)
	r.ReleaseMsg(msg)
	return out, nil
}
