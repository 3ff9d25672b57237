package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
)

// joinGrace is how long a peer that is not a member may stay connected to
// an office that has open invitations: the time to redeem one.
const joinGrace = time.Minute

// newTrust is the crdt trust model of a node: operations are signed with
// its identity key and verified against the writer's peer id, which embeds
// its Ed25519 public key.
func newTrust(key crypto.PrivKey, founder string) *crdt.Trust {
	var pubs sync.Map // writer -> crypto.PubKey
	return &crdt.Trust{
		Founder: founder,
		Sign:    key.Sign,
		Verify: func(writer string, msg, sig []byte) bool {
			var pub crypto.PubKey
			if v, ok := pubs.Load(writer); ok {
				pub = v.(crypto.PubKey)
			} else {
				id, err := peer.Decode(writer)
				if err != nil {
					return false
				}
				if pub, err = id.ExtractPublicKey(); err != nil {
					return false
				}
				pubs.Store(writer, pub)
			}
			ok, err := pub.Verify(msg, sig)
			return err == nil && ok
		},
	}
}

// secured reports whether this node's network has members (a founder): in
// an open network (tests, old data dirs) every peer is admitted.
func (n *Node) secured() bool { return n.cfg.Founder != "" }

// admit reports whether a peer may use Ferry's protocols with this node: a
// current member, or, until this node learns it is a member itself, a peer
// it was configured with (the office that enrols it).
func (n *Node) admit(p peer.ID) bool {
	if !n.secured() || p == n.self {
		return true
	}
	st := n.storeReady.Load() // libp2p may ask before the store is open
	if st == nil {
		return false
	}
	if st.IsCurrentMember(n.ctx, p.String()) {
		return true
	}
	if p.String() == n.cfg.Founder {
		return true // the root of membership, never revoked
	}
	return n.configuredPeer(p) && !st.IsCurrentMember(n.ctx, n.self.String())
}

func (n *Node) configuredPeer(p peer.ID) bool {
	return slices.ContainsFunc(n.cfg.Peers, func(a multiaddr.Multiaddr) bool {
		info, err := peer.AddrInfoFromP2pAddr(a)
		return err == nil && info.ID == p
	})
}

// admitConn decides a connection: members always; on an office with open
// invitations, anyone with the swarm key inbound, for the time to redeem
// one (every other protocol still refuses it).
func (n *Node) admitConn(p peer.ID, dir network.Direction) bool {
	if n.admit(p) {
		return true
	}
	return dir == network.DirInbound && n.invites != nil && n.invites.pending()
}

// gater applies admitConn to every connection, once the peer's identity is
// known (after the security handshake).
type gater struct{ n *Node }

func (g gater) InterceptPeerDial(p peer.ID) bool                    { return g.n.admitConn(p, network.DirOutbound) }
func (g gater) InterceptAddrDial(peer.ID, multiaddr.Multiaddr) bool { return true }
func (g gater) InterceptAccept(network.ConnMultiaddrs) bool         { return true }
func (g gater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.n.admitConn(p, dir)
}
func (g gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// memberHost is the host every Ferry protocol, GossipSub and bitswap are
// given: each stream, in or out, is refused unless the peer is admitted.
// Only the enrolment protocol is served on the raw host.
type memberHost struct {
	host.Host
	n *Node
}

func (h *memberHost) guard(handler network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		if p := s.Conn().RemotePeer(); !h.n.admit(p) {
			h.n.refused.Add(1)
			h.n.log.Debug("refused a stream from a peer that is not a member", "peer", p, "protocol", s.Protocol())
			_ = s.Reset()
			return
		}
		handler(s)
	}
}

func (h *memberHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, h.guard(handler))
}

func (h *memberHost) SetStreamHandlerMatch(pid protocol.ID, m func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(pid, m, h.guard(handler))
}

func (h *memberHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	if !h.n.admit(p) {
		return nil, fmt.Errorf("peer %s is not a member of this network", p)
	}
	return h.Host.NewStream(ctx, p, pids...)
}

// enforceMembership closes the connections of peers that may no longer be
// connected: revoked members at once, others that are not members once
// their time to enrol is over.
func (n *Node) enforceMembership() {
	if !n.secured() || n.raw == nil {
		return
	}
	for _, c := range n.raw.Network().Conns() {
		p := c.RemotePeer()
		if n.admit(p) {
			continue
		}
		if n.invites != nil && n.invites.pending() && c.Stat().Direction == network.DirInbound && time.Since(c.Stat().Opened) < joinGrace {
			continue
		}
		n.log.Info("disconnecting a peer that is not a member", "peer", p)
		_ = c.Close()
	}
}

// membershipChanged is called when _members changes: revoked peers are
// disconnected at once (in the background: OnChange must not block).
func (n *Node) membershipChanged() {
	select {
	case n.enforce <- struct{}{}:
	default:
	}
}

func (n *Node) enforceLoop() {
	defer n.wg.Done()
	t := time.NewTicker(joinGrace / 2)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.enforce:
		case <-t.C:
		}
		n.enforceMembership()
	}
}

// roleOf is a peer's role: the one its membership gives it, or in an open
// network the one it recorded itself in _nodes ("" when unknown).
func (n *Node) roleOf(ctx context.Context, p peer.ID) string {
	if n.secured() {
		if m, ok, err := n.store.Member(ctx, p.String()); err == nil && ok && !m.Revoked {
			return m.Role
		}
		return ""
	}
	nodes, err := n.store.Nodes(ctx)
	if err != nil {
		return ""
	}
	return nodes[p.String()].Role
}
