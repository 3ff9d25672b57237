package peering

import (
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/encoding/protowire"
)

// Test helpers: real libp2p hosts on loopback, with a connection manager
// (the default one neither protects nor tags).

func newTestHost(t testing.TB, addrs ...string) host.Host {
	t.Helper()
	return testnet.HostWithKey(t, testnet.Key(t), addrs...)
}

func connected(a host.Host, b peer.ID) bool {
	return a.Network().Connectedness(b) == network.Connected
}

// freeTCPAddr returns a 127.0.0.1 TCP multiaddr with a port free right now.
func freeTCPAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
}

// p2pAddrs returns h's listen addresses with /p2p/<id>.
func p2pAddrs(t testing.TB, h host.Host) []multiaddr.Multiaddr {
	t.Helper()
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// newTestPeering starts a Peering closed at the end of the test (Close
// must succeed, also after the test closed it).
func newTestPeering(t testing.TB, h host.Host, cfg Config, log *slog.Logger) *Peering {
	t.Helper()
	if log == nil {
		log = testnet.Logger()
	}
	p, err := New(h, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func learnedIDs(p *Peering) []peer.ID {
	var out []peer.ID
	for _, info := range p.Learned() {
		out = append(out, info.ID)
	}
	return out
}

func hasLearnedTag(h host.Host, p peer.ID) bool {
	info := h.ConnManager().GetTagInfo(p)
	return info != nil && info.Tags[LearnedTag] > 0
}

// fakePeerID returns a valid peer id (sha256 multihash) derived from i.
func fakePeerID(t testing.TB, i int) peer.ID {
	t.Helper()
	sum, err := mh.Sum(fmt.Appendf(nil, "peer %d", i), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return peer.ID(sum)
}

func appendPeerRecord(b []byte, id []byte, addrs ...[]byte) []byte {
	var rec []byte
	if id != nil {
		rec = protowire.AppendTag(rec, 1, protowire.BytesType)
		rec = protowire.AppendBytes(rec, id)
	}
	for _, a := range addrs {
		rec = protowire.AppendTag(rec, 2, protowire.BytesType)
		rec = protowire.AppendBytes(rec, a)
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, rec)
}
