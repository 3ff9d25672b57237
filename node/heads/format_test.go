package heads

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/wire"
)

// oldProtocol is the heads exchange of store format 1 (the release before).
const oldProtocol protocol.ID = "/ferry/heads/1.0.0"

func newTestDetector(t testing.TB, h host.Host, name func(peer.ID) string, log *slog.Logger) *FormatDetector {
	t.Helper()
	if log == nil {
		log = testnet.Logger()
	}
	d, err := NewFormatDetector(h, name, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// warnings returns the messages logged at warn level.
func warnings(rec *testnet.LogRecorder) []string {
	var out []string
	for _, r := range rec.Records() {
		if r.Level == slog.LevelWarn {
			out = append(out, r.Message)
		}
	}
	return out
}

// An old node (it speaks only /ferry/heads/1.0.0) is reported, named, with
// both formats, logged once; an exchange with it fails with the same
// message; and once it speaks our version it is no longer reported.
func TestFormatDetectorReportsOldPeer(t *testing.T) {
	hOld, hNew := testnet.Host(t), testnet.Host(t)
	hOld.SetStreamHandler(oldProtocol, func(s network.Stream) { _ = s.Reset() })
	logs := &testnet.LogRecorder{}
	d := newTestDetector(t, hNew, func(p peer.ID) string {
		if p == hOld.ID() {
			return "old-laptop"
		}
		return ""
	}, slog.New(logs))
	s := newTestService(t, hNew, Config{Heads: fixedHeads(testnet.CIDs(t, "new", 1)), Formats: d}, newRecorder(), nil)

	testnet.Connect(t, hNew, hOld)
	testnet.WaitFor(t, 10*time.Second, func() bool { return len(d.Incompatible()) == 1 })

	inc := d.Incompatible()[0]
	if inc.Peer != hOld.ID() || inc.Format != 1 || inc.Since.IsZero() {
		t.Errorf("reported %+v, want peer %s with format 1", inc, hOld.ID())
	}
	for _, want := range []string{"old-laptop", hOld.ID().String(), "store format 1", "store format 2", "upgrade that node"} {
		if !strings.Contains(inc.Reason, want) {
			t.Errorf("reason %q does not say %q", inc.Reason, want)
		}
	}
	if got, ok := d.Peer(hOld.ID()); !ok || got != inc {
		t.Errorf("Peer(old) = %+v, %t; want %+v", got, ok, inc)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.Exchange(ctx, hOld.ID())
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), inc.Reason) {
		t.Errorf("exchange with the old node: %v; want ErrIncompatible with %q", err, inc.Reason)
	}
	// Every check (identify, the exchange) saw the same peer: one warning.
	if w := warnings(logs); len(w) != 1 || w[0] != inc.Reason {
		t.Errorf("warnings %q, want exactly %q", w, inc.Reason)
	}

	// The old node is upgraded in place: it now speaks our version.
	hOld.SetStreamHandler(Protocol, func(s network.Stream) { _ = s.Reset() })
	hOld.RemoveStreamHandler(oldProtocol)
	testnet.WaitFor(t, 10*time.Second, func() bool { return len(d.Incompatible()) == 0 })
	if _, ok := d.Peer(hOld.ID()); ok {
		t.Error("the upgraded node is still reported")
	}
}

// A node that starts speaking an old version after the connection came up
// (identify push) is reported too; a newer format asks to upgrade this node.
func TestFormatDetectorProtocolsUpdated(t *testing.T) {
	hOther, hNew := testnet.Host(t), testnet.Host(t)
	d := newTestDetector(t, hNew, nil, nil)
	testnet.Connect(t, hNew, hOther)
	testnet.WaitFor(t, 10*time.Second, func() bool {
		protos, _ := hNew.Peerstore().GetProtocols(hOther.ID())
		return len(protos) > 0 // identified
	})
	if got := d.Incompatible(); len(got) != 0 {
		t.Fatalf("a peer without heads exchange is reported: %+v", got)
	}

	hOther.SetStreamHandler("/ferry/heads/3.0.0", func(s network.Stream) { _ = s.Reset() })
	testnet.WaitFor(t, 10*time.Second, func() bool { return len(d.Incompatible()) == 1 })
	inc := d.Incompatible()[0]
	for _, want := range []string{hOther.ID().String(), "store format 3", "store format 2", "upgrade this node"} {
		if !strings.Contains(inc.Reason, want) {
			t.Errorf("reason %q does not say %q", inc.Reason, want)
		}
	}
}

// Two nodes of this release exchange heads and report nothing.
func TestFormatDetectorSameFormat(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	logsA, logsB := &testnet.LogRecorder{}, &testnet.LogRecorder{}
	dA := newTestDetector(t, hA, nil, slog.New(logsA))
	dB := newTestDetector(t, hB, nil, slog.New(logsB))
	recA, recB := newRecorder(), newRecorder()
	sA := newTestService(t, hA, Config{Heads: fixedHeads(testnet.CIDs(t, "A", 1)), Formats: dA}, recA, nil)
	newTestService(t, hB, Config{Heads: fixedHeads(testnet.CIDs(t, "B", 1)), Formats: dB}, recB, nil)

	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return recA.count(hB.ID()) > 0 && recB.count(hA.ID()) > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sA.Exchange(ctx, hB.ID()); err != nil {
		t.Fatalf("exchange: %v", err)
	}
	for name, d := range map[string]*FormatDetector{"A": dA, "B": dB} {
		if got := d.Incompatible(); len(got) != 0 {
			t.Errorf("%s reports %+v", name, got)
		}
	}
	if w := append(warnings(logsA), warnings(logsB)...); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
}

// Without a detector, an exchange with an old node still fails with the
// message (read from the peerstore).
func TestExchangeOldPeerWithoutDetector(t *testing.T) {
	hOld, hNew := testnet.Host(t), testnet.Host(t)
	hOld.SetStreamHandler(oldProtocol, func(s network.Stream) { _ = s.Reset() })
	s := newTestService(t, hNew, Config{Heads: fixedHeads(testnet.CIDs(t, "new", 1))}, newRecorder(), nil)
	testnet.Connect(t, hNew, hOld)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.Exchange(ctx, hOld.ID())
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), wire.Mismatch(hOld.ID().String(), 1)) {
		t.Errorf("exchange with the old node: %v; want ErrIncompatible naming both formats", err)
	}
}
