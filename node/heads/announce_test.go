package heads

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Heads that change on A reach B through Changed alone: no Exchange call,
// no periodic exchange, no fallback check.
func TestAnnounceOnChange(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	headsA := &mutableHeads{heads: testnet.CIDs(t, "A1", 1)}
	recB := newRecorder()
	sA := newTestService(t, hA, Config{Heads: headsA.get}, newRecorder(), nil)
	sB := newTestService(t, hB, Config{Heads: fixedHeads(testnet.CIDs(t, "B", 1))}, recB, nil)
	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) > 0 })

	for i, seed := range []string{"A2", "A3"} {
		next := testnet.CIDs(t, seed, 2)
		headsA.set(next)
		sA.Changed()
		sA.Changed() // coalesced, never blocks
		testnet.WaitFor(t, 10*time.Second, func() bool { return sameCids(recB.last(hA.ID()), next) })
		if got := sB.PeerHeads(hA.ID()); !sameCids(got, next) {
			t.Errorf("change %d: B: PeerHeads(A) = %v, want %v", i, got, next)
		}
	}
}

// Without Changed, the fallback check notices changed heads.
func TestAnnounceFallbackCheck(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	headsA := &mutableHeads{heads: testnet.CIDs(t, "A1", 1)}
	recB := newRecorder()
	newTestService(t, hA, Config{Heads: headsA.get, AnnounceCheck: 20 * time.Millisecond}, newRecorder(), nil)
	newTestService(t, hB, Config{Heads: fixedHeads(testnet.CIDs(t, "B", 1))}, recB, nil)
	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) > 0 })

	next := testnet.CIDs(t, "A2", 3)
	headsA.set(next)
	testnet.WaitFor(t, 10*time.Second, func() bool { return sameCids(recB.last(hA.ID()), next) })
}

// With Interval > 0, heads are exchanged again and again, changed or not.
func TestPeriodicExchange(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	headsA := testnet.CIDs(t, "A", 1)
	recB := newRecorder()
	newTestService(t, hA, Config{Heads: fixedHeads(headsA), Interval: 50 * time.Millisecond}, newRecorder(), nil)
	sB := newTestService(t, hB, Config{Heads: fixedHeads(testnet.CIDs(t, "B", 1))}, recB, nil)
	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) > 0 })
	first, _ := sB.LastExchange(hA.ID())
	testnet.WaitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) >= 4 })
	if last, _ := sB.LastExchange(hA.ID()); !last.After(first) {
		t.Error("LastExchange did not move")
	}
	if got := recB.last(hA.ID()); !sameCids(got, headsA) {
		t.Errorf("B got %v", got)
	}
}

func TestExchangeAll(t *testing.T) {
	hA, hB, hC, hD := testnet.Host(t), testnet.Host(t), testnet.Host(t), testnet.Host(t)
	recA, recB, recC := newRecorder(), newRecorder(), newRecorder()
	headsA, headsB, headsC := testnet.CIDs(t, "A", 1), testnet.CIDs(t, "B", 2), testnet.CIDs(t, "C", 3)
	sA := newTestService(t, hA, Config{Heads: fixedHeads(headsA)}, recA, nil)
	newTestService(t, hB, Config{Heads: fixedHeads(headsB)}, recB, nil)
	newTestService(t, hC, Config{Heads: fixedHeads(headsC)}, recC, nil)
	// hD does not speak the protocol.
	testnet.Connect(t, hA, hB)
	testnet.Connect(t, hA, hC)
	testnet.Connect(t, hA, hD)
	// Let the exchanges on connect finish.
	testnet.WaitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) > 0 && recC.count(hA.ID()) > 0 })

	nB, nC := recA.count(hB.ID()), recA.count(hC.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := sA.ExchangeAll(ctx)
	if len(res) != 3 {
		t.Fatalf("%d results, want 3: %v", len(res), res)
	}
	for i := 1; i < len(res); i++ {
		if res[i-1].Peer >= res[i].Peer {
			t.Errorf("results not sorted by peer: %v", res)
		}
	}
	for _, r := range res {
		switch r.Peer {
		case hB.ID(), hC.ID():
			if r.Err != nil {
				t.Errorf("%s: %v", r.Peer, r.Err)
			}
		case hD.ID():
			if r.Err == nil {
				t.Error("exchange with a peer without the protocol succeeded")
			}
		default:
			t.Errorf("result for unknown peer %s", r.Peer)
		}
	}
	// ExchangeAll returns once every peer's heads were handed over.
	if recA.count(hB.ID()) != nB+1 || recA.count(hC.ID()) != nC+1 {
		t.Errorf("A's Receive: %d from B (want %d), %d from C (want %d)",
			recA.count(hB.ID()), nB+1, recA.count(hC.ID()), nC+1)
	}
	if !sameCids(recA.last(hB.ID()), headsB) || !sameCids(recA.last(hC.ID()), headsC) {
		t.Error("A got the wrong heads")
	}

	if err := sA.Close(); err != nil {
		t.Fatal(err)
	}
	for _, r := range sA.ExchangeAll(ctx) {
		if r.Err == nil {
			t.Errorf("%s: exchange after Close succeeded", r.Peer)
		}
	}
}

// Close stops the loops and waits for what runs, even an exchange blocked
// in Receive.
func TestCloseWaits(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	entered := make(chan struct{}, 1)
	released := make(chan struct{})
	var once sync.Once
	sA := New(hA, Config{
		Heads:    fixedHeads(testnet.CIDs(t, "A", 1)),
		Interval: 10 * time.Millisecond,
		Receive: func(ctx context.Context, _ peer.ID, _ []byte) {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-ctx.Done() // cancelled by Close
			once.Do(func() { close(released) })
		},
	}, testnet.Logger())
	newTestService(t, hB, Config{Heads: fixedHeads(testnet.CIDs(t, "B", 1))}, nil, nil)
	testnet.Connect(t, hA, hB)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Receive never called")
	}
	if err := sA.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-released:
	default:
		t.Fatal("Close returned before Receive did")
	}
	if err := sA.Close(); err != nil {
		t.Fatal(err)
	}
	sA.Changed() // harmless after Close
}
