package peering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protowire"
)

// testShare stands for the node's heads protocol: Config.Share.
const testShare protocol.ID = "/ferry-test/heads/1.0.0"

func TestExchangeGarbage(t *testing.T) {
	logs := &testnet.LogRecorder{}
	hB, hC, hD, hE := newTestHost(t), newTestHost(t), newTestHost(t), newTestHost(t)
	dB := newTestPeering(t, hB, Config{ExchangeInterval: time.Hour, Share: testShare}, slog.New(logs))
	// hD speaks the shared protocol, so hB shares it.
	hD.SetStreamHandler(testShare, func(s network.Stream) { _ = s.Reset() })
	testnet.Connect(t, hD, hB)
	testnet.Connect(t, hC, hB) // hC speaks the peer exchange by hand
	testnet.WaitFor(t, 10*time.Second, func() bool {
		protos, _ := hB.Peerstore().SupportsProtocols(hD.ID(), testShare)
		return len(protos) > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// request asks hB by hand, writing req; it returns hB's reply.
	request := func(write func(io.Writer) error) ([]byte, error) {
		str, err := hC.NewStream(ctx, hB.ID(), Protocol)
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
	hC.SetStreamHandler(Protocol, func(s network.Stream) {
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
		} else if jr.malformed && !errors.Is(err, errMalformed) {
			t.Errorf("%s: %v, want a malformed response", jr.name, err)
		}
		if got := dB.Learned(); len(got) != 0 {
			t.Fatalf("%s: learned %d peers", jr.name, len(got))
		}
	}
	if !logs.Has(slog.LevelInfo, "dropping malformed peers response") {
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
	if !logs.Has(slog.LevelInfo, "peers response: dropped invalid entries") {
		t.Error("dropped entries not logged")
	}
	testnet.WaitFor(t, 10*time.Second, func() bool { return connected(hB, hE.ID()) && hasLearnedTag(hB, hE.ID()) })
	if hB.ConnManager().IsProtected(hE.ID(), ProtectTag) {
		t.Error("learned peer is protected")
	}

	// 4. hB still answers a proper request, with hD (speaks the shared
	// protocol; hE and hC do not) and its loopback address (we ask over
	// loopback).
	reply, err := request(func(w io.Writer) error { return msgio.NewVarintWriter(w).WriteMsg(nil) })
	if err != nil {
		t.Fatal(err)
	}
	msg, err := readFrame(strings.NewReader(string(reply)), maxPeersFrame)
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

	// 5. Closed: learned peers untagged, the protocol refused.
	if err := dB.Close(); err != nil {
		t.Fatal(err)
	}
	if hasLearnedTag(hB, hE.ID()) {
		t.Error("learned peer still tagged after Close")
	}
	if str, err := hC.NewStream(ctx, hB.ID(), Protocol); err == nil {
		_ = str.SetDeadline(time.Now().Add(15 * time.Second))
		_ = msgio.NewVarintWriter(str).WriteMsg(nil)
		_ = str.CloseWrite()
		if reply, err := io.ReadAll(str); err == nil && len(reply) > 0 {
			t.Errorf("answered after Close: %q", reply)
		}
		_ = str.Reset()
	}
}

// decodePeersResponse keeps loopback addresses only when told, and
// usablePeerAddr strips a matching /p2p suffix.
func TestExchangeDecodeAddrFilter(t *testing.T) {
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
	// usableAddrs (mDNS, shared lists) applies the same filter, dedupes
	// and keeps at most maxAddrsPerPeer.
	var many []multiaddr.Multiaddr
	for i := range 40 {
		many = append(many, loop, lan, multiaddr.StringCast(fmt.Sprintf("/ip4/192.168.1.5/tcp/%d", 5000+i)))
	}
	if got := usableAddrs(many, id, false); len(got) != maxAddrsPerPeer || containsAddr(got, loop) || !got[0].Equal(multiaddr.StringCast("/ip4/192.168.1.5/udp/4001/quic-v1")) {
		t.Errorf("usableAddrs: %v", got)
	}
}
