// Package chanhost is the host a channel's protocols run on. A channel is
// its own go-ds-crdt DAG with its own blockstore, and every protocol that
// carries its data (heads exchange, block sync, digests, bitswap) runs on
// a protocol id under wire.ChannelPrefix(channel). Host wraps the node's
// libp2p host so that none of them ever talks to a peer the channel is not
// granted to: an inbound stream from such a peer is reset before its
// handler runs, and NewStream to it fails without opening anything. The
// predicate is asked again for every stream, so a grant that ends stops new
// streams at once; ResetStreams ends the streams already open (bitswap
// keeps its streams open and reuses them).
//
// It is the pattern of the node's membership host (enrol's Admission.Host),
// one level down: the node wraps the membership host in one Host per
// channel it holds.
package chanhost

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/node/wire"
)

// Host is a host.Host whose streams, in and out, are refused unless the
// peer is allowed the channel. Everything but SetStreamHandler,
// SetStreamHandlerMatch and NewStream is the wrapped host's.
type Host struct {
	host.Host
	channel string
	allow   func(peer.ID) bool
	log     *slog.Logger
	refused atomic.Int64
}

var _ host.Host = (*Host)(nil)

// New wraps h for channel: allow reports whether a peer may exchange the
// channel's data with this node (it is called for every stream, so it must
// be quick and safe for concurrent use; nil allows every peer). log may be
// nil (slog.Default).
func New(h host.Host, channel string, allow func(peer.ID) bool, log *slog.Logger) *Host {
	if log == nil {
		log = slog.Default()
	}
	if allow == nil {
		allow = func(peer.ID) bool { return true }
	}
	return &Host{Host: h, channel: channel, allow: allow, log: log.With("channel", channel)}
}

// Channel returns the name of the channel the host is for.
func (h *Host) Channel() string { return h.channel }

// Refused counts the streams refused so far: inbound streams reset and
// NewStream calls refused.
func (h *Host) Refused() int64 { return h.refused.Load() }

// allowed reports whether p may use the channel's protocols; this node
// itself always may.
func (h *Host) allowed(p peer.ID) bool {
	return p == h.Host.ID() || h.allow(p)
}

func (h *Host) guard(handler network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		if p := s.Conn().RemotePeer(); !h.allowed(p) {
			h.refused.Add(1)
			h.log.Debug("refused a channel stream from a peer not granted the channel", "peer", p, "protocol", s.Protocol())
			_ = s.Reset()
			return
		}
		handler(s)
	}
}

// SetStreamHandler sets handler for pid on the wrapped host, behind the
// channel's guard.
func (h *Host) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, h.guard(handler))
}

// SetStreamHandlerMatch sets handler for the protocols m matches on the
// wrapped host, behind the channel's guard.
func (h *Host) SetStreamHandlerMatch(pid protocol.ID, m func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(pid, m, h.guard(handler))
}

// NewStream opens a stream to p on the wrapped host, or fails without
// opening one if p is not allowed the channel.
func (h *Host) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	if !h.allowed(p) {
		h.refused.Add(1)
		return nil, fmt.Errorf("open stream to %s: peer %s is not granted channel %q", pids, p, h.channel)
	}
	return h.Host.NewStream(ctx, p, pids...)
}

// ResetStreams resets every open stream with p, in either direction, whose
// protocol is one of the channel's (under wire.ChannelPrefix), and returns
// how many it reset. Call it when p loses the channel: the streams opened
// before are not guarded any more. An inbound stream stays listed by libp2p
// until its handler returns, so a call right after another may count it
// again.
func (h *Host) ResetStreams(p peer.ID) int {
	prefix := string(wire.ChannelPrefix(h.channel)) + "/"
	n := 0
	for _, c := range h.Host.Network().ConnsToPeer(p) {
		for _, s := range c.GetStreams() {
			if !strings.HasPrefix(string(s.Protocol()), prefix) {
				continue
			}
			if err := s.Reset(); err != nil {
				h.log.Debug("reset of a channel stream failed", "peer", p, "protocol", s.Protocol(), "err", err)
				continue
			}
			n++
		}
	}
	if n > 0 {
		h.log.Debug("reset channel streams", "peer", p, "streams", n)
	}
	return n
}
