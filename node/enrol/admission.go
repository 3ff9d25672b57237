package enrol

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/lifecycle"
)

// JoinGrace is how long a peer that is not a member may stay connected to
// an office that has open invitations: the time to redeem one.
const JoinGrace = time.Minute

// Admission decides, in a secured network, which peers may connect and
// use Ferry's protocols: current members; the founder; and, until this
// node learns it is a member itself, the peers it was configured with (the
// office that enrols it). An office with open invitations also lets
// anyone with the swarm key connect inbound for JoinGrace, to redeem one
// (every other protocol still refuses it).
type Admission struct {
	self       peer.ID
	founder    string
	configured []peer.ID
	book       *Book
	log        *slog.Logger

	store   atomic.Pointer[crdt.Store] // nil until the store is open
	refused atomic.Uint64
	enforce chan struct{}
	life    *lifecycle.Group
}

// NewAdmission returns the admission of node self in the network of
// founder. configured are the peers (addresses ending in /p2p/<id>) the
// node was configured with; book its invitations (may be nil).
func NewAdmission(self peer.ID, founder string, configured []multiaddr.Multiaddr, book *Book, log *slog.Logger) *Admission {
	a := &Admission{self: self, founder: founder, book: book, log: log,
		enforce: make(chan struct{}, 1), life: lifecycle.New()}
	for _, addr := range configured {
		if info, err := peer.AddrInfoFromP2pAddr(addr); err == nil {
			a.configured = append(a.configured, info.ID)
		}
	}
	return a
}

// SetStore gives the admission the node's store, once open: libp2p may ask
// before, and is refused until then.
func (a *Admission) SetStore(s *crdt.Store) { a.store.Store(s) }

// Refused counts protocol streams refused to peers that are not members.
func (a *Admission) Refused() uint64 { return a.refused.Load() }

// Admit reports whether p may use Ferry's protocols with this node.
func (a *Admission) Admit(p peer.ID) bool {
	if p == a.self {
		return true
	}
	st := a.store.Load()
	if st == nil {
		return false
	}
	ctx := a.life.Context()
	if st.IsCurrentMember(ctx, p.String()) {
		return true
	}
	if p.String() == a.founder {
		return true // the root of membership, never revoked
	}
	return slices.Contains(a.configured, p) && !st.IsCurrentMember(ctx, a.self.String())
}

// admitConn decides a connection: admitted peers always; on an office with
// open invitations, anyone inbound.
func (a *Admission) admitConn(p peer.ID, dir network.Direction) bool {
	if a.Admit(p) {
		return true
	}
	return dir == network.DirInbound && a.book != nil && a.book.Pending()
}

// Gater applies the admission to every connection, once the peer's
// identity is known (after the security handshake).
func (a *Admission) Gater() connmgr.ConnectionGater { return gater{a} }

type gater struct{ a *Admission }

func (g gater) InterceptPeerDial(p peer.ID) bool                    { return g.a.admitConn(p, network.DirOutbound) }
func (g gater) InterceptAddrDial(peer.ID, multiaddr.Multiaddr) bool { return true }
func (g gater) InterceptAccept(network.ConnMultiaddrs) bool         { return true }
func (g gater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.a.admitConn(p, dir)
}
func (g gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// Host wraps h so that every stream, in or out, is refused unless the peer
// is admitted: the host every Ferry protocol, GossipSub and bitswap are
// given. Only the join protocol is served on the raw host.
func (a *Admission) Host(h host.Host) host.Host { return &memberHost{Host: h, a: a} }

type memberHost struct {
	host.Host
	a *Admission
}

func (h *memberHost) guard(handler network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		if p := s.Conn().RemotePeer(); !h.a.Admit(p) {
			h.a.refused.Add(1)
			h.a.log.Debug("refused a stream from a peer that is not a member", "peer", p, "protocol", s.Protocol())
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
	if !h.a.Admit(p) {
		return nil, fmt.Errorf("peer %s is not a member of this network", p)
	}
	return h.Host.NewStream(ctx, p, pids...)
}

// Enforce starts closing the connections of raw's peers that may no longer
// be connected: revoked members at once (see Changed), others that are not
// members once their time to enrol is over. Close stops it.
func (a *Admission) Enforce(raw host.Host) {
	a.life.Go(func(ctx context.Context) {
		t := time.NewTicker(JoinGrace / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.enforce:
			case <-t.C:
			}
			a.disconnect(raw)
		}
	})
}

// Changed is called when the membership changes (from the store's merge
// hooks: it does not block): revoked peers are disconnected at once.
func (a *Admission) Changed() {
	select {
	case a.enforce <- struct{}{}:
	default:
	}
}

func (a *Admission) disconnect(raw host.Host) {
	for _, c := range raw.Network().Conns() {
		p := c.RemotePeer()
		if a.Admit(p) {
			continue
		}
		if a.book != nil && a.book.Pending() && c.Stat().Direction == network.DirInbound && time.Since(c.Stat().Opened) < JoinGrace {
			continue
		}
		a.log.Info("disconnecting a peer that is not a member", "peer", p)
		_ = c.Close()
	}
}

// Close stops enforcing. Safe to call twice.
func (a *Admission) Close() error {
	a.life.Close()
	return nil
}
