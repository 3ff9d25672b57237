package heads

import (
	"context"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	dscrdt "github.com/ipfs/go-ds-crdt"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// crdtReplica wires this package the way a node does: a go-ds-crdt store
// behind a Gate over a Broadcaster, and a Service whose Receive injects
// the heads a peer sent. Blocks are in a blockstore the replicas share, so
// only heads have to travel.
type crdtReplica struct {
	h     host.Host
	store *dscrdt.Datastore
	gate  *Gate
	svc   *Service
}

func sharedDAG() ipld.DAGService {
	bstore := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	return merkledag.NewDAGService(blockservice.New(bstore, offline.Exchange(bstore)))
}

func newCRDTReplica(t *testing.T, dag ipld.DAGService) *crdtReplica {
	t.Helper()
	h := testnet.Host(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ps, err := NewPubSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := NewBroadcaster(ctx, ps, h.ID(), "ferry-crdt-test", testnet.Logger())
	if err != nil {
		t.Fatal(err)
	}
	gate := NewGate(bc)
	opts := dscrdt.DefaultOptions()
	opts.RebroadcastInterval = time.Hour // only the heads exchange can help
	store, err := dscrdt.New(dssync.MutexWrap(ds.NewMapDatastore()), ds.NewKey("/crdt"), dag, gate, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := &crdtReplica{h: h, store: store, gate: gate}
	r.svc = New(h, Config{
		Heads: func(ctx context.Context) ([]cid.Cid, error) { return store.InternalStats(ctx).Heads, nil },
		Receive: func(ctx context.Context, from peer.ID, payload []byte) {
			if err := bc.Inject(ctx, from, payload); err != nil {
				t.Logf("inject: %v", err)
			}
		},
	}, testnet.Logger())
	// The node's order: exchanges, broadcaster, store.
	t.Cleanup(func() {
		_ = r.svc.Close()
		_ = bc.Close()
		_ = store.Close()
	})
	return r
}

// Writes made while disconnected reach the other replica as soon as the
// replicas connect, without waiting for a rebroadcast; a later write
// reaches it whether or not GossipSub delivers it.
func TestCRDTCatchUp(t *testing.T) {
	dag := sharedDAG()
	a, b := newCRDTReplica(t, dag), newCRDTReplica(t, dag)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, k := range []string{"/c/1/name", "/c/2/name", "/c/3/name"} {
		if err := a.store.Put(ctx, ds.NewKey(k), []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.store.Put(ctx, ds.NewKey("/c/9/name"), []byte("from b")); err != nil {
		t.Fatal(err)
	}
	// Each replica has heads of its own: the gates may open.
	a.gate.Open()
	b.gate.Open()

	testnet.Connect(t, a.h, b.h)
	has := func(r *crdtReplica, k string) bool {
		ok, err := r.store.Has(ctx, ds.NewKey(k))
		return err == nil && ok
	}
	testnet.WaitFor(t, 20*time.Second, func() bool {
		return has(b, "/c/1/name") && has(b, "/c/2/name") && has(b, "/c/3/name") && has(a, "/c/9/name")
	})
	v, err := b.store.Get(ctx, ds.NewKey("/c/2/name"))
	if err != nil || string(v) != "v/c/2/name" {
		t.Fatalf("b: %q, %v", v, err)
	}

	if err := a.store.Put(ctx, ds.NewKey("/c/4/name"), []byte("later")); err != nil {
		t.Fatal(err)
	}
	a.svc.Changed()
	testnet.WaitFor(t, 20*time.Second, func() bool { return has(b, "/c/4/name") })
}
