package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	dscrdt "github.com/ipfs/go-ds-crdt"
	pb "github.com/ipfs/go-ds-crdt/pb"
	"google.golang.org/protobuf/proto"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/disk"
	"github.com/ferry-crm/ferry/node/p2p"
	"github.com/ferry-crm/ferry/schema"
)

// The tests serve a real crdt.Store without network: an in-memory
// datastore and an offline DAG service. The network half of the Backend
// answers canned values, or ErrNoNode as a node opened without network
// does, and records what it was asked.

const testSchema = `
collections:
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      email:      {type: string, unique: true}
      phone:      {type: string, policy: manual}
      stage:      {type: enum, values: [lead, qualified, won, lost]}
      amount:     {type: number}
      active:     {type: bool}
      notes:      {type: string}
  accounts:
    fields:
      name: {type: string, required: true}
`

// testLogger discards the store's and the server's logs.
func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// storeOpts configure newTestStore.
type storeOpts struct {
	writer string
	// blocks, if set, is the datastore of the block store (shared by the
	// replicas of a conflict test); else the store's own datastore.
	blocks ds.Batching
	bcast  dscrdt.Broadcaster
	// full, if set, makes every local write fail with disk.ErrLow while
	// it is true.
	full *atomic.Bool
	// room, if set, is how many more local writes (and import deltas) the
	// disk has room for: each check of the room takes one.
	room     *atomic.Int64
	batchOps int
	// failAfter, if set, cuts queries short (see sortedDatastore).
	failAfter *atomic.Int64
}

// sortedDatastore answers every query without an order in key order, as
// badger (the node's datastore) does. crdt.Store reads records from
// unordered queries and relies on that order (the operations of a record
// must be adjacent: see scanRecords); a bare MapDatastore answers in map
// order, which splits records into pieces.
//
// failAfter, when set to n >= 0, cuts every query of the values of
// collection contacts short after n entries with errReadFailed.
type sortedDatastore struct {
	ds.Batching
	failAfter *atomic.Int64
}

var errReadFailed = errors.New("injected read failure")

func (d sortedDatastore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	if len(q.Orders) == 0 {
		q.Orders = []query.Order{query.OrderByKey{}}
	}
	res, err := d.Batching.Query(ctx, q)
	if err != nil || d.failAfter == nil || !strings.Contains(q.Prefix, "/s/k/contacts") {
		return res, err
	}
	n := d.failAfter.Load()
	if n < 0 {
		return res, nil
	}
	failed := false
	return query.ResultsFromIterator(q, query.Iterator{
		Next: func() (query.Result, bool) {
			if failed {
				return query.Result{}, false
			}
			if n == 0 {
				failed = true
				return query.Result{Error: errReadFailed}, true
			}
			n--
			return res.NextSync()
		},
		Close: res.Close,
	}), nil
}

