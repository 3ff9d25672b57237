package heads

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	msmux "github.com/multiformats/go-multistream"

	"github.com/ferry-crm/ferry/node/wire"
)

// ProtocolBase is the heads exchange's protocol id without its version.
const ProtocolBase = "/ferry/heads/"

// Protocol is Ferry's heads exchange protocol: the initiator sends one
// frame with its heads, the responder replies with one frame with its
// heads. A frame is a uvarint length followed by a heads payload (see
// Encode) of at most MaxPayload bytes. Its version is the store format
// (wire.Version): /ferry/heads/1.0.0 was store format 1.
const Protocol protocol.ID = ProtocolBase + wire.Version

const (
	// streamTimeout bounds one exchange on the wire (open, write, read).
	streamTimeout = 10 * time.Second
	// receiveTimeout bounds handing received heads to Config.Receive.
	receiveTimeout = 30 * time.Second
	// inboundExchangeDelay: on an inbound connection we let the dialing
	// side initiate the exchange (one exchange per connection syncs both
	// ways) and only initiate ourselves if none happened after this delay.
	inboundExchangeDelay = 2 * time.Second
)

var errClosedService = errors.New("heads exchange: closed")

// ErrNotAllowed is wrapped by the error of Exchange with a peer that
// Config.Allow rejects.
var ErrNotAllowed = errors.New("peer not allowed")

// Exchange runs a heads exchange with p now, over an existing connection
// (it does not dial): our heads go to p, p's heads go to Config.Receive.
// It returns once both directions are done and p's heads were handed over.
func (s *Service) Exchange(ctx context.Context, p peer.ID) error {
	if !s.group.Enter() {
		return errClosedService
	}
	defer s.group.Leave()
	if !s.allowed(p) {
		return fmt.Errorf("heads exchange with %s: %w", p, ErrNotAllowed)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.group.Context(), cancel)
	defer stop()

	s.begin(p, false)
	defer s.end(p)
	return s.exchange(ctx, p)
}

// onConnected is called from the network notifiee; it must not block.
func (s *Service) onConnected(c network.Conn) {
	if c.Stat().Limited {
		return
	}
	p := c.RemotePeer()
	if !s.allowed(p) {
		return
	}
	inbound := c.Stat().Direction == network.DirInbound
	opened := c.Stat().Opened
	if !inbound && s.isRunning(p) {
		return
	}
	s.group.Go(func(ctx context.Context) {
		if inbound {
			t := time.NewTimer(inboundExchangeDelay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			if s.h.Network().Connectedness(p) != network.Connected {
				return
			}
			if last, ok := s.LastExchange(p); ok && !last.Before(opened) {
				return // the dialing side did it
			}
		}
		if !s.allowed(p) || !s.begin(p, true) {
			return
		}
		defer s.end(p)
		err := s.exchange(ctx, p)
		switch {
		case err == nil:
		case ctx.Err() != nil:
		case errors.Is(err, ErrIncompatible):
			// Config.Formats logged it once, at warn level.
			s.log.Debug("heads exchange refused", "peer", p, "err", err)
		case errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}):
			s.log.Debug("peer does not support heads exchange", "peer", p)
		case s.h.Network().Connectedness(p) != network.Connected:
			// The connection went away (e.g. closed while offline).
			s.log.Debug("heads exchange failed", "peer", p, "err", err)
		default:
			s.log.Info("heads exchange failed", "peer", p, "err", err)
		}
	})
}

