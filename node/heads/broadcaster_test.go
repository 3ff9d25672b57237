package heads

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/testnet"
	cid "github.com/ipfs/go-cid"
	dscrdt "github.com/ipfs/go-ds-crdt"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

const testTopic = "ferry-test-heads"

func newTestPubSub(t testing.TB, h host.Host, opts ...pubsub.Option) *pubsub.PubSub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ps, err := NewPubSub(ctx, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func newTestBroadcaster(t testing.TB, h host.Host, ps *pubsub.PubSub) *Broadcaster {
	t.Helper()
	b, err := NewBroadcaster(context.Background(), ps, h.ID(), testTopic, testnet.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// nexter is a Broadcaster or a Gate.
type nexter interface {
	Next(ctx context.Context) ([]byte, error)
}

// nextWithin calls Next with a timeout.
func nextWithin(b nexter, d time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return b.Next(ctx)
}

func TestBroadcasterPubSub(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	bA := newTestBroadcaster(t, hA, newTestPubSub(t, hA))
	bB := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	testnet.Connect(t, hA, hB)

	payload := mustEncode(t, testnet.CIDs(t, "a", 3))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []byte
	for got == nil {
		if ctx.Err() != nil {
			t.Fatal("broadcast never arrived")
		}
		if err := bA.Broadcast(ctx, payload); err != nil {
			t.Fatal(err)
		}
		data, err := nextWithin(bB, 200*time.Millisecond)
		if err == nil {
			got = data
		}
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload differs")
	}
	// A drops its own messages.
	if data, err := nextWithin(bA, 300*time.Millisecond); err == nil {
		t.Fatalf("A received its own message (%d bytes)", len(data))
	}
}

func TestBroadcasterRejectsGarbage(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	psA := newTestPubSub(t, hA) // raw publisher: no validator
	bB := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	topicA, err := psA.Join(testTopic)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Connect(t, hA, hB)

	garbage := [][]byte{[]byte("garbage"), badCidPayload(), mustEncode(t, nil)}
	valid := mustEncode(t, testnet.CIDs(t, "valid", 1))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(data []byte) bool {
		heads, err := Decode(data)
		if err != nil || len(heads) == 0 {
			t.Fatalf("Next yielded an invalid payload %q (%v)", data, err)
		}
		return bytes.Equal(data, valid)
	}
	gotValid := false
	for !gotValid {
		if ctx.Err() != nil {
			t.Fatal("valid message never arrived")
		}
		// Garbage first, then a valid marker on the same path.
		for _, g := range garbage {
			if err := topicA.Publish(ctx, g); err != nil {
				t.Fatal(err)
			}
		}
		if err := topicA.Publish(ctx, valid); err != nil {
			t.Fatal(err)
		}
		if data, err := nextWithin(bB, 200*time.Millisecond); err == nil {
			gotValid = check(data)
		}
	}
	// Whatever is still queued is valid too.
	for {
		data, err := nextWithin(bB, 300*time.Millisecond)
		if err != nil {
			break
		}
		check(data)
	}
}

func TestBroadcasterAdmit(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	bA := newTestBroadcaster(t, hA, newTestPubSub(t, hA))
	bB := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	bB.SetAdmit(func(p peer.ID) bool { return p != hA.ID() })
	testnet.Connect(t, hA, hB)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Wait for the mesh: B's messages reach A.
	payload := mustEncode(t, testnet.CIDs(t, "b", 1))
	for {
		if ctx.Err() != nil {
			t.Fatal("B's broadcast never reached A")
		}
		if err := bB.Broadcast(ctx, payload); err != nil {
			t.Fatal(err)
		}
		if _, err := nextWithin(bA, 200*time.Millisecond); err == nil {
			break
		}
	}
	// A is not admitted by B: none of its messages gets through.
	for range 5 {
		if err := bA.Broadcast(ctx, mustEncode(t, testnet.CIDs(t, "a", 1))); err != nil {
			t.Fatal(err)
		}
	}
	if data, err := nextWithin(bB, 500*time.Millisecond); err == nil {
		t.Fatalf("B accepted a message from a peer it does not admit (%d bytes)", len(data))
	}
}

func TestBroadcasterInjectAndClose(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	b := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	payload := mustEncode(t, testnet.CIDs(t, "inject", 2))
	if err := b.Inject(ctx, hA.ID(), payload); err != nil {
		t.Fatal(err)
	}
	got, err := b.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("injected payload differs")
	}
	if err := b.Inject(ctx, hA.ID(), []byte("garbage")); err == nil {
		t.Error("garbage injected")
	}
	if err := b.Inject(ctx, hA.ID(), mustEncode(t, nil)); err != nil {
		t.Errorf("empty heads: %v", err)
	}
	if data, err := nextWithin(b, 100*time.Millisecond); err == nil {
		t.Errorf("Next yielded %q", data)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next with expired ctx: %v", err)
	}

	// Bounded queue: Inject blocks when full and honours ctx.
	for i := 0; ; i++ {
		ictx, icancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := b.Inject(ictx, hA.ID(), payload)
		icancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("inject %d: %v", i, err)
			}
			if i != queueSize {
				t.Errorf("queue held %d payloads, want %d", i, queueSize)
			}
			break
		}
		if i > queueSize {
			t.Fatal("queue unbounded")
		}
	}

	done := make(chan error, 1)
	go func() {
		_, err := b.Next(context.Background())
		for err == nil {
			_, err = b.Next(context.Background())
		}
		done <- err
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, dscrdt.ErrNoMoreBroadcast) {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Next did not return after Close")
	}
	if _, err := b.Next(ctx); !errors.Is(err, dscrdt.ErrNoMoreBroadcast) {
		t.Fatalf("Next after Close: %v", err)
	}
	if err := b.Inject(ctx, hA.ID(), payload); err == nil {
		t.Error("Inject after Close succeeded")
	}
	if err := b.Broadcast(ctx, payload); err == nil {
		t.Error("Broadcast after Close succeeded")
	}
}

