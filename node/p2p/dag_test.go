package p2p

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

func newTestBlockstore() blockstore.Blockstore {
	return blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
}

func newTestDAG(t testing.TB, h host.Host, timeout time.Duration) ipld.DAGService {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dag, closer, err := NewDAGService(ctx, h, newTestBlockstore(), timeout)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// Registered after the host's cleanup, so it runs before it.
	t.Cleanup(func() {
		_ = closer.Close()
		_ = closer.Close()
		cancel()
	})
	return dag
}

func TestDAGServiceFetch(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	dagA := newTestDAG(t, hA, 20*time.Second)
	dagB := newTestDAG(t, hB, 20*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	child := merkledag.NodeWithData([]byte("child"))
	root := merkledag.NodeWithData([]byte("root"))
	if err := root.AddNodeLink("child", child); err != nil {
		t.Fatal(err)
	}
	other := merkledag.NodeWithData([]byte("other"))
	if err := dagA.AddMany(ctx, []ipld.Node{child, root, other}); err != nil {
		t.Fatal(err)
	}
	testnet.Connect(t, hB, hA)

	got, err := dagB.Get(ctx, root.Cid())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.RawData(), root.RawData()) {
		t.Fatal("fetched node differs")
	}

	// Sessions are kept (go-ds-crdt uses them) and bounded too.
	sm, ok := dagB.(interface {
		Session(context.Context) ipld.NodeGetter
	})
	if !ok {
		t.Fatal("DAG service has no Session method")
	}
	ses := sm.Session(ctx)
	n := 0
	for opt := range ses.GetMany(ctx, []cid.Cid{child.Cid(), other.Cid()}) {
		if opt.Err != nil {
			t.Fatal(opt.Err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("GetMany returned %d nodes", n)
	}
}

func TestDAGServiceTimeout(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	newTestDAG(t, hA, time.Minute)
	dagB := newTestDAG(t, hB, 300*time.Millisecond)
	testnet.Connect(t, hB, hA)
	missing := merkledag.NodeWithData([]byte("nobody has this")).Cid()

	ctx := context.Background() // no deadline: the service bounds it
	start := time.Now()
	if _, err := dagB.Get(ctx, missing); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get: %v", err)
	}
	sm := dagB.(interface {
		Session(context.Context) ipld.NodeGetter
	})
	if _, err := sm.Session(ctx).Get(ctx, missing); err == nil {
		t.Error("session Get succeeded")
	}
	var errs int
	for opt := range dagB.GetMany(ctx, []cid.Cid{missing}) {
		if opt.Err != nil {
			errs++
		}
	}
	if errs == 0 {
		t.Error("GetMany reported no error")
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("fetches took %s", el)
	}
}

func TestOfflineDAGService(t *testing.T) {
	ctx := context.Background()
	bs := newTestBlockstore()
	dag := NewOfflineDAGService(bs)
	nd := merkledag.NodeWithData([]byte("local"))
	if err := dag.Add(ctx, nd); err != nil {
		t.Fatal(err)
	}
	if _, err := NewOfflineDAGService(bs).Get(ctx, nd.Cid()); err != nil {
		t.Fatal(err)
	}
	missing := merkledag.NodeWithData([]byte("missing")).Cid()
	if _, err := dag.Get(ctx, missing); !ipld.IsNotFound(err) {
		t.Errorf("missing: %v", err)
	}
}

// newTestDAGWith is newTestDAG over bs, with options; its Bitswap is
// returned too.
func newTestDAGWith(t testing.TB, h host.Host, bs blockstore.Blockstore, timeout time.Duration, opts ...DAGOption) (ipld.DAGService, *Bitswap) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dag, closer, err := NewDAGService(ctx, h, bs, timeout, opts...)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = closer.Close()
		cancel()
	})
	return dag, closer
}

// askedPeers is an allow predicate that records whom it was asked about.
type askedPeers struct {
	mu    sync.Mutex
	allow map[peer.ID]bool
	asked map[peer.ID]int
}

func (a *askedPeers) fn(p peer.ID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked[p]++
	return a.allow[p]
}

func (a *askedPeers) count(p peer.ID) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asked[p]
}

func TestDAGServiceChannelBitswap(t *testing.T) {
	const prefix = protocol.ID("/ferry/ch/west")
	hA, hB, hC, hD := newTestHost(t), newTestHost(t), newTestHost(t), newTestHost(t)
	allow := &askedPeers{allow: map[peer.ID]bool{hB.ID(): true, hD.ID(): true}, asked: map[peer.ID]int{}}
	bsA, bsC, bsD := newTestBlockstore(), newTestBlockstore(), newTestBlockstore()
	dagA, bitswapA := newTestDAGWith(t, hA, bsA, 20*time.Second, WithProtocolPrefix(prefix), WithAllow(allow.fn), WithSmallEngine())
	dagB, _ := newTestDAGWith(t, hB, newTestBlockstore(), 20*time.Second, WithProtocolPrefix(prefix))
	dagC, _ := newTestDAGWith(t, hC, bsC, 2*time.Second, WithProtocolPrefix(prefix))
	dagD, _ := newTestDAGWith(t, hD, bsD, 2*time.Second) // the default protocols

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nd := merkledag.NodeWithData([]byte("west only"))
	if err := dagA.Add(ctx, nd); err != nil {
		t.Fatal(err)
	}
	// Each asker is connected to A only: nobody else holds the block.
	for _, h := range []host.Host{hB, hC, hD} {
		testnet.Connect(t, h, hA)
	}

	// Allowed, same prefix: fetched.
	got, err := dagB.Get(ctx, nd.Cid())
	if err != nil {
		t.Fatalf("B: %v", err)
	}
	if !bytes.Equal(got.RawData(), nd.RawData()) {
		t.Fatal("B fetched different data")
	}

	// Not allowed, same prefix: A's filter is asked and says no.
	if _, err := dagC.Get(ctx, nd.Cid()); err == nil {
		t.Fatal("C, not allowed, got the block")
	}
	if allow.count(hC.ID()) == 0 {
		t.Error("A's filter was never asked about C: C's want did not reach A")
	}
	// Default prefix, though allowed: A's bitswap is not even reachable.
	if _, err := dagD.Get(ctx, nd.Cid()); err == nil {
		t.Fatal("D, on the default protocol, got the block")
	}
	if allow.count(hD.ID()) != 0 {
		t.Error("D's want reached A's channel bitswap")
	}
	for name, bs := range map[string]blockstore.Blockstore{"C": bsC, "D": bsD} {
		if ok, err := bs.Has(ctx, nd.Cid()); err != nil || ok {
			t.Errorf("%s holds the block (%t, %v)", name, ok, err)
		}
	}

	// Close removes the channel's handlers.
	speaks := func() bool { return slices.Contains(hA.Mux().Protocols(), prefix+bsnet.ProtocolBitswap) }
	if !speaks() {
		t.Fatalf("A does not serve %s", prefix+bsnet.ProtocolBitswap)
	}
	if err := bitswapA.Close(); err != nil {
		t.Fatal(err)
	}
	if speaks() {
		t.Errorf("A still serves %s after Close", prefix+bsnet.ProtocolBitswap)
	}
}
