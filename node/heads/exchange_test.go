package heads

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio"
)

func TestExchangeOnConnect(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	headsA, headsB := testnet.CIDs(t, "A", 2), testnet.CIDs(t, "B", 3)
	recA, recB := newRecorder(), newRecorder()
	sA := newTestService(t, hA, Config{Heads: fixedHeads(headsA)}, recA, nil)
	sB := newTestService(t, hB, Config{Heads: fixedHeads(headsB)}, recB, nil)

	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool {
		return recA.count(hB.ID()) > 0 && recB.count(hA.ID()) > 0
	})
	if got := recA.last(hB.ID()); !sameCids(got, headsB) {
		t.Errorf("A got %v, want %v", got, headsB)
	}
	if got := recB.last(hA.ID()); !sameCids(got, headsA) {
		t.Errorf("B got %v, want %v", got, headsA)
	}
	if _, ok := sA.LastExchange(hB.ID()); !ok {
		t.Error("A: no last exchange")
	}
	if _, ok := sB.LastExchange(hA.ID()); !ok {
		t.Error("B: no last exchange")
	}
	if got := sA.PeerHeads(hB.ID()); !sameCids(got, headsB) {
		t.Errorf("A: PeerHeads(B) = %v, want %v", got, headsB)
	}
	if got := sB.PeerHeads(hA.ID()); !sameCids(got, headsA) {
		t.Errorf("B: PeerHeads(A) = %v, want %v", got, headsA)
	}

	// Explicit exchange, from B this time.
	nA, nB := recA.count(hB.ID()), recB.count(hA.ID())
	before, _ := sB.LastExchange(hA.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sB.Exchange(ctx, hA.ID()); err != nil {
		t.Fatal(err)
	}
	if recB.count(hA.ID()) != nB+1 {
		t.Errorf("B's Receive got %d payloads, want %d", recB.count(hA.ID()), nB+1)
	}
	testnet.WaitFor(t, 5*time.Second, func() bool { return recA.count(hB.ID()) == nA+1 })
	if after, _ := sB.LastExchange(hA.ID()); !after.After(before) {
		t.Error("LastExchange not updated")
	}

	// No dialing: an exchange with an unconnected peer fails.
	hC := testnet.Host(t)
	hA.Peerstore().AddAddrs(hC.ID(), hC.Addrs(), time.Minute)
	if err := sA.Exchange(ctx, hC.ID()); err == nil {
		t.Error("exchange with unconnected peer succeeded")
	}
	if got := sA.PeerHeads(hC.ID()); got != nil {
		t.Errorf("PeerHeads of a peer never exchanged with: %v", got)
	}

	if err := sA.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sA.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sA.Exchange(ctx, hB.ID()); err == nil {
		t.Error("Exchange after Close succeeded")
	}
}

func TestExchangeEmptyHeads(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	headsB := testnet.CIDs(t, "B", 1)
	recA, recB := newRecorder(), newRecorder()
	sA := newTestService(t, hA, Config{}, recA, nil) // a fresh replica
	sB := newTestService(t, hB, Config{Heads: fixedHeads(headsB)}, recB, nil)
	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return recA.count(hB.ID()) > 0 })
	if _, ok := sA.LastExchange(hB.ID()); !ok {
		t.Error("no last exchange")
	}
	testnet.WaitFor(t, 10*time.Second, func() bool {
		_, ok := sB.LastExchange(hA.ID())
		return ok
	})
	if recB.total() != 0 {
		t.Error("B's Receive got an empty heads list")
	}
	if got := sB.PeerHeads(hA.ID()); got != nil {
		t.Errorf("B: PeerHeads(A) = %v for a peer without heads", got)
	}
}

func TestExchangePeerWithoutProtocol(t *testing.T) {
	hA, hC := testnet.Host(t), testnet.Host(t)
	logs := &testnet.LogRecorder{}
	sA := newTestService(t, hA, Config{Heads: fixedHeads(testnet.CIDs(t, "A", 1))}, newRecorder(), slog.New(logs))
	testnet.Connect(t, hA, hC)
	testnet.WaitFor(t, 10*time.Second, func() bool {
		return logs.Has(slog.LevelDebug, "peer does not support heads exchange")
	})
	if _, ok := sA.LastExchange(hC.ID()); ok {
		t.Error("exchange recorded with a peer without the protocol")
	}
}