// exchange is the initiator side.
func (s *Service) exchange(ctx context.Context, p peer.ID) error {
	ours, err := s.ourPayload(ctx)
	if err != nil {
		return err
	}

	nctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	str, err := s.h.NewStream(network.WithNoDial(nctx, "heads exchange"), p, s.cfg.Protocol)
	if err != nil {
		if errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) {
			if ierr := s.incompatibleErr(p, err); ierr != nil {
				return ierr
			}
		}
		return fmt.Errorf("open heads stream: %w", err)
	}
	// Reset the stream if ctx ends while we are blocked on it.
	stop := context.AfterFunc(nctx, func() { _ = str.Reset() })
	fail := func(err error) error {
		stop()
		_ = str.Reset()
		return err
	}
	_ = str.SetDeadline(time.Now().Add(streamTimeout))

	if err := writeFrame(str, ours); err != nil {
		return fail(fmt.Errorf("send heads: %w", err))
	}
	if err := str.CloseWrite(); err != nil {
		return fail(fmt.Errorf("send heads: %w", err))
	}
	reply, err := readFrame(str)
	if err != nil {
		return fail(fmt.Errorf("read heads: %w", err))
	}
	theirs, ep, err := DecodeEpoch(reply)
	if err != nil {
		return fail(fmt.Errorf("peer sent invalid heads: %w", err))
	}
	if !stop() {
		return errors.New("heads exchange: cancelled")
	}
	_ = str.Close()
	s.done(p, theirs, ep)
	s.log.Debug("heads exchanged", "peer", p, "sent_bytes", len(ours), "received_heads", len(theirs), "role", "initiator")
	s.deliver(ctx, p, reply, len(theirs))
	return nil
}

// handle is the responder side.
func (s *Service) handle(str network.Stream) {
	p := str.Conn().RemotePeer()
	if !s.allowed(p) {
		s.log.Debug("heads exchange: refused a peer that is not allowed", "peer", p, "protocol", str.Protocol())
		_ = str.Reset()
		return
	}
	if !s.group.Enter() {
		_ = str.Reset()
		return
	}
	defer s.group.Leave()
	s.begin(p, false)
	defer s.end(p)

	gctx := s.group.Context()
	ctx, cancel := context.WithTimeout(gctx, streamTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	fail := func(msg string, level slog.Level, err error) {
		stop()
		_ = str.Reset()
		s.log.Log(gctx, level, msg, "peer", p, "err", err)
	}
	_ = str.SetDeadline(time.Now().Add(streamTimeout))

	payload, err := readFrame(str)
	if err != nil {
		fail("heads exchange: read failed", slog.LevelInfo, err)
		return
	}
	theirs, ep, err := DecodeEpoch(payload)
	if err != nil {
		fail("heads exchange: dropping malformed heads", slog.LevelWarn, err)
		return
	}
	ours, err := s.ourPayload(ctx)
	if err != nil {
		fail("heads exchange: cannot list our heads", slog.LevelWarn, err)
		return
	}
	if err := writeFrame(str, ours); err != nil {
		fail("heads exchange: reply failed", slog.LevelInfo, err)
		return
	}
	if !stop() {
		s.log.Info("heads exchange: cancelled", "peer", p)
		return
	}
	_ = str.Close()
	s.done(p, theirs, ep)
	s.log.Debug("heads exchanged", "peer", p, "sent_bytes", len(ours), "received_heads", len(theirs), "role", "responder")
	s.deliver(gctx, p, payload, len(theirs))
}

// deliver hands a validated payload with n heads to Config.Receive,
// bounded in time.
func (s *Service) deliver(ctx context.Context, p peer.ID, payload []byte, n int) {
	if n == 0 || s.cfg.Receive == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, receiveTimeout)
	defer cancel()
	s.cfg.Receive(ctx, p, payload)
}

// ourPayload encodes our current heads, keeping at most MaxHeads of them so
// the peer accepts the payload (the rest travel with go-ds-crdt's
// broadcasts).
func (s *Service) ourPayload(ctx context.Context) ([]byte, error) {
	heads, err := s.ourHeads(ctx)
	if err != nil {
		return nil, err
	}
	if len(heads) > MaxHeads {
		s.log.Warn("too many heads for one exchange, sending a subset", "heads", len(heads), "max", MaxHeads)
		heads = heads[:MaxHeads]
	}
	payload, err := EncodeEpoch(heads, s.ourEpoch())
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("heads payload too large: %d bytes", len(payload))
	}
	return payload, nil
}

func writeFrame(str network.Stream, payload []byte) error {
	return msgio.NewVarintWriter(str).WriteMsg(payload)
}

func readFrame(str network.Stream) ([]byte, error) {
	r := msgio.NewVarintReaderSize(str, MaxPayload)
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
