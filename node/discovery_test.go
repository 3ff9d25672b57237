package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/encoding/protowire"
)

// startDiscovery runs a Discovery next to a cluster node (node.go does not
// start one yet), closed before the node.
// startDiscovery returns the node's own discovery (the node starts it).
func startDiscovery(t *testing.T, n *clusterNode, _ DiscoveryConfig) *Discovery {
	t.Helper()
	return n.discovery
}

func newTestDiscovery(t *testing.T, h host.Host, cfg DiscoveryConfig, offline func() bool, log *slog.Logger) *Discovery {
	t.Helper()
	d, err := NewDiscovery(h, cfg, offline, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

func learnedIDs(d *Discovery) []peer.ID {
	var out []peer.ID
	for _, info := range d.Learned() {
		out = append(out, info.ID)
	}
	return out
}

func hasLearnedTag(h host.Host, p peer.ID) bool {
	info := h.ConnManager().GetTagInfo(p)
	return info != nil && info.Tags[LearnedPeerTag] > 0
}

// The scenario: two laptops configured only with the office learn
// each other from it, connect directly, and keep converging once the office
// is gone.
func TestDiscoveryPeerExchangeLaptopsConvergeWithoutOffice(t *testing.T) {
	c := newCluster(t, 2)
	office, l1, l2 := c.nodes[0], c.nodes[1], c.nodes[2]
	var ds []*Discovery
	for _, n := range c.nodes {
		ds = append(ds, startDiscovery(t, n, DiscoveryConfig{Topic: n.cfg.Topic, ExchangeInterval: time.Second}))
	}
	// The laptops only know the office's address: they connect to each
	// other once the office told them about each other.
	waitFor(t, 20*time.Second, func() bool {
		return connected(l1.Host(), l2.ID()) &&
			slices.Contains(learnedIDs(ds[1]), l2.ID()) && slices.Contains(learnedIDs(ds[2]), l1.ID())
	})
	// Tagged, not protected: the Dialer protects configured peers only.
	waitFor(t, 10*time.Second, func() bool {
		return hasLearnedTag(l1.Host(), l2.ID()) && hasLearnedTag(l2.Host(), l1.ID())
	})
	if l1.Host().ConnManager().IsProtected(l2.ID(), PeerProtectTag) {
		t.Error("learned peer is protected")
	}
	// Pubsub between the laptops, so a write reaches the other directly.
	waitFor(t, 10*time.Second, func() bool {
		return slices.Contains(l1.bcast.topic.ListPeers(), l2.ID()) && slices.Contains(l2.bcast.topic.ListPeers(), l1.ID())
	})

	if err := ds[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := office.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		return !connected(l1.Host(), office.ID()) && !connected(l2.Host(), office.ID())
	})
	put(t, l1, "hotel1", map[string]any{"first_name": "Met", "last_name": "At the hotel"})
	waitFor(t, 20*time.Second, func() bool {
		v1 := visible(t, l1)
		return strings.Contains(v1, "hotel1{") && v1 == visible(t, l2) && headsOf(l1) == headsOf(l2)
	})
	if !connected(l1.Host(), l2.ID()) {
		t.Error("laptops lost their direct connection")
	}
}

// While a laptop is offline its Discovery neither asks nor dials, even when
// every learned peer is due; back online it dials again.
func TestDiscoveryOfflineDoesNotDial(t *testing.T) {
	c := newCluster(t, 2)
	l1, l2 := c.nodes[1], c.nodes[2]
	var ds []*Discovery
	for _, n := range c.nodes {
		ds = append(ds, startDiscovery(t, n, DiscoveryConfig{Topic: n.cfg.Topic, ExchangeInterval: 200 * time.Millisecond}))
	}
	d1 := ds[1]
	// Either laptop may dial first; wait until laptop1 learned laptop2 too.
	waitFor(t, 20*time.Second, func() bool {
		return connected(l1.Host(), l2.ID()) && slices.Contains(learnedIDs(d1), l2.ID())
	})

	c.setOffline(true, 1)
	// Let an iteration of the loop that began before going offline finish.
	loops := d1.loops.Load()
	waitFor(t, 10*time.Second, func() bool { return d1.loops.Load() >= loops+2 })
	attempts, asks := d1.attempts.Load(), d1.asks.Load()

	d1.resetBackoffs() // every learned peer due now
	d1.exchangeAll()
	d1.dialDue()
	if err := d1.ask(context.Background(), l2.ID()); !errors.Is(err, errDiscoveryOffline) {
		t.Errorf("ask while offline: %v", err)
	}
	// Several loop iterations, each of which would ask (interval 200ms)
	// and dial (backoff reset) if offline mode were ignored.
	loops = d1.loops.Load()
	waitFor(t, 10*time.Second, func() bool { return d1.loops.Load() >= loops+3 })
	if got := d1.attempts.Load(); got != attempts {
		t.Errorf("%d dial attempts while offline", got-attempts)
	}
	if got := d1.asks.Load(); got != asks {
		t.Errorf("%d peer exchanges while offline", got-asks)
	}
	for _, conn := range l1.Host().Network().ConnsToPeer(l2.ID()) {
		if conn.Stat().Direction == network.DirOutbound {
			t.Error("offline laptop has an outbound connection to the other laptop")
		}
	}

	c.setOffline(false, 1)
	waitFor(t, 20*time.Second, func() bool {
		return d1.attempts.Load() > attempts && connected(l1.Host(), l2.ID())
	})
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

func TestDiscoveryGarbage(t *testing.T) {
	logs := &recordingHandler{}
	hB, hC, hD, hE := newTestHost(t), newTestHost(t), newTestHost(t), newTestHost(t)
	dB := newTestDiscovery(t, hB, DiscoveryConfig{ExchangeInterval: time.Hour}, nil, slog.New(logs))
	// hD speaks Ferry's heads protocol, so hB shares it.
	hD.SetStreamHandler(HeadsProtocol, func(s network.Stream) { _ = s.Reset() })
	connect(t, hD, hB)
	connect(t, hC, hB) // hC speaks the peer exchange by hand
	waitFor(t, 10*time.Second, func() bool {
		protos, _ := hB.Peerstore().SupportsProtocols(hD.ID(), HeadsProtocol)
		return len(protos) > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// request asks hB by hand, writing req; it returns hB's reply.
	request := func(write func(io.Writer) error) ([]byte, error) {
		str, err := hC.NewStream(ctx, hB.ID(), PeersProtocol)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = str.Reset() }()
		_ = str.SetDeadline(time.Now().Add(15 * time.Second))
		_ = write(str)
		_ = str.CloseWrite()
		return io.ReadAll(str)
	}

	// 1. Junk requests get no answer.
	junkRequests := map[string]func(io.Writer) error{
		"raw junk": func(w io.Writer) error {
			_, err := w.Write([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xffjunk"))
			return err
		},
		"oversized frame": func(w io.Writer) error {
			return msgio.NewVarintWriter(w).WriteMsg(make([]byte, maxPeersRequest+1))
		},
		"truncated frame": func(w io.Writer) error {
			_, err := w.Write([]byte{100, 1, 2, 3})
			return err
		},
		"bad protobuf": func(w io.Writer) error {
			return msgio.NewVarintWriter(w).WriteMsg([]byte{0x0a, 0xff})
		},
		"nothing": func(io.Writer) error { return nil },
	}
	for name, write := range junkRequests {
		if reply, err := request(write); err == nil && len(reply) > 0 {
			t.Errorf("request %s: answered %q", name, reply)
		}
	}

	// 2. Junk responses are dropped whole and nothing is learned.
	var (
		respMu sync.Mutex
		resp   func(io.Writer) error
	)
	hC.SetStreamHandler(PeersProtocol, func(s network.Stream) {
		defer func() { _ = s.Close() }()
		_ = s.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := msgio.NewVarintReaderSize(s, maxPeersRequest).ReadMsg(); err != nil {
			_ = s.Reset()
			return
		}
		respMu.Lock()
		write := resp
		respMu.Unlock()
		if write == nil || write(s) != nil {
			_ = s.Reset()
		}
	})
	frame := func(b []byte) func(io.Writer) error {
		return func(w io.Writer) error { return msgio.NewVarintWriter(w).WriteMsg(b) }
	}
	addr := multiaddr.StringCast("/ip4/192.0.2.7/tcp/4001").Bytes()
	tenThousand := func(withIDs bool) []byte {
		var b []byte
		for i := range 10_000 {
			if withIDs {
				b = appendPeerRecord(b, []byte(fakePeerID(t, i)), addr)
			} else {
				b = appendPeerRecord(b, nil)
			}
		}
		return b
	}
	var sixtyFive, seventeenAddrs []byte
	for i := range 65 {
		sixtyFive = appendPeerRecord(sixtyFive, []byte(fakePeerID(t, i)), addr)
	}
	{
		var addrs [][]byte
		for i := range 17 {
			addrs = append(addrs, multiaddr.StringCast(fmt.Sprintf("/ip4/192.0.2.7/tcp/%d", 4000+i)).Bytes())
		}
		seventeenAddrs = appendPeerRecord(nil, []byte(fakePeerID(t, 1)), addrs...)
	}
	var twoIDs []byte
	{
		var rec []byte
		for i := range 2 {
			rec = protowire.AppendTag(rec, 1, protowire.BytesType)
			rec = protowire.AppendBytes(rec, []byte(fakePeerID(t, i)))
		}
		rec = protowire.AppendTag(rec, 2, protowire.BytesType)
		rec = protowire.AppendBytes(rec, addr)
		twoIDs = protowire.AppendTag(twoIDs, 1, protowire.BytesType)
		twoIDs = protowire.AppendBytes(twoIDs, rec)
	}
	junkResponses := []struct {
		name      string
		write     func(io.Writer) error
		malformed bool // dropped as malformed (logged), not a mere read error
	}{
		{"10,000 peers in an oversized frame", frame(tenThousand(true)), true},
		{"10,000 peers in a small frame", frame(tenThousand(false)), true},
		{"65 peers", frame(sixtyFive), true},
		{"17 addresses", frame(seventeenAddrs), true},
		{"bad protobuf", frame([]byte{0x0a, 0xff, 0xff}), true},
		{"wrong wire type", frame([]byte{0x08, 0x01}), true},
		{"two ids in a record", frame(twoIDs), true},
		{"raw junk", func(w io.Writer) error {
			_, err := w.Write([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xffjunk"))
			return err
		}, false},
		{"truncated frame", func(w io.Writer) error {
			_, err := w.Write([]byte{100, 1, 2})
			return err
		}, false},
		{"no reply", nil, false},
	}
	for _, jr := range junkResponses {
		respMu.Lock()
		resp = jr.write
		respMu.Unlock()
		err := dB.ask(ctx, hC.ID())
		if err == nil {
			t.Errorf("%s: accepted", jr.name)
		} else if jr.malformed && !errors.Is(err, errMalformedPeers) {
			t.Errorf("%s: %v, want a malformed response", jr.name, err)
		}
		if got := dB.Learned(); len(got) != 0 {
			t.Fatalf("%s: learned %d peers", jr.name, len(got))
		}
	}
	if !logs.has(slog.LevelInfo, "dropping malformed peers response") {
		t.Error("malformed responses not logged")
	}

	// 3. A response mixing garbage with one good peer (hE): only hE with its
	// good address is learned, and dialed.
	var eAddr multiaddr.Multiaddr
	for _, a := range hE.Addrs() {
		eAddr = a
	}
	eID := []byte(hE.ID())
	var mixed []byte
	mixed = appendPeerRecord(mixed, eID, []byte("\x04garbage"), eAddr.Bytes(),
		multiaddr.StringCast("/ip4/0.0.0.0/tcp/1").Bytes(),
		multiaddr.StringCast("/ip4/192.0.2.9/tcp/1/p2p/"+hD.ID().String()).Bytes())
	mixed = appendPeerRecord(mixed, []byte("not a peer id"), addr)
	mixed = appendPeerRecord(mixed, []byte(hB.ID()), addr)                        // the asker itself
	mixed = appendPeerRecord(mixed, []byte(hC.ID()), addr)                        // the responder
	mixed = appendPeerRecord(mixed, []byte(fakePeerID(t, 7)), []byte("\x00\x01")) // no valid address
	mixed = appendPeerRecord(mixed, eID, addr)                                    // duplicate
	mixed = protowire.AppendTag(mixed, 9, protowire.VarintType)                   // unknown field
	mixed = protowire.AppendVarint(mixed, 1)
	respMu.Lock()
	resp = frame(mixed)
	respMu.Unlock()
	if err := dB.ask(ctx, hC.ID()); err != nil {
		t.Fatal(err)
	}
	got := dB.Learned()
	if len(got) != 1 || got[0].ID != hE.ID() || len(got[0].Addrs) != 1 || !got[0].Addrs[0].Equal(eAddr) {
		t.Fatalf("learned %v, want only %s at %s", got, hE.ID(), eAddr)
	}
	if !logs.has(slog.LevelInfo, "peers response: dropped invalid entries") {
		t.Error("dropped entries not logged")
	}
	waitFor(t, 10*time.Second, func() bool { return connected(hB, hE.ID()) && hasLearnedTag(hB, hE.ID()) })

	// 4. hB still answers a proper request, with hD (speaks heads; hE and hC
	// do not) and its loopback address (we ask over loopback).
	reply, err := request(func(w io.Writer) error { return msgio.NewVarintWriter(w).WriteMsg(nil) })
	if err != nil {
		t.Fatal(err)
	}
	r := msgio.NewVarintReaderSize(strings.NewReader(string(reply)), maxPeersFrame)
	msg, err := r.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	infos, dropped, err := decodePeersResponse(msg, hC.ID(), hB.ID(), true)
	if err != nil || dropped != 0 {
		t.Fatalf("decode reply: %v (dropped %d)", err, dropped)
	}
	if len(infos) != 1 || infos[0].ID != hD.ID() || len(infos[0].Addrs) == 0 {
		t.Fatalf("reply lists %v, want %s", infos, hD.ID())
	}
}

// decodePeersResponse keeps loopback addresses only when told, and
// usablePeerAddr strips a matching /p2p suffix.
func TestDiscoveryDecodeAddrFilter(t *testing.T) {
	id := fakePeerID(t, 1)
	loop := multiaddr.StringCast("/ip4/127.0.0.1/tcp/4001")
	lan := multiaddr.StringCast("/ip4/192.168.1.5/udp/4001/quic-v1/p2p/" + id.String())
	b := encodePeersResponse([]peer.AddrInfo{{ID: id, Addrs: []multiaddr.Multiaddr{loop, lan}}})
	for _, loopbackOK := range []bool{false, true} {
		infos, _, err := decodePeersResponse(b, fakePeerID(t, 2), fakePeerID(t, 3), loopbackOK)
		if err != nil || len(infos) != 1 {
			t.Fatalf("decode: %v %v", infos, err)
		}
		var got []string
		for _, a := range infos[0].Addrs {
			got = append(got, a.String())
		}
		want := []string{"/ip4/192.168.1.5/udp/4001/quic-v1"}
		if loopbackOK {
			want = append([]string{"/ip4/127.0.0.1/tcp/4001"}, want...)
		}
		if !slices.Equal(got, want) {
			t.Errorf("loopbackOK=%v: addrs %v, want %v", loopbackOK, got, want)
		}
	}
	for _, s := range []string{"/dns4/example.com/tcp/1", "/ip4/1.2.3.4", "/ip6/::/tcp/1", "/ip4/1.2.3.4/tcp/1/p2p/" + fakePeerID(t, 9).String()} {
		if _, ok := usablePeerAddr(multiaddr.StringCast(s), id, true); ok {
			t.Errorf("%s accepted", s)
		}
	}
}

// At most maxLearnedPeers peers and maxAddrsPerPeer addresses are kept.
func TestDiscoveryLearnedIsBounded(t *testing.T) {
	h := newTestHost(t)
	d := newTestDiscovery(t, h, DiscoveryConfig{}, nil, testLogger())
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
	waitFor(t, 30*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.dialing) == 0
	})
	n := d.attempts.Load()
	if n > maxLearnedPeers+44 {
		t.Errorf("%d dial attempts for %d peers", n, maxLearnedPeers+44)
	}
	d.dialDue()
	if d.attempts.Load() != n {
		t.Error("peers re-dialed before their backoff elapsed")
	}
}

// multicastInterfaces lists the interfaces zeroconf would use: up, with the
// MULTICAST flag.
func multicastInterfaces() []string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []string
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
			out = append(out, ifi.Name)
		}
	}
	return out
}

func TestDiscoveryMDNS(t *testing.T) {
	topic := fmt.Sprintf("ferry-mdns-test-%d", time.Now().UnixNano())
	var offA atomic.Bool
	hA := newTestHost(t)
	dA := newTestDiscovery(t, hA, DiscoveryConfig{MDNS: true, Topic: topic}, offA.Load, testLogger())
	ifaces := multicastInterfaces()
	if len(ifaces) == 0 {
		// The start was attempted (and failed, logged); stopping is clean.
		if err := dA.Close(); err != nil {
			t.Fatal(err)
		}
		t.Skip("mDNS not testable here: no interface is up with the MULTICAST flag (net.Interfaces); " +
			"the mDNS service start was attempted and the Discovery closed cleanly")
	}
	if !dA.mdnsOn.Load() {
		t.Fatalf("mDNS did not start although %v support multicast", ifaces)
	}
	hC := newTestHost(t) // another Ferry network on the same LAN
	newTestDiscovery(t, hC, DiscoveryConfig{MDNS: true, Topic: topic + "-other"}, nil, testLogger())
	hB := newTestHost(t)
	dB := newTestDiscovery(t, hB, DiscoveryConfig{MDNS: true, Topic: topic}, nil, testLogger())

	waitFor(t, 30*time.Second, func() bool {
		return connected(hA, hB.ID()) && slices.Contains(learnedIDs(dA), hB.ID()) && slices.Contains(learnedIDs(dB), hA.ID())
	})
	if slices.Contains(learnedIDs(dA), hC.ID()) || slices.Contains(learnedIDs(dB), hC.ID()) {
		t.Error("found a node of another Ferry network")
	}

	// No announcing while offline; back online, mDNS runs again.
	offA.Store(true)
	waitFor(t, 10*time.Second, func() bool { return !dA.mdnsOn.Load() })
	offA.Store(false)
	waitFor(t, 10*time.Second, func() bool { return dA.mdnsOn.Load() })
}
