package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

// sinkRecorder records what a HeadsSink receives.
type sinkRecorder struct {
	mu  sync.Mutex
	got map[peer.ID][][]cid.Cid
}

func newSinkRecorder() *sinkRecorder {
	return &sinkRecorder{got: make(map[peer.ID][][]cid.Cid)}
}

func (r *sinkRecorder) sink(t testing.TB) HeadsSink {
	return func(_ context.Context, from peer.ID, payload []byte) {
		heads, err := ValidateHeadsPayload(payload)
		if err != nil {
			t.Errorf("sink got invalid payload: %v", err)
			return
		}
		r.mu.Lock()
		r.got[from] = append(r.got[from], heads)
		r.mu.Unlock()
	}
}

func (r *sinkRecorder) count(from peer.ID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[from])
}

func (r *sinkRecorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.got {
		n += len(v)
	}
	return n
}

func (r *sinkRecorder) last(from peer.ID) []cid.Cid {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.got[from]
	if len(l) == 0 {
		return nil
	}
	return l[len(l)-1]
}

func fixedHeads(heads []cid.Cid) HeadsFunc {
	return func(context.Context) ([]cid.Cid, error) { return heads, nil }
}

func sameCids(a, b []cid.Cid) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equals(b[i]) {
			return false
		}
	}
	return true
}

