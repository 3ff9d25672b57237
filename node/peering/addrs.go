package peering

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Address filtering, shared by peer exchange (both sides) and mDNS.

const (
	maxAddrsPerPeer = 16
	maxAddrBytes    = 128
)

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

// usableAddrs returns the usable addresses of addrs for peer id (see
// usablePeerAddr), without duplicates, at most maxAddrsPerPeer, each at
// most maxAddrBytes long.
func usableAddrs(addrs []multiaddr.Multiaddr, id peer.ID, loopbackOK bool) []multiaddr.Multiaddr {
	var out []multiaddr.Multiaddr
	for _, a := range addrs {
		if len(out) == maxAddrsPerPeer {
			break
		}
		if u, ok := usablePeerAddr(a, id, loopbackOK); ok && len(u.Bytes()) <= maxAddrBytes && !containsAddr(out, u) {
			out = append(out, u)
		}
	}
	return out
}

func containsAddr(list []multiaddr.Multiaddr, a multiaddr.Multiaddr) bool {
	return slices.ContainsFunc(list, a.Equal)
}

// mergeAddrs returns newer then older, without duplicates, at most
// maxAddrsPerPeer.
func mergeAddrs(newer, older []multiaddr.Multiaddr) []multiaddr.Multiaddr {
	out := make([]multiaddr.Multiaddr, 0, min(len(newer)+len(older), maxAddrsPerPeer))
	for _, list := range [][]multiaddr.Multiaddr{newer, older} {
		for _, a := range list {
			if len(out) == maxAddrsPerPeer {
				return out
			}
			if !containsAddr(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}
