package peering

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// office starts an office and two laptops configured only with the
// office's address; all speak testShare (the heads protocol of a node).
func office(t *testing.T, exchange time.Duration) (hosts []host.Host, ps []*Peering) {
	t.Helper()
	for i := range 3 {
		h := newTestHost(t)
		h.SetStreamHandler(testShare, func(s network.Stream) { _ = s.Reset() })
		cfg := Config{Share: testShare, ExchangeInterval: exchange, DialMin: 50 * time.Millisecond, DialMax: 500 * time.Millisecond}
		if i > 0 {
			cfg.Peers = p2pAddrs(t, hosts[0])
		}
		hosts = append(hosts, h)
		ps = append(ps, newTestPeering(t, h, cfg, nil))
	}
	return hosts, ps
}

// The laptops scenario: two laptops configured only with the office learn
// each other from it, connect directly, and stay connected once the office
// is gone.
func TestLearnedLaptopsConnectWithoutOffice(t *testing.T) {
	hs, ps := office(t, time.Second)
	off, l1, l2 := hs[0], hs[1], hs[2]
	testnet.WaitFor(t, 20*time.Second, func() bool {
		return connected(l1, l2.ID()) &&
			slices.Contains(learnedIDs(ps[1]), l2.ID()) && slices.Contains(learnedIDs(ps[2]), l1.ID())
	})
	// Tagged, not protected: only configured peers are protected.
	testnet.WaitFor(t, 10*time.Second, func() bool {
		return hasLearnedTag(l1, l2.ID()) && hasLearnedTag(l2, l1.ID())
	})
	if l1.ConnManager().IsProtected(l2.ID(), ProtectTag) {
		t.Error("learned peer is protected")
	}
	if !l1.ConnManager().IsProtected(off.ID(), ProtectTag) {
		t.Error("configured peer is not protected")
	}

	if err := ps[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 10*time.Second, func() bool {
		return !connected(l1, off.ID()) && !connected(l2, off.ID())
	})
	// The laptops keep retrying the office, and keep each other.
	a1 := ps[1].attempts.Load()
	testnet.WaitFor(t, 10*time.Second, func() bool { return ps[1].attempts.Load() > a1 })
	if !connected(l1, l2.ID()) || !slices.Contains(learnedIDs(ps[1]), l2.ID()) {
		t.Error("laptops lost their direct connection")
	}
}

// While a laptop is offline it neither asks nor dials, even when every
// target is due; back online it dials again.
func TestLearnedOfflineDoesNotDial(t *testing.T) {
	hs, ps := office(t, 200*time.Millisecond)
	l1, l2 := hs[1], hs[2]
	d1 := ps[1]
	// Either laptop may dial first; wait until laptop1 learned laptop2 too.
	testnet.WaitFor(t, 20*time.Second, func() bool {
		return connected(l1, l2.ID()) && slices.Contains(learnedIDs(d1), l2.ID())
	})

	d1.SetOffline(true)
	// Let a dial loop iteration that began before going offline finish.
	loops := d1.loops.Load()
	testnet.WaitFor(t, 10*time.Second, func() bool { return d1.loops.Load() >= loops+2 })
	attempts, asks := d1.attempts.Load(), d1.asks.Load()

	d1.resetBackoffs() // every target due now
	d1.exchangeAll()
	d1.dialDue()
	if err := d1.ask(context.Background(), l2.ID()); !errors.Is(err, errOffline) {
		t.Errorf("ask while offline: %v", err)
	}
	// Several iterations of both loops, each of which would ask (interval
	// 200ms) and dial (backoff reset) if offline mode were ignored.
	loops, ticks := d1.loops.Load(), d1.ticks.Load()
	testnet.WaitFor(t, 10*time.Second, func() bool { return d1.loops.Load() >= loops+3 && d1.ticks.Load() >= ticks+3 })
	if got := d1.attempts.Load(); got != attempts {
		t.Errorf("%d dial attempts while offline", got-attempts)
	}
	if got := d1.asks.Load(); got != asks {
		t.Errorf("%d peer exchanges while offline", got-asks)
	}
	for _, conn := range l1.Network().ConnsToPeer(l2.ID()) {
		if conn.Stat().Direction == network.DirOutbound {
			t.Error("offline laptop has an outbound connection to the other laptop")
		}
	}

	d1.SetOffline(false)
	testnet.WaitFor(t, 20*time.Second, func() bool {
		return d1.attempts.Load() > attempts && connected(l1, l2.ID())
	})
}

