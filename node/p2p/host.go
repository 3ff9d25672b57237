package p2p

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/pnet"
	p2pconnmgr "github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"
)

// Connection manager watermarks. Configured peers are Protected (see
// node/peering) so trimming never closes them.
const (
	connMgrLow  = 100
	connMgrHigh = 400
)

// HostConfig configures NewHost.
type HostConfig struct {
	// Key is the node identity (see LoadOrCreateIdentity). Required.
	Key crypto.PrivKey
	// ListenAddrs, e.g. /ip4/127.0.0.1/tcp/4001 and
	// /ip4/0.0.0.0/udp/0/quic-v1. Every address must be listenable.
	ListenAddrs []multiaddr.Multiaddr
	// Reporter, if set, counts bytes in and out per peer.
	Reporter metrics.Reporter
	// PSK, if set, makes a libp2p private network: only hosts with the same
	// key complete a handshake. QUIC cannot carry it, so a host with a PSK
	// has TCP only and refuses QUIC listen addresses.
	PSK pnet.PSK
	// Gater, if set, decides which peers may connect.
	Gater connmgr.ConnectionGater
}

// NewHost builds a libp2p host with TCP and QUIC transports, Noise as the
// only security protocol, the default stream muxer (yamux), the given
// identity and listen addresses, no relay, no NAT port mapping and no
// bootstrap/routing, plus a connection manager (low 100, high 400) so callers
// can Protect peers.
//
// Unlike libp2p.New, which succeeds if any one listen address works, NewHost
// fails if any address cannot be listened on, and the error names it.
func NewHost(cfg HostConfig) (host.Host, error) {
	if cfg.Key == nil {
		return nil, errors.New("host: no identity key")
	}
	cm, err := p2pconnmgr.NewConnManager(connMgrLow, connMgrHigh)
	if err != nil {
		return nil, fmt.Errorf("host: connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Key),
		libp2p.NoListenAddrs, // listened on one by one below, for precise errors
		// Without SO_REUSEPORT, so that a second node configured with the
		// same port fails instead of silently sharing it.
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Security(noise.ID, noise.New),
		libp2p.DefaultMuxers,
		libp2p.DisableRelay(),
		libp2p.ConnectionManager(cm),
	}
	if cfg.PSK != nil {
		for _, a := range cfg.ListenAddrs {
			if a != nil && isQUIC(a) {
				return nil, fmt.Errorf("host: listen on %s: a private network (swarm key) works over TCP only", a)
			}
		}
		opts = append(opts, libp2p.PrivateNetwork(cfg.PSK))
	} else {
		opts = append(opts, libp2p.Transport(libp2pquic.NewTransport))
	}
	if cfg.Gater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.Gater))
	}
	if cfg.Reporter != nil {
		opts = append(opts, libp2p.BandwidthReporter(cfg.Reporter))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		_ = cm.Close()
		return nil, fmt.Errorf("host: %w", err)
	}
	for _, a := range cfg.ListenAddrs {
		if a == nil {
			continue
		}
		if err := h.Network().Listen(a); err != nil {
			_ = h.Close()
			return nil, fmt.Errorf("host: listen on %s: %w", a, err)
		}
	}
	return h, nil
}

// isQUIC reports whether a multiaddr uses QUIC.
func isQUIC(a multiaddr.Multiaddr) bool {
	for _, c := range a {
		if c.Protocol().Code == multiaddr.P_QUIC_V1 || c.Protocol().Code == multiaddr.P_QUIC {
			return true
		}
	}
	return false
}
