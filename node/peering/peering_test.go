package peering

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pconnmgr "github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/encoding/protowire"
)

// Test helpers: real libp2p hosts on loopback, with a connection manager
// (the default one neither protects nor tags).

func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger discards logs unless FERRY_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("FERRY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func testKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustAddrs(t testing.TB, addrs ...string) []multiaddr.Multiaddr {
	t.Helper()
	out := make([]multiaddr.Multiaddr, 0, len(addrs))
	for _, s := range addrs {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// newTestHostWithKey starts a host listening on addrs (default a random
// loopback TCP port), closed at the end of the test.
func newTestHostWithKey(t testing.TB, key crypto.PrivKey, addrs ...string) host.Host {
	t.Helper()
	if len(addrs) == 0 {
		addrs = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	cm, err := p2pconnmgr.NewConnManager(100, 400)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(addrs...),
		libp2p.DisableRelay(),
		libp2p.ConnectionManager(cm),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func newTestHost(t testing.TB, addrs ...string) host.Host {
	t.Helper()
	return newTestHostWithKey(t, testKey(t), addrs...)
}

func connect(t testing.TB, a, b host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatalf("connect %s -> %s: %v", a.ID(), b.ID(), err)
	}
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
		log = testLogger()
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

// recordingHandler keeps every log record.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r)
	h.mu.Unlock()
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) has(level slog.Level, msg string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.Level == level && r.Message == msg {
			return true
		}
	}
	return false
}
