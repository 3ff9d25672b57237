package blocksync

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/heads"
	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	badger "github.com/ipfs/go-ds-badger"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/libp2p/go-libp2p/core/host"
)

// chanBroadcaster is a go-ds-crdt broadcaster that sends nothing and
// receives what inject gives it: the tests hand heads over themselves.
type chanBroadcaster struct{ in chan []byte }

func (b *chanBroadcaster) Broadcast(context.Context, []byte) error { return nil }

func (b *chanBroadcaster) Next(ctx context.Context) ([]byte, error) {
	select {
	case p := <-b.in:
		return p, nil
	case <-ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	}
}

func (b *chanBroadcaster) inject(payload []byte) { b.in <- payload }

// replica is a go-ds-crdt replica wired like a node (bitswap DAG service
// over bstore), with a Syncer on the same blockstore, no heads exchange and
// no pubsub (heads are injected).
type replica struct {
	h      host.Host
	bstore blockstore.Blockstore
	bc     *chanBroadcaster
	store  *dscrdt.Datastore
	sync   *Syncer
}

// newReplica keeps the crdt state and the blocks in base, like a node
// (a map datastore if base is nil).
func newReplica(t testing.TB, base ds.Batching) *replica {
	t.Helper()
	h := testnet.Host(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if base == nil {
		base = dssync.MutexWrap(ds.NewMapDatastore())
	}
	bstore := blockstore.NewBlockstore(namespace.Wrap(base, ds.NewKey("/ferry/blocks")))
	bswap := bitswap.New(ctx, bsnet.NewFromIpfsHost(h), nil, bstore)
	dag := merkledag.NewDAGService(blockservice.New(bstore, bswap))
	bc := &chanBroadcaster{in: make(chan []byte, 16)}
	opts := dscrdt.DefaultOptions()
	opts.RebroadcastInterval = time.Hour
	store, err := dscrdt.New(base, ds.NewKey("/crdt"), dag, bc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = store.Close()
		_ = bswap.Close()
	})
	heads := func(ctx context.Context) ([]cid.Cid, error) { return store.InternalStats(ctx).Heads, nil }
	s := New(h, bstore, heads, testnet.Logger())
	t.Cleanup(func() { _ = s.Close() })
	return &replica{h: h, bstore: bstore, bc: bc, store: store, sync: s}
}

// dump returns every key and value of a replica.
func dump(t testing.TB, s *dscrdt.Datastore) map[string]string {
	t.Helper()
	res, err := s.Query(context.Background(), dsq.Query{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(all))
	for _, e := range all {
		out[e.Key] = string(e.Value)
	}
	return out
}

// catchUp writes n single-key Puts on a fresh replica A (one block each),
// then a fresh replica B connects, fetches A's blocks with block sync (or
// not, with bitswap only), gets A's heads and merges. It returns the fetch
// time and the total time to convergence.
func catchUp(t *testing.T, n int, useSyncer bool, deadline time.Duration) (fetch, total time.Duration, res Result) {
	var baseA, baseB ds.Batching // closed after the replicas (cleanups run last first)
	if os.Getenv("FERRY_BLOCKSYNC_BADGER") != "" {
		open := func() ds.Batching {
			opts := badger.DefaultOptions
			opts.SyncWrites = false
			d, err := badger.NewDatastore(t.TempDir(), &opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Close() })
			return d
		}
		baseA, baseB = open(), open()
	}
	a, b := newReplica(t, baseA), newReplica(t, baseB)
	ctx, cancel := context.WithTimeout(context.Background(), deadline+time.Minute)
	defer cancel()
	t0 := time.Now()
	for i := range n {
		if err := a.store.Put(ctx, ds.NewKey(fmt.Sprintf("/contacts/%06d/name", i)), []byte(fmt.Sprintf("name %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("A wrote %d blocks in %s (height %d)", n, time.Since(t0).Round(time.Millisecond), a.store.InternalStats(ctx).MaxHeight)
	want := dump(t, a.store)
	if len(want) != n {
		t.Fatalf("A has %d keys", len(want))
	}
	testnet.Connect(t, b.h, a.h)

	start := time.Now()
	theirs := a.store.InternalStats(ctx).Heads
	if useSyncer {
		var err error
		res, err = b.sync.Fetch(ctx, a.h.ID(), b.store.InternalStats(ctx).Heads, nil)
		if err != nil {
			t.Fatal(err)
		}
		theirs = res.Heads
	}
	fetch = time.Since(start)
	payload, err := heads.Encode(theirs)
	if err != nil {
		t.Fatal(err)
	}
	b.bc.inject(payload)
	for {
		if got := dump(t, b.store); len(got) == len(want) {
			same := true
			for k, v := range want {
				if got[k] != v {
					same = false
					break
				}
			}
			if same {
				break
			}
		}
		if time.Since(start) > deadline {
			t.Fatalf("B did not converge within %s (%d/%d keys)", deadline, len(dump(t, b.store)), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	total = time.Since(start)
	return fetch, total, res
}

// The catch-up go-ds-crdt alone does at ~48 blocks/s (~21 s for 1,000
// blocks) takes seconds with the blocks fetched first.
func TestCRDTCatchUp(t *testing.T) {
	const n = 1000
	fetch, total, res := catchUp(t, n, true, 10*time.Second)
	if res.Blocks != n {
		t.Errorf("fetched %d blocks, want %d", res.Blocks, n)
	}
	t.Logf("%d blocks: fetch %s (%d bytes), fetch + merge %s (bitswap alone: ~%s)",
		n, fetch.Round(time.Millisecond), res.Bytes, total.Round(time.Millisecond), time.Duration(n/48)*time.Second)
}

// FERRY_BLOCKSYNC_BENCH=1000,10000 measures catch-ups of those sizes;
// FERRY_BLOCKSYNC_BITSWAP=1 also measures bitswap alone;
// FERRY_BLOCKSYNC_BADGER=1 keeps both replicas in badger, like a node.
func TestCatchUpTiming(t *testing.T) {
	sizes := os.Getenv("FERRY_BLOCKSYNC_BENCH")
	if sizes == "" {
		t.Skip("set FERRY_BLOCKSYNC_BENCH=1000,10000 to measure")
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("blocksync-%d", n), func(t *testing.T) {
			fetch, total, res := catchUp(t, n, true, 10*time.Minute)
			t.Logf("block sync, %d blocks: fetch %s (%d bytes, %.0f blocks/s), fetch + merge %s",
				n, fetch.Round(time.Millisecond), res.Bytes, float64(n)/fetch.Seconds(), total.Round(time.Millisecond))
		})
		if os.Getenv("FERRY_BLOCKSYNC_BITSWAP") != "" {
			t.Run(fmt.Sprintf("bitswap-%d", n), func(t *testing.T) {
				_, total, _ := catchUp(t, n, false, 10*time.Minute)
				t.Logf("bitswap alone, %d blocks: %s (%.0f blocks/s)", n, total.Round(time.Millisecond), float64(n)/total.Seconds())
			})
		}
	}
}