// newMemDatastore is an in-memory datastore that queries in key order.
func newMemDatastore() sortedDatastore {
	return sortedDatastore{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
}

// newTestStore opens a crdt store over an in-memory datastore and an
// offline DAG service; it is closed when the test ends.
func newTestStore(t *testing.T, so storeOpts) *crdt.Store {
	t.Helper()
	d := newMemDatastore()
	d.failAfter = so.failAfter
	blocks := so.blocks
	if blocks == nil {
		blocks = d
	}
	dag := p2p.NewOfflineDAGService(datadir.NewBlockstore(blocks))
	o := crdt.DefaultOptions()
	o.Writer = so.writer
	if o.Writer == "" {
		o.Writer = "A"
	}
	o.Logger = testLogger()
	o.RebroadcastInterval = time.Hour // heads are exchanged explicitly
	o.DAGSyncerTimeout = 10 * time.Second
	if so.batchOps > 0 {
		o.BatchOps = so.batchOps
	}
	if full, room := so.full, so.room; full != nil || room != nil {
		o.CheckRoom = func(context.Context) error {
			if full != nil && full.Load() || room != nil && room.Add(-1) < 0 {
				return disk.ErrLow
			}
			return nil
		}
	}
	s, err := crdt.New(context.Background(), d, dag, so.bcast, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// applyTestSchema applies testSchema to s directly (not through the API).
func applyTestSchema(t *testing.T, s *crdt.Store) {
	t.Helper()
	sc, err := schema.Parse([]byte(testSchema))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplySchema(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
}

// testBackend is an api.Backend over a real store. The network methods
// return the canned answers set in its fields, or BadRequest(ErrNoNode)
// when none is set.
type testBackend struct {
	store *crdt.Store

	mu      sync.Mutex
	calls   []string // what the network methods were asked, in order
	offline bool

	status    apijson.Status
	peers     []apijson.PeerInfo
	setErr    error
	syncState *apijson.SyncState
	syncNow   func() ([]apijson.PeerSync, error)
	diff      func(peer string) (apijson.DiffResult, error)
	checkErr  error
	members   []apijson.Member
	invite    func(name, role string, ttl time.Duration) (apijson.InviteResponse, error)
	revoke    func(member string) (string, error)
}

var _ Backend = (*testBackend)(nil)

var errNoNetwork = BadRequest(ErrNoNode)

func (b *testBackend) record(call string) {
	b.mu.Lock()
	b.calls = append(b.calls, call)
	b.mu.Unlock()
}

// lastCall is the last call recorded ("" when none).
func (b *testBackend) lastCall() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.calls) == 0 {
		return ""
	}
	return b.calls[len(b.calls)-1]
}

func (b *testBackend) Store() *crdt.Router { return crdt.NewRouter(b.store) }

func (b *testBackend) Channels(context.Context) (apijson.Channels, error) {
	b.record("channels")
	return apijson.Channels{Held: []apijson.Channel{}, Known: []string{}}, nil
}

func (b *testBackend) Grant(_ context.Context, member string, channels []string, grant bool) (apijson.GrantResult, error) {
	b.record(fmt.Sprintf("grant %s %v %v", member, channels, grant))
	return apijson.GrantResult{Member: member, Channels: channels}, nil
}

func (b *testBackend) Subscribe(_ context.Context, channels []string, subscribe bool) ([]string, error) {
	b.record(fmt.Sprintf("subscribe %v %v", channels, subscribe))
	return channels, nil
}

func (b *testBackend) Names(ctx context.Context) map[string]crdt.NodeInfo {
	nodes, err := b.store.Nodes(ctx)
	if err != nil {
		return nil
	}
	return nodes
}

func (b *testBackend) Status(context.Context) apijson.Status {
	b.record("status")
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.status
	st.Online = !b.offline
	return st
}

func (b *testBackend) Peers(context.Context) ([]apijson.PeerInfo, error) {
	b.record("peers")
	if b.peers == nil {
		return nil, errNoNetwork
	}
	return b.peers, nil
}

func (b *testBackend) SetOffline(offline bool) error {
	if offline {
		b.record("offline")
	} else {
		b.record("online")
	}
	if b.setErr != nil {
		return b.setErr
	}
	b.mu.Lock()
	b.offline = offline
	b.mu.Unlock()
	return nil
}

func (b *testBackend) SyncState(context.Context) (apijson.SyncState, error) {
	b.record("sync state")
	if b.syncState == nil {
		return apijson.SyncState{}, errNoNetwork
	}
	return *b.syncState, nil
}

func (b *testBackend) SyncNow(context.Context) ([]apijson.PeerSync, error) {
	b.record("sync now")
	if b.syncNow == nil {
		return nil, errNoNetwork
	}
	return b.syncNow()
}

func (b *testBackend) Diff(_ context.Context, peer string) (apijson.DiffResult, error) {
	b.record("diff " + peer)
	if b.diff == nil {
		return apijson.DiffResult{}, errNoNetwork
	}
	return b.diff(peer)
}

func (b *testBackend) Check(ctx context.Context, repair bool) (*crdt.CheckReport, error) {
	if repair {
		b.record("check repair")
	} else {
		b.record("check")
	}
	if b.checkErr != nil {
		return nil, b.checkErr
	}
	return b.store.Check(ctx, crdt.CheckOptions{Repair: repair})
}

func (b *testBackend) Compact(ctx context.Context) (apijson.CompactResult, error) {
	b.record("compact")
	rep, err := b.store.Compact(ctx)
	if err != nil {
		return apijson.CompactResult{}, err
	}
	return apijson.CompactResult{Epoch: rep.Epoch.String(), Prev: rep.Prev.String(), Seeded: rep.Seeded, Records: rep.Records}, nil
}

func (b *testBackend) Members(context.Context) ([]apijson.Member, error) {
	b.record("members")
	if b.members == nil {
		return nil, errNoNetwork
	}
	return b.members, nil
}

func (b *testBackend) Invite(_ context.Context, name, role string, ttl time.Duration) (apijson.InviteResponse, error) {
	b.record("invite " + name + " " + role + " " + ttl.String())
	if b.invite == nil {
		return apijson.InviteResponse{}, errNoNetwork
	}
	return b.invite(name, role, ttl)
}

func (b *testBackend) Revoke(_ context.Context, member string) (string, error) {
	b.record("revoke " + member)
	if b.revoke == nil {
		return "", errNoNetwork
	}
	return b.revoke(member)
}

func (b *testBackend) Metrics() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "# TYPE ferry_test_total counter\nferry_test_total 7\n")
	})
}

