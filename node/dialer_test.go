package node

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

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

func newTestDialer(t testing.TB, h host.Host, peers []multiaddr.Multiaddr) *Dialer {
	t.Helper()
	d, err := NewDialer(h, DialerConfig{Peers: peers, Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func connected(a host.Host, b peer.ID) bool {
	return a.Network().Connectedness(b) == network.Connected
}

func TestDialerPeerStartsLater(t *testing.T) {
	hA := newTestHost(t)
	keyB := testKey(t)
	idB, err := peer.IDFromPrivateKey(keyB)
	if err != nil {
		t.Fatal(err)
	}
	addrB := freeTCPAddr(t)
	d := newTestDialer(t, hA, mustAddrs(t, addrB+"/p2p/"+idB.String()))

	if !hA.ConnManager().IsProtected(idB, PeerProtectTag) {
		t.Error("peer not protected")
	}
	// A keeps trying while B is down.
	waitFor(t, 10*time.Second, func() bool { return d.attempts.Load() >= 3 })

	hB := newTestHostWithKey(t, keyB, addrB)
	waitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })

	// B drops the connection: A re-dials. (A may see the connection before
	// B has registered it: wait for both ends.)
	waitFor(t, 10*time.Second, func() bool { return connected(hB, hA.ID()) })
	old := hA.Network().ConnsToPeer(hB.ID())[0].ID()
	if err := hB.Network().ClosePeer(hA.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		for _, c := range hA.Network().ConnsToPeer(hB.ID()) {
			if c.ID() != old {
				return true
			}
		}
		return false
	})

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if hA.ConnManager().IsProtected(idB, PeerProtectTag) {
		t.Error("peer still protected after Close")
	}
}

func TestDialerOffline(t *testing.T) {
	hA, hB, hC := newTestHost(t), newTestHost(t), newTestHost(t)
	d := newTestDialer(t, hA, p2pAddrs(t, hB))
	waitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })
	connect(t, hA, hC) // not a configured peer

	d.SetOffline(true)
	if !d.Offline() {
		t.Fatal("Offline() = false")
	}
	waitFor(t, 5*time.Second, func() bool {
		return len(hA.Network().Conns()) == 0
	})

	// Inbound connections are closed while offline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hC.Connect(ctx, peer.AddrInfo{ID: hA.ID(), Addrs: hA.Addrs()})
	waitFor(t, 5*time.Second, func() bool { return len(hA.Network().Conns()) == 0 })

	// Stays offline: no dial attempt, no connection (Min is 50ms, so this
	// covers many retry periods).
	attempts := d.attempts.Load()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if connected(hA, hB.ID()) {
			t.Fatal("reconnected while offline")
		}
		if n := d.attempts.Load(); n != attempts {
			t.Fatalf("dialed while offline (%d -> %d attempts)", attempts, n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	d.SetOffline(false)
	waitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })
}

func TestDialerConfig(t *testing.T) {
	hA, hB := newTestHost(t, "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"), newTestHost(t)
	bad := mustAddrs(t, "/ip4/127.0.0.1/tcp/4001")[0]
	_, err := NewDialer(hB, DialerConfig{Peers: []multiaddr.Multiaddr{bad}}, testLogger())
	if err == nil || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("error %v does not name %s", err, bad)
	}

	addrs := p2pAddrs(t, hA)
	if len(addrs) < 2 {
		t.Fatalf("want 2 addresses, got %v", addrs)
	}
	// One address each, plus our own address (ignored).
	cfg := append([]multiaddr.Multiaddr{}, addrs...)
	cfg = append(cfg, p2pAddrs(t, hB)...)
	d, err := NewDialer(hB, DialerConfig{Peers: cfg}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(d.peers) != 1 {
		t.Fatalf("%d peers, want 1", len(d.peers))
	}
	if got := len(d.peers[hA.ID()].info.Addrs); got != len(addrs) {
		t.Errorf("%d addrs merged, want %d", got, len(addrs))
	}
	if got := len(hB.Peerstore().Addrs(hA.ID())); got < len(addrs) {
		t.Errorf("peerstore has %d addrs", got)
	}
	if d.min != DefaultDialMin || d.max != DefaultDialMax {
		t.Errorf("defaults: %s %s", d.min, d.max)
	}
	waitFor(t, 10*time.Second, func() bool { return connected(hB, hA.ID()) })
}

func TestDialerBackoff(t *testing.T) {
	d := &Dialer{min: 500 * time.Millisecond, max: 30 * time.Second}
	var b time.Duration
	var got []time.Duration
	for range 8 {
		b = d.nextBackoff(b)
		got = append(got, b)
	}
	want := []time.Duration{500e6, 1e9, 2e9, 4e9, 8e9, 16e9, 30e9, 30e9}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff %v, want %v", got, want)
		}
	}
	for range 100 {
		if j := jitter(4 * time.Second); j < 2*time.Second || j > 4*time.Second {
			t.Fatalf("jitter %s out of range", j)
		}
	}
}