func TestExchangeGarbage(t *testing.T) {
	hA, hB, hC := testnet.Host(t), testnet.Host(t), testnet.Host(t)
	headsA, headsB := testnet.CIDs(t, "A", 2), testnet.CIDs(t, "B", 2)
	recA, recB := newRecorder(), newRecorder()
	sB := newTestService(t, hB, Config{Heads: fixedHeads(headsB)}, recB, nil)
	testnet.Connect(t, hC, hB) // hC speaks the protocol by hand

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	junk := map[string]func(w io.Writer) error{
		"raw junk": func(w io.Writer) error {
			_, err := w.Write([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xffjunk"))
			return err
		},
		"bad proto": func(w io.Writer) error {
			return msgio.NewVarintWriter(w).WriteMsg([]byte("garbage"))
		},
		"oversized frame": func(w io.Writer) error {
			return msgio.NewVarintWriter(w).WriteMsg(make([]byte, MaxPayload+1))
		},
		"truncated frame": func(w io.Writer) error {
			_, err := w.Write([]byte{100, 1, 2, 3})
			return err
		},
		"nothing": func(io.Writer) error { return nil },
	}
	for name, write := range junk {
		str, err := hC.NewStream(ctx, hB.ID(), Protocol)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_ = str.SetDeadline(time.Now().Add(15 * time.Second))
		_ = write(str)
		_ = str.CloseWrite()
		reply, err := io.ReadAll(str)
		if err == nil && len(reply) > 0 {
			t.Errorf("%s: handler replied %q", name, reply)
		}
		_ = str.Reset()
	}
	if recB.total() != 0 {
		t.Errorf("Receive got %d payloads from junk", recB.total())
	}
	if _, ok := sB.LastExchange(hC.ID()); ok {
		t.Error("junk exchange recorded")
	}
	if got := sB.PeerHeads(hC.ID()); got != nil {
		t.Errorf("PeerHeads from junk: %v", got)
	}

	// The handler still works.
	sA := newTestService(t, hA, Config{Heads: fixedHeads(headsA)}, recA, nil)
	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) > 0 })
	if err := sA.Exchange(ctx, hB.ID()); err != nil {
		t.Fatal(err)
	}
	if got := recA.last(hB.ID()); !sameCids(got, headsB) {
		t.Errorf("A got %v", got)
	}
}

// A dialing peer that answers the protocol but never initiates: the
// receiving side initiates after inboundExchangeDelay.
func TestExchangeInboundFallback(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	headsA, headsB := testnet.CIDs(t, "A", 1), testnet.CIDs(t, "B", 1)
	replyA := mustEncode(t, headsA)
	gotFromB := make(chan []byte, 1)
	hA.SetStreamHandler(Protocol, func(str network.Stream) {
		defer str.Close()
		msg, err := msgio.NewVarintReaderSize(str, MaxPayload).ReadMsg()
		if err != nil {
			_ = str.Reset()
			return
		}
		gotFromB <- append([]byte(nil), msg...)
		_ = msgio.NewVarintWriter(str).WriteMsg(replyA)
	})
	recB := newRecorder()
	sB := newTestService(t, hB, Config{Heads: fixedHeads(headsB)}, recB, nil)
	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) > 0 })
	if got := recB.last(hA.ID()); !sameCids(got, headsA) {
		t.Errorf("B got %v", got)
	}
	if heads, err := Decode(<-gotFromB); err != nil || !sameCids(heads, headsB) {
		t.Errorf("A got %v (%v)", heads, err)
	}
	if _, ok := sB.LastExchange(hA.ID()); !ok {
		t.Error("no last exchange")
	}
}

func TestExchangeHeadsError(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	recA, recB := newRecorder(), newRecorder()
	sA := newTestService(t, hA, Config{Heads: fixedHeads(testnet.CIDs(t, "A", 1))}, recA, nil)
	newTestService(t, hB, Config{Heads: func(context.Context) ([]cid.Cid, error) {
		return nil, errors.New("store closed")
	}}, recB, nil)
	testnet.Connect(t, hA, hB)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sA.Exchange(ctx, hB.ID()); err == nil {
		t.Error("exchange succeeded although the peer could not list its heads")
	}
	if recB.total() != 0 {
		t.Error("B delivered heads of a failed exchange")
	}
}