func TestBroadcasterSplitsManyHeads(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	bA := newTestBroadcaster(t, hA, newTestPubSub(t, hA))
	bB := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	testnet.Connect(t, hA, hB)

	heads := testnet.CIDs(t, "split", MaxHeads+10)
	payload := mustEncode(t, heads)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[cid.Cid]bool{}
	for len(seen) < len(heads) {
		if ctx.Err() != nil {
			t.Fatalf("received %d of %d heads", len(seen), len(heads))
		}
		if err := bA.Broadcast(ctx, payload); err != nil {
			t.Fatal(err)
		}
		for {
			data, err := nextWithin(bB, 200*time.Millisecond)
			if err != nil {
				break
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range got {
				seen[c] = true
			}
		}
	}
}

// TestBroadcasterObserveSeesWhatWaits: the observer sees every payload as
// it arrives, even while nobody takes from the queue (go-ds-crdt stuck on
// a block): a node learns of a later epoch anyway.
func TestBroadcasterObserveSeesWhatWaits(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	b := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	var mu sync.Mutex
	var seen []crdt.Epoch
	b.SetObserve(func(data []byte) {
		if _, ep, err := DecodeEpoch(data); err == nil {
			mu.Lock()
			seen = append(seen, ep)
			mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	payload := mustEncode(t, testnet.CIDs(t, "fill", 1))
	for i := 0; i < queueSize; i++ { // the queue, full: nobody calls Next
		if err := b.Inject(ctx, hA.ID(), payload); err != nil {
			t.Fatal(err)
		}
	}
	later := crdt.Epoch{Number: 7, ID: "00000000000000aa"}
	enc, err := EncodeEpoch(testnet.CIDs(t, "later", 1), later)
	if err != nil {
		t.Fatal(err)
	}
	ictx, icancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer icancel()
	if err := b.Inject(ictx, hA.ID(), enc); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("inject into a full queue: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != queueSize+1 || seen[len(seen)-1] != later {
		t.Fatalf("observed %d payloads, last %v", len(seen), seen[len(seen)-1])
	}
}
