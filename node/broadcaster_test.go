package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	cid "github.com/ipfs/go-cid"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/ipfs/go-ds-crdt/pb"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

const testTopic = "ferry-test-heads"

// testCids makes n distinct dag-pb CIDs derived from seed.
func testCids(t testing.TB, seed string, n int) []cid.Cid {
	t.Helper()
	out := make([]cid.Cid, n)
	for i := range out {
		h, err := mh.Sum(fmt.Appendf(nil, "%s-%d", seed, i), mh.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = cid.NewCidV1(cid.DagProtobuf, h)
	}
	return out
}

func mustEncode(t testing.TB, heads []cid.Cid) []byte {
	t.Helper()
	data, err := EncodeHeads(heads)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func newTestPubSub(t testing.TB, h host.Host) *pubsub.PubSub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ps, err := NewPubSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func newTestBroadcaster(t testing.TB, h host.Host, ps *pubsub.PubSub) *Broadcaster {
	t.Helper()
	b, err := NewBroadcaster(context.Background(), ps, h.ID(), testTopic, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// nextWithin calls Next with a timeout.
func nextWithin(b *Broadcaster, d time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return b.Next(ctx)
}

func TestEncodeValidateHeads(t *testing.T) {
	heads := testCids(t, "x", 5)
	got, err := ValidateHeadsPayload(mustEncode(t, heads))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(heads) {
		t.Fatalf("got %d heads", len(got))
	}
	for i := range heads {
		if !got[i].Equals(heads[i]) {
			t.Errorf("head %d: %s != %s", i, got[i], heads[i])
		}
	}
	// Same bytes as go-ds-crdt's encoding.
	want, err := proto.Marshal(&pb.CRDTBroadcast{Heads: []*pb.Head{{Cid: heads[0].Bytes()}}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustEncode(t, heads[:1]), want) {
		t.Error("encoding differs from go-ds-crdt's")
	}
	if got, err := ValidateHeadsPayload(nil); err != nil || len(got) != 0 {
		t.Errorf("empty payload: %v, %v", got, err)
	}

	badCid, _ := proto.Marshal(&pb.CRDTBroadcast{Heads: []*pb.Head{{Cid: []byte{1, 2, 3}}}})
	for name, data := range map[string][]byte{
		"garbage":    []byte("garbage"),
		"bad cid":    badCid,
		"bare cid":   heads[0].Bytes(), // legacy format, not produced by Ferry
		"many heads": mustEncode(t, testCids(t, "many", MaxHeads+1)),
		"too large":  make([]byte, MaxHeadsPayload+1),
	} {
		if _, err := ValidateHeadsPayload(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ValidateHeadsPayload(mustEncode(t, testCids(t, "max", MaxHeads))); err != nil {
		t.Errorf("%d heads: %v", MaxHeads, err)
	}
}

func TestBroadcasterPubSub(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	bA := newTestBroadcaster(t, hA, newTestPubSub(t, hA))
	bB := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	connect(t, hA, hB)

	payload := mustEncode(t, testCids(t, "a", 3))
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
	hA, hB := newTestHost(t), newTestHost(t)
	psA := newTestPubSub(t, hA) // raw publisher: no validator
	bB := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	topicA, err := psA.Join(testTopic)
	if err != nil {
		t.Fatal(err)
	}
	connect(t, hA, hB)

	badCid, _ := proto.Marshal(&pb.CRDTBroadcast{Heads: []*pb.Head{{Cid: []byte{1, 2, 3}}}})
	garbage := [][]byte{[]byte("garbage"), badCid, mustEncode(t, nil)}
	valid := mustEncode(t, testCids(t, "valid", 1))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(data []byte) bool {
		heads, err := ValidateHeadsPayload(data)
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

func TestBroadcasterInjectAndClose(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	b := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	payload := mustEncode(t, testCids(t, "inject", 2))
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
			if i != broadcastQueueSize {
				t.Errorf("queue held %d payloads, want %d", i, broadcastQueueSize)
			}
			break
		}
		if i > broadcastQueueSize {
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
	hA, hB := newTestHost(t), newTestHost(t)
	bA := newTestBroadcaster(t, hA, newTestPubSub(t, hA))
	bB := newTestBroadcaster(t, hB, newTestPubSub(t, hB))
	connect(t, hA, hB)

	heads := testCids(t, "split", MaxHeads+10)
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
			got, err := ValidateHeadsPayload(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range got {
				seen[c] = true
			}
		}
	}
}
