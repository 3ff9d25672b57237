package blocksync

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/wire"
)

func channelProtocol(c string) protocol.ID {
	return wire.ChannelPrefix(c) + "/blocks/" + wire.Version
}

// newOptSyncer is newTestSyncer with options and a heads function.
func newOptSyncer(t testing.TB, h host.Host, bs blockstore.Blockstore, heads HeadsFunc, log *slog.Logger, opts ...Option) *Syncer {
	t.Helper()
	if log == nil {
		log = testnet.Logger()
	}
	s := newSyncer(h, bs, heads, log, testConfig(), opts...)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func smallChain(t testing.TB, tag string, n int) []*merkledag.ProtoNode {
	var out []*merkledag.ProtoNode
	for i := range n {
		var parents []*merkledag.ProtoNode
		if i > 0 {
			parents = append(parents, out[i-1])
		}
		out = append(out, testNode(t, true, fmt.Sprintf("%s%d", tag, i), parents...))
	}
	return out
}

// A Syncer on a channel's protocol syncs with a peer on the same protocol;
// a Syncer on the default protocol reaches neither way.
func TestSyncerProtocol(t *testing.T) {
	west := channelProtocol("west")
	chain := smallChain(t, "w", 20)
	hA, hB, hC := testnet.Host(t), testnet.Host(t), testnet.Host(t)
	bsA, bsB, bsC := newTestBlockstore(), newTestBlockstore(), newTestBlockstore()
	putNodes(t, bsA, chain...)
	putNodes(t, bsC, chain...)
	sA := newOptSyncer(t, hA, bsA, fixedHeads(cidsOf(chain[19])), nil, WithProtocol(west))
	sB := newOptSyncer(t, hB, bsB, fixedHeads(nil), nil, WithProtocol(west))
	sC := newOptSyncer(t, hC, bsC, fixedHeads(cidsOf(chain[19])), nil) // default protocol
	if !slices.Contains(hA.Mux().Protocols(), west) || slices.Contains(hA.Mux().Protocols(), Protocol) {
		t.Fatalf("A serves %v, want %s and not %s", hA.Mux().Protocols(), west, Protocol)
	}
	testnet.Connect(t, hB, hA)
	testnet.Connect(t, hC, hA)
	testnet.Connect(t, hB, hC)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := sB.Fetch(ctx, hA.ID(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != len(chain) || !sameSet(res.Heads, cidsOf(chain[19])) {
		t.Fatalf("fetched %d blocks, heads %v; want %d, %v", res.Blocks, res.Heads, len(chain), cidsOf(chain[19]))
	}
	if _, err := sC.Fetch(ctx, hA.ID(), nil, nil); err == nil {
		t.Error("a Syncer on the default protocol fetched from one on a channel's")
	}
	if _, err := sB.Fetch(ctx, hC.ID(), nil, nil); err == nil {
		t.Error("a Syncer on a channel's protocol fetched from one on the default")
	}
	if st := sA.Stats(); st.ServedBlocks != int64(len(chain)) {
		t.Errorf("A served %d blocks, want %d", st.ServedBlocks, len(chain))
	}

	if err := sA.Close(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(hA.Mux().Protocols(), west) {
		t.Errorf("A still serves %s after Close", west)
	}
}

// Two Syncers sharing one slot: while one serves (a requester that sends
// nothing holds the slot), the other drops a request after its wait; once
// the slot is free, it serves.
func TestSharedSlotsBusy(t *testing.T) {
	p1, p2 := channelProtocol("west"), channelProtocol("east")
	chain := smallChain(t, "e", 5)
	hA, hB := testnet.Host(t), testnet.Host(t)
	bsA := newTestBlockstore()
	putNodes(t, bsA, chain...)
	slots := NewSlots(1)
	logs2 := &testnet.LogRecorder{}
	cfg := testConfig()
	cfg.slotWait = 300 * time.Millisecond
	s1 := newSyncer(hA, bsA, fixedHeads(cidsOf(chain[4])), testnet.Logger(), cfg, WithProtocol(p1), WithServingSlots(slots))
	t.Cleanup(func() { _ = s1.Close() })
	s2 := newSyncer(hA, bsA, fixedHeads(cidsOf(chain[4])), slog.New(logs2), cfg, WithProtocol(p2), WithServingSlots(slots))
	t.Cleanup(func() { _ = s2.Close() })
	rB := newOptSyncer(t, hB, newTestBlockstore(), fixedHeads(nil), nil, WithProtocol(p2))
	testnet.Connect(t, hB, hA)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hold, err := hB.NewStream(ctx, hA.ID(), p1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Reset() })
	// The start of a frame, never finished: the responder takes its slot
	// before it reads the request, and waits for the rest.
	if _, err := hold.Write([]byte{5}); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 10*time.Second, func() bool {
		s1.mu.Lock()
		defer s1.mu.Unlock()
		return s1.serving == 1
	})

	if _, err := rB.Fetch(ctx, hA.ID(), nil, nil); err == nil {
		t.Fatal("the second Syncer served while the first held the only slot")
	}
	// The responder logs after resetting the stream.
	if !testnet.Eventually(10*time.Second, func() bool { return logs2.Has(slog.LevelInfo, "block sync: busy, dropping request") }) {
		t.Error("the second Syncer did not drop the request for want of a slot")
	}

	_ = hold.Reset()
	testnet.WaitFor(t, 10*time.Second, func() bool {
		s1.mu.Lock()
		defer s1.mu.Unlock()
		return s1.serving == 0
	})
	res, err := rB.Fetch(ctx, hA.ID(), nil, nil)
	if err != nil || res.Blocks != len(chain) {
		t.Fatalf("fetch once the slot is free: %+v, %v", res, err)
	}
	if cap(slots.ch) != 1 || slots.peakInUse() != 1 {
		t.Errorf("slots: size %d, peak %d; want 1, 1", cap(slots.ch), slots.peakInUse())
	}
}

// Shared slots bound the requests served at once across Syncers: with 2
// slots for two Syncers and 3 requesters on each, at most 2 requests are
// served at once in all (each Syncer alone would allow 4).
func TestSharedSlotsBound(t *testing.T) {
	p1, p2 := channelProtocol("west"), channelProtocol("east")
	chain := smallChain(t, "b", 10)
	hA := testnet.Host(t)
	bsA := newTestBlockstore()
	putNodes(t, bsA, chain...)
	slots := NewSlots(2)

	// Heads are listed while a slot is held: count the listings at once.
	var now, peak, calls atomic.Int32
	slowHeads := func(ctx context.Context) ([]cid.Cid, error) {
		calls.Add(1)
		n := now.Add(1)
		defer now.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select { // slow, so that requests overlap
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
		}
		return cidsOf(chain[9]), nil
	}
	newOptSyncer(t, hA, bsA, slowHeads, nil, WithProtocol(p1), WithServingSlots(slots))
	newOptSyncer(t, hA, bsA, slowHeads, nil, WithProtocol(p2), WithServingSlots(slots))

	const perProtocol = 3
	var wg sync.WaitGroup
	errs := make(chan error, 2*perProtocol)
	for _, p := range []protocol.ID{p1, p2} {
		for range perProtocol {
			h := testnet.Host(t)
			s := newOptSyncer(t, h, newTestBlockstore(), fixedHeads(nil), nil, WithProtocol(p))
			testnet.Connect(t, h, hA)
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				res, err := s.Fetch(ctx, hA.ID(), nil, nil)
				if err == nil && res.Blocks != len(chain) {
					err = fmt.Errorf("%s: %d blocks", p, res.Blocks)
				}
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if peak.Load() != 2 || calls.Load() != 2*perProtocol || slots.peakInUse() != 2 {
		t.Errorf("peak %d requests at once (want 2, slots say %d), %d served (want %d)",
			peak.Load(), slots.peakInUse(), calls.Load(), 2*perProtocol)
	}
}