// newTestBackend is a backend over a fresh store with testSchema applied.
func newTestBackend(t *testing.T, so storeOpts) *testBackend {
	t.Helper()
	s := newTestStore(t, so)
	applyTestSchema(t, s)
	return &testBackend{store: s}
}

// newTestClient serves b in process.
func newTestClient(b Backend) *Client { return NewClient(NewServer(b, testLogger())) }

// headsBroadcaster is a go-ds-crdt Broadcaster that announces nothing by
// itself: a test hands it the heads of another replica (deliverHeads),
// the way a node's heads exchange does.
type headsBroadcaster struct {
	in  chan []byte
	ctx context.Context
}

func newHeadsBroadcaster(t *testing.T) *headsBroadcaster {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &headsBroadcaster{in: make(chan []byte, 64), ctx: ctx}
}

func (b *headsBroadcaster) Broadcast(context.Context, []byte) error { return nil }

func (b *headsBroadcaster) Next(ctx context.Context) ([]byte, error) {
	select {
	case d := <-b.in:
		return d, nil
	case <-ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	case <-b.ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	}
}

// deliverHeads hands the heads of from to the replica listening on to.
func deliverHeads(t *testing.T, from *crdt.Store, to *headsBroadcaster) {
	t.Helper()
	heads, err := from.Heads(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	msg := &pb.CRDTBroadcast{}
	for _, h := range heads {
		msg.Heads = append(msg.Heads, &pb.Head{Cid: h.Bytes()})
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case to.in <- data:
	case <-time.After(5 * time.Second):
		t.Fatal("deliver heads: the replica does not listen")
	}
}

// waitFor polls cond until it holds, or fails the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// conflictPair is two replicas, A (an office) and B (a laptop), sharing a
// block store, with testSchema applied on A and merged by B, and record
// contacts/c1 written by A and merged by B.
type conflictPair struct {
	a, b     *crdt.Store
	bcA, bcB *headsBroadcaster
}

func newConflictPair(t *testing.T) *conflictPair {
	t.Helper()
	ctx := context.Background()
	blocks := newMemDatastore()
	p := &conflictPair{bcA: newHeadsBroadcaster(t), bcB: newHeadsBroadcaster(t)}
	p.a = newTestStore(t, storeOpts{writer: "A", blocks: blocks, bcast: p.bcA})
	p.b = newTestStore(t, storeOpts{writer: "B", blocks: blocks, bcast: p.bcB})
	// Each replica writes before it hears of the other, as a node does at
	// start (go-ds-crdt v0.6.8 can lose a branch otherwise; see the crdt
	// tests).
	if err := p.a.SetNodeInfo(ctx, "office-a", crdt.RoleOffice); err != nil {
		t.Fatal(err)
	}
	if err := p.b.SetNodeInfo(ctx, "laptop-b", crdt.RoleLaptop); err != nil {
		t.Fatal(err)
	}
	applyTestSchema(t, p.a)
	if _, err := p.a.Put(ctx, "contacts", "c1", map[string]any{"last_name": "Smith", "phone": "111", "amount": 1.0}); err != nil {
		t.Fatal(err)
	}
	deliverHeads(t, p.a, p.bcB)
	deliverHeads(t, p.b, p.bcA)
	waitFor(t, "B to merge c1 and the schema", func() bool {
		// go-ds-crdt may merge the block of c1 before the one of the
		// schema below it: B writes only once it has both.
		rec, err := p.b.Get(ctx, "contacts", "c1")
		_, serr := p.b.Collection(ctx, "contacts")
		return err == nil && serr == nil && rec.Values()["phone"] == "111" && p.b.Stats(ctx).QueuedJobs == 0
	})
	waitFor(t, "A to learn B's name", func() bool {
		nodes, err := p.a.Nodes(ctx)
		return err == nil && nodes["B"].Name == "laptop-b"
	})
	return p
}

// conflict makes A and B write field of c1 concurrently (A first, B
// newer) and merges B's write into A; it waits until A shows the conflict.
func (p *conflictPair) conflict(t *testing.T, field string, va, vb any) {
	t.Helper()
	ctx := context.Background()
	if _, err := p.a.Put(ctx, "contacts", "c1", map[string]any{field: va}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // B's write is the newer one
	if _, err := p.b.Put(ctx, "contacts", "c1", map[string]any{field: vb}); err != nil {
		t.Fatal(err)
	}
	deliverHeads(t, p.b, p.bcA)
	waitFor(t, "A to show the conflict on "+field, func() bool {
		rec, err := p.a.Get(ctx, "contacts", "c1")
		return err == nil && rec.Fields[field].Conflicted()
	})
}