func newTestHeadSync(t testing.TB, h host.Host, heads []cid.Cid, rec *sinkRecorder, log *slog.Logger) *HeadSync {
	t.Helper()
	if log == nil {
		log = testLogger()
	}
	s := NewHeadSync(h, fixedHeads(heads), rec.sink(t), log)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestHeadSyncOnConnect(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	headsA, headsB := testCids(t, "A", 2), testCids(t, "B", 3)
	recA, recB := newSinkRecorder(), newSinkRecorder()
	sA := newTestHeadSync(t, hA, headsA, recA, nil)
	sB := newTestHeadSync(t, hB, headsB, recB, nil)

	connect(t, hA, hB)
	waitFor(t, 10*time.Second, func() bool {
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

	// Explicit exchange, from B this time.
	nA, nB := recA.count(hB.ID()), recB.count(hA.ID())
	before, _ := sB.LastExchange(hA.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sB.Exchange(ctx, hA.ID()); err != nil {
		t.Fatal(err)
	}
	if recB.count(hA.ID()) != nB+1 {
		t.Errorf("B's sink got %d payloads, want %d", recB.count(hA.ID()), nB+1)
	}
	waitFor(t, 5*time.Second, func() bool { return recA.count(hB.ID()) == nA+1 })
	if after, _ := sB.LastExchange(hA.ID()); !after.After(before) {
		t.Error("LastExchange not updated")
	}

	// No dialing: an exchange with an unconnected peer fails.
	hC := newTestHost(t)
	hA.Peerstore().AddAddrs(hC.ID(), hC.Addrs(), time.Minute)
	if err := sA.Exchange(ctx, hC.ID()); err == nil {
		t.Error("exchange with unconnected peer succeeded")
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

func TestHeadSyncEmptyHeads(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	headsB := testCids(t, "B", 1)
	recA, recB := newSinkRecorder(), newSinkRecorder()
	sA := newTestHeadSync(t, hA, nil, recA, nil) // a fresh replica
	newTestHeadSync(t, hB, headsB, recB, nil)
	connect(t, hA, hB)
	waitFor(t, 10*time.Second, func() bool { return recA.count(hB.ID()) > 0 })
	if _, ok := sA.LastExchange(hB.ID()); !ok {
		t.Error("no last exchange")
	}
	if recB.total() != 0 {
		t.Error("B's sink got an empty heads list")
	}
}

// recordingHandler keeps log records.
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

func TestHeadSyncPeerWithoutProtocol(t *testing.T) {
	hA, hC := newTestHost(t), newTestHost(t)
	logs := &recordingHandler{}
	sA := newTestHeadSync(t, hA, testCids(t, "A", 1), newSinkRecorder(), slog.New(logs))
	connect(t, hA, hC)
	waitFor(t, 10*time.Second, func() bool {
		return logs.has(slog.LevelDebug, "peer does not support heads exchange")
	})
	if _, ok := sA.LastExchange(hC.ID()); ok {
		t.Error("exchange recorded with a peer without the protocol")
	}
}

func TestHeadSyncGarbage(t *testing.T) {
	hA, hB, hC := newTestHost(t), newTestHost(t), newTestHost(t)
	headsA, headsB := testCids(t, "A", 2), testCids(t, "B", 2)
	recA, recB := newSinkRecorder(), newSinkRecorder()
	sB := newTestHeadSync(t, hB, headsB, recB, nil)
	connect(t, hC, hB) // hC speaks the protocol by hand

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
			return msgio.NewVarintWriter(w).WriteMsg(make([]byte, MaxHeadsPayload+1))
		},
		"truncated frame": func(w io.Writer) error {
			_, err := w.Write([]byte{100, 1, 2, 3})
			return err
		},
		"nothing": func(io.Writer) error { return nil },
	}
	for name, write := range junk {
		str, err := hC.NewStream(ctx, hB.ID(), HeadsProtocol)
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
		t.Errorf("sink received %d payloads from junk", recB.total())
	}
	if _, ok := sB.LastExchange(hC.ID()); ok {
		t.Error("junk exchange recorded")
	}

	// The handler still works.
	sA := newTestHeadSync(t, hA, headsA, recA, nil)
	connect(t, hA, hB)
	waitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) > 0 })
	if err := sA.Exchange(ctx, hB.ID()); err != nil {
		t.Fatal(err)
	}
	if got := recA.last(hB.ID()); !sameCids(got, headsB) {
		t.Errorf("A got %v", got)
	}
}

// A dialing peer that answers the protocol but never initiates: the
// receiving side initiates after inboundExchangeDelay.
func TestHeadSyncInboundFallback(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	headsA, headsB := testCids(t, "A", 1), testCids(t, "B", 1)
	replyA := mustEncode(t, headsA)
	gotFromB := make(chan []byte, 1)
	hA.SetStreamHandler(HeadsProtocol, func(str network.Stream) {
		defer str.Close()
		msg, err := msgio.NewVarintReaderSize(str, MaxHeadsPayload).ReadMsg()
		if err != nil {
			_ = str.Reset()
			return
		}
		gotFromB <- append([]byte(nil), msg...)
		_ = msgio.NewVarintWriter(str).WriteMsg(replyA)
	})
	recB := newSinkRecorder()
	sB := newTestHeadSync(t, hB, headsB, recB, nil)
	connect(t, hA, hB)
	waitFor(t, 10*time.Second, func() bool { return recB.count(hA.ID()) > 0 })
	if got := recB.last(hA.ID()); !sameCids(got, headsA) {
		t.Errorf("B got %v", got)
	}
	if heads, err := ValidateHeadsPayload(<-gotFromB); err != nil || !sameCids(heads, headsB) {
		t.Errorf("A got %v (%v)", heads, err)
	}
	if _, ok := sB.LastExchange(hA.ID()); !ok {
		t.Error("no last exchange")
	}
}

func TestHeadSyncHeadsError(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	recA, recB := newSinkRecorder(), newSinkRecorder()
	sA := newTestHeadSync(t, hA, testCids(t, "A", 1), recA, nil)
	sB := NewHeadSync(hB, func(context.Context) ([]cid.Cid, error) {
		return nil, errors.New("store closed")
	}, recB.sink(t), testLogger())
	t.Cleanup(func() { _ = sB.Close() })
	connect(t, hA, hB)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sA.Exchange(ctx, hB.ID()); err == nil {
		t.Error("exchange succeeded although the peer could not list its heads")
	}
	if recB.total() != 0 {
		t.Error("B delivered heads of a failed exchange")
	}
}

// crdtReplica wires the primitives of this package the way a node does.
type crdtReplica struct {
	h     host.Host
	store *dscrdt.Datastore
	sync  *HeadSync
}

// testEngine is a go-ds-crdt store over this package's host, broadcaster
// and DAG service, as a node wires them.
type testEngine struct {
	h      host.Host
	bc     *Broadcaster
	bstore blockstore.Blockstore
	store  *dscrdt.Datastore
}

// newTestEngine keeps the crdt state and the blocks in base (a map
// datastore if nil). Cleanups close the broadcaster, the store and bitswap
// in the node's order; register what uses them after calling it, so that
// it closes first.
func newTestEngine(t testing.TB, base ds.Batching, topic string, dagTimeout time.Duration) *testEngine {
	t.Helper()
	h := newTestHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ps, err := NewPubSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := NewBroadcaster(ctx, ps, h.ID(), topic, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if base == nil {
		base = dssync.MutexWrap(ds.NewMapDatastore())
	}
	bstore := NewBlockstore(base)
	dag, bitswap, err := NewDAGService(ctx, h, bstore, dagTimeout)
	if err != nil {
		t.Fatal(err)
	}
	opts := dscrdt.DefaultOptions()
	opts.RebroadcastInterval = time.Hour // only Ferry's own protocols can help
	store, err := dscrdt.New(base, ds.NewKey("/crdt"), dag, bc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = bc.Close()
		_ = store.Close()
		_ = bitswap.Close()
	})
	return &testEngine{h: h, bc: bc, bstore: bstore, store: store}
}

// heads lists the engine's current heads.
func (e *testEngine) heads(ctx context.Context) ([]cid.Cid, error) {
	return e.store.InternalStats(ctx).Heads, nil
}

func newCRDTReplica(t *testing.T) *crdtReplica {
	t.Helper()
	e := newTestEngine(t, nil, "ferry-crdt-test", 20*time.Second)
	hs := NewHeadSync(e.h, e.heads,
		func(ctx context.Context, from peer.ID, payload []byte) {
			if err := e.bc.Inject(ctx, from, payload); err != nil {
				t.Logf("inject: %v", err)
			}
		},
		testLogger())
	t.Cleanup(func() { _ = hs.Close() })
	return &crdtReplica{h: e.h, store: e.store, sync: hs}
}

// Writes made while disconnected reach a fresh replica as soon as the
// replicas connect, without waiting for a rebroadcast.
func TestHeadSyncCRDTCatchUp(t *testing.T) {
	a, b := newCRDTReplica(t), newCRDTReplica(t)
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

	connect(t, a.h, b.h)
	has := func(r *crdtReplica, k string) bool {
		ok, err := r.store.Has(ctx, ds.NewKey(k))
		return err == nil && ok
	}
	waitFor(t, 20*time.Second, func() bool {
		return has(b, "/c/1/name") && has(b, "/c/2/name") && has(b, "/c/3/name") && has(a, "/c/9/name")
	})
	v, err := b.store.Get(ctx, ds.NewKey("/c/2/name"))
	if err != nil || string(v) != "v/c/2/name" {
		t.Fatalf("b: %q, %v", v, err)
	}
}
