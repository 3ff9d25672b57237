package peering

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

func newTestDialer(t testing.TB, h host.Host, peers []multiaddr.Multiaddr) *Peering {
	t.Helper()
	return newTestPeering(t, h, Config{Peers: peers, DialMin: 50 * time.Millisecond, DialMax: 200 * time.Millisecond}, nil)
}

func TestDialerPeerStartsLater(t *testing.T) {
	hA := newTestHost(t)
	keyB := testnet.Key(t)
	idB, err := peer.IDFromPrivateKey(keyB)
	if err != nil {
		t.Fatal(err)
	}
	addrB := freeTCPAddr(t)
	d := newTestDialer(t, hA, testnet.Addrs(t, addrB+"/p2p/"+idB.String()))

	if !hA.ConnManager().IsProtected(idB, ProtectTag) {
		t.Error("peer not protected")
	}
	// A keeps trying while B is down.
	testnet.WaitFor(t, 10*time.Second, func() bool { return d.DialAttempts() >= 3 })

	hB := testnet.HostWithKey(t, keyB, addrB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })

	// B drops the connection: A re-dials. (A may see the connection before
	// B has registered it: wait for both ends.)
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hB, hA.ID()) })
	old := hA.Network().ConnsToPeer(hB.ID())[0].ID()
	if err := hB.Network().ClosePeer(hA.ID()); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 10*time.Second, func() bool {
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
	if hA.ConnManager().IsProtected(idB, ProtectTag) {
		t.Error("peer still protected after Close")
	}
}

func TestDialerOffline(t *testing.T) {
	hA, hB, hC := newTestHost(t), newTestHost(t), newTestHost(t)
	d := newTestDialer(t, hA, p2pAddrs(t, hB))
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })
	testnet.Connect(t, hA, hC) // not a configured peer

	d.SetOffline(true)
	if !d.Offline() {
		t.Fatal("Offline() = false")
	}
	testnet.WaitFor(t, 5*time.Second, func() bool {
		return len(hA.Network().Conns()) == 0
	})

	// Inbound connections are closed while offline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hC.Connect(ctx, peer.AddrInfo{ID: hA.ID(), Addrs: hA.Addrs()})
	testnet.WaitFor(t, 5*time.Second, func() bool { return len(hA.Network().Conns()) == 0 })

	// Stays offline: no dial attempt, no connection (DialMin is 50ms, so
	// this covers many retry periods).
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
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })
}

// Config.Offline: nothing is dialed before SetOffline(false).
func TestDialerStartOffline(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	d := newTestPeering(t, hA, Config{Peers: p2pAddrs(t, hB), DialMin: 50 * time.Millisecond, Offline: true}, nil)
	if !d.Offline() {
		t.Fatal("Offline() = false")
	}
	loops := d.loops.Load()
	testnet.WaitFor(t, 10*time.Second, func() bool { return d.loops.Load() >= loops+3 })
	if n := d.attempts.Load(); n != 0 || connected(hA, hB.ID()) {
		t.Fatalf("%d dial attempts while starting offline", n)
	}
	d.SetOffline(false)
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })
}

func TestDialerConfig(t *testing.T) {
	hA, hB := newTestHost(t, "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"), newTestHost(t)
	bad := testnet.Addrs(t, "/ip4/127.0.0.1/tcp/4001")[0]
	_, err := New(hB, Config{Peers: []multiaddr.Multiaddr{bad}}, testnet.Logger())
	if err == nil || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("error %v does not name %s", err, bad)
	}
	if _, err := New(hB, Config{MDNS: true}, testnet.Logger()); err == nil {
		t.Error("mDNS without a topic accepted")
	}

	addrs := p2pAddrs(t, hA)
	if len(addrs) < 2 {
		t.Fatalf("want 2 addresses, got %v", addrs)
	}
	// One address each, plus our own address (ignored).
	cfg := append([]multiaddr.Multiaddr{}, addrs...)
	cfg = append(cfg, p2pAddrs(t, hB)...)
	d := newTestPeering(t, hB, Config{Peers: cfg}, nil)
	d.mu.Lock()
	n, tA := len(d.targets), d.targets[hA.ID()]
	var got int
	if tA != nil {
		got = len(tA.addrs)
	}
	d.mu.Unlock()
	if n != 1 || tA == nil || !tA.configured {
		t.Fatalf("%d targets, want 1 configured", n)
	}
	if got != len(addrs) {
		t.Errorf("%d addrs merged, want %d", got, len(addrs))
	}
	if got := len(hB.Peerstore().Addrs(hA.ID())); got < len(addrs) {
		t.Errorf("peerstore has %d addrs", got)
	}
	if d.configured.min != DefaultDialMin || d.configured.max != DefaultDialMax {
		t.Errorf("defaults: %s %s", d.configured.min, d.configured.max)
	}
	if d.cfg.ExchangeInterval != DefaultExchangeInterval || d.cfg.Share != Protocol {
		t.Errorf("defaults: %s %s", d.cfg.ExchangeInterval, d.cfg.Share)
	}
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hB, hA.ID()) })
}

func TestDialerBackoff(t *testing.T) {
	for _, tc := range []struct {
		k    kind
		want []time.Duration
	}{
		{kind{min: 500 * time.Millisecond, max: 30 * time.Second}, []time.Duration{500e6, 1e9, 2e9, 4e9, 8e9, 16e9, 30e9, 30e9}},
		{learnedKind, []time.Duration{10e9, 20e9, 40e9, 80e9, 160e9, 300e9, 300e9, 300e9}},
	} {
		var b time.Duration
		var got []time.Duration
		for range 8 {
			b = nextBackoff(b, tc.k.min, tc.k.max)
			got = append(got, b)
		}
		for i := range tc.want {
			if got[i] != tc.want[i] {
				t.Fatalf("backoff %v, want %v", got, tc.want)
			}
		}
	}
	for range 100 {
		if j := jitter(4 * time.Second); j < 2*time.Second || j > 4*time.Second {
			t.Fatalf("jitter %s out of range", j)
		}
	}
	if jitter(0) != 0 {
		t.Error("jitter(0) != 0")
	}
}

// A dropped connection: configured peers (stableAfter 0) are re-dialed
// after min with a reset backoff; a learned peer's connection shorter than
// stableConnAge counts as a failure, a longer one resets the backoff.
func TestDialerDropped(t *testing.T) {
	p := &Peering{configured: kind{min: time.Second, max: 8 * time.Second}}
	now := time.Now()
	for _, tc := range []struct {
		name        string
		t           target
		lasted      time.Duration
		backoff     time.Duration
		nextDialDue time.Duration
	}{
		{"configured", target{configured: true, backoff: 4 * time.Second}, 0, 0, time.Second},
		{"learned stable", target{learned: true, backoff: 40 * time.Second}, stableConnAge, 0, learnedDialMin},
		{"learned short, first", target{learned: true}, time.Second, learnedDialMin, learnedDialMin},
		{"learned short, again", target{learned: true, backoff: 40 * time.Second}, time.Second, 80 * time.Second, 80 * time.Second},
	} {
		tg := tc.t
		tg.connected, tg.since = true, now.Add(-tc.lasted)
		p.dropped(&tg, now)
		if tg.connected || tg.backoff != tc.backoff || tg.nextDial.Sub(now) != tc.nextDialDue {
			t.Errorf("%s: backoff %s, due in %s; want %s, %s", tc.name, tg.backoff, tg.nextDial.Sub(now), tc.backoff, tc.nextDialDue)
		}
	}
}