// At most maxLearnedPeers peers and maxAddrsPerPeer addresses are kept.
func TestLearnedIsBounded(t *testing.T) {
	h := newTestHost(t)
	d := newTestPeering(t, h, Config{}, nil)
	refused := multiaddr.StringCast(freeTCPAddr(t)) // nothing listens: dials fail at once
	var infos []peer.AddrInfo
	for i := range maxLearnedPeers + 44 {
		infos = append(infos, peer.AddrInfo{ID: fakePeerID(t, i), Addrs: []multiaddr.Multiaddr{refused}})
	}
	var many []multiaddr.Multiaddr
	for i := range 40 {
		many = append(many, multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 20000+i)))
	}
	infos = append(infos, peer.AddrInfo{ID: h.ID(), Addrs: many}) // never itself
	infos[0].Addrs = many
	d.learn("test", infos)
	got := d.Learned()
	if len(got) != maxLearnedPeers {
		t.Errorf("%d learned peers, want %d", len(got), maxLearnedPeers)
	}
	for _, info := range got {
		if info.ID == h.ID() {
			t.Error("learned itself")
		}
		if len(info.Addrs) > maxAddrsPerPeer {
			t.Errorf("%s: %d addresses", info.ID, len(info.Addrs))
		}
	}
	// Each peer was dialed once; none again before its backoff elapses.
	testnet.WaitFor(t, 30*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, tg := range d.targets {
			if tg.dialing {
				return false
			}
		}
		return true
	})
	n := d.attempts.Load()
	if n > maxLearnedPeers+44 {
		t.Errorf("%d dial attempts for %d peers", n, maxLearnedPeers+44)
	}
	d.dialDue()
	if d.attempts.Load() != n {
		t.Error("peers re-dialed before their backoff elapsed")
	}
	d.mu.Lock()
	nLearned, nTargets := d.nLearned, len(d.targets)
	d.mu.Unlock()
	if nLearned != maxLearnedPeers || nTargets != maxLearnedPeers {
		t.Errorf("nLearned %d, %d targets", nLearned, nTargets)
	}
}

// A configured peer that is also learned is one target: listed by Learned,
// kept when its learned part expires, and still Protected.
func TestLearnedConfiguredPeer(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	// DialMin one minute: no re-dial after the connection is closed below.
	d := newTestPeering(t, hA, Config{Peers: p2pAddrs(t, hB), DialMin: time.Minute}, nil)
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })
	d.learn("test", []peer.AddrInfo{{ID: hB.ID(), Addrs: hB.Addrs()}})
	if got := learnedIDs(d); !slices.Equal(got, []peer.ID{hB.ID()}) {
		t.Fatalf("learned %v", got)
	}
	if err := hA.Network().ClosePeer(hB.ID()); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 10*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return !d.targets[hB.ID()].connected && !d.targets[hB.ID()].dialing
	})
	d.expire(time.Now().Add(learnedAddrTTL + time.Minute))
	if got := d.Learned(); len(got) != 0 {
		t.Errorf("still learned after expiry: %v", got)
	}
	d.mu.Lock()
	tB, n := d.targets[hB.ID()], d.nLearned
	d.mu.Unlock()
	if tB == nil || !tB.configured || n != 0 {
		t.Fatalf("target %+v, nLearned %d", tB, n)
	}
	if !hA.ConnManager().IsProtected(hB.ID(), ProtectTag) {
		t.Error("configured peer no longer protected")
	}
	// Going offline and back makes it due at once.
	d.SetOffline(true)
	d.SetOffline(false)
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hA, hB.ID()) })
}
