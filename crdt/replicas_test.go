package crdt

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	badger "github.com/ipfs/go-ds-badger"
	dscrdt "github.com/ipfs/go-ds-crdt"
	pb "github.com/ipfs/go-ds-crdt/pb"
	ipld "github.com/ipfs/go-ipld-format"
	"google.golang.org/protobuf/proto"

	"github.com/ferry-crm/ferry/internal/diskfault"
	"github.com/ferry-crm/ferry/schema"
)

// The replicas of these tests share one block store (so any block is
// fetchable at once) and exchange heads through channels that a test can cut
// per replica, the way go-ds-crdt's own tests do. What reaches a replica is
// only what its broadcaster delivers.

const testSchema = `
collections:
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      email:      {type: string, unique: true}
      phone:      {type: string}
      stage:      {type: enum, values: [lead, qualified, won, lost]}
      amount:     {type: number}
      active:     {type: bool}
  accounts:
    fields:
      name: {type: string, required: true}
`

type testNet struct {
	t       *testing.T
	reorder bool // deliver broadcasts in random order
	// keys, when set, gives replicas a trust model: writer -> signing key,
	// founder A; newTrustNet enrols the others.
	keys map[string]ed25519.PrivateKey
	// recoverNext opens the next replica started as after a crash.
	recoverNext bool
	mu          sync.Mutex
	dag         ipld.DAGService
	replicas    []*replica
	// blockFault wraps the shared block store, fault[i] replica i's
	// datastore: both pass writes through until a test sets a budget.
	blockFault *diskfault.Store
	fault      map[int]*diskfault.Store
	// carried counts the writes and facts replicas carried into a new
	// epoch.
	carried atomic.Int64
	// keepOld: replicas dropping an old epoch keep its blocks (they are
	// shared with replicas still in it).
	keepOld atomic.Bool
}

type replica struct {
	*Store
	n      *testNet
	idx    int
	dir    string
	writer string
	bc     *chanBroadcaster
	base   *badger.Datastore
	clock  *testClock
	online bool
}

// testClock is a settable physical clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

type chanBroadcaster struct {
	n      *testNet
	idx    int
	in     chan []byte
	ctx    context.Context
	cancel context.CancelFunc
}

func (b *chanBroadcaster) Broadcast(ctx context.Context, data []byte) error {
	b.n.mu.Lock()
	from := b.n.replicas[b.idx]
	targets := []*replica{}
	if from.online {
		for _, r := range b.n.replicas {
			if r != nil && r.idx != b.idx && r.online {
				targets = append(targets, r)
			}
		}
	}
	b.n.mu.Unlock()
	for _, r := range targets {
		if b.n.reorder {
			// Deliver after a random delay: messages overtake each other.
			go func() {
				time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
				r.bc.deliver(data)
			}()
			continue
		}
		r.bc.deliver(data)
	}
	return nil
}

func (b *chanBroadcaster) deliver(data []byte) {
	select {
	case b.in <- data:
	case <-b.ctx.Done():
	}
}

func (b *chanBroadcaster) Next(ctx context.Context) ([]byte, error) {
	select {
	case d := <-b.in:
		return d, nil
	case <-ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	case <-b.ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	}
}

var epoch = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// newTestNet starts n replicas (writers A, B, C, ...), all online, with the
// test schema applied on replica 0 and replicated to all.
func newTestNet(t *testing.T, n int) *testNet {
	t.Helper()
	return newTestNetWithSchema(t, n, testSchema)
}

// newTestNetWithSchema is newTestNet with another schema. Replica A records
// itself as an office node, the others as laptops.
func newTestNetWithSchema(t *testing.T, n int, schemaYAML string) *testNet {
	t.Helper()
	return newTestNetWith(t, n, schemaYAML, nil)
}

// newTestNetWith starts the net; with keys, every replica has a trust model
// (founder A) and the founder enrols the others (B an office when office2,
// the rest laptops) before the schema is applied.
func newTestNetWith(t *testing.T, n int, schemaYAML string, keys map[string]ed25519.PrivateKey) *testNet {
	t.Helper()
	blocks := diskfault.Wrap(dssync.MutexWrap(ds.NewMapDatastore()))
	bstore := blockstore.NewBlockstore(blocks)
	tn := &testNet{t: t, keys: keys, dag: merkledag.NewDAGService(blockservice.New(bstore, offline.Exchange(bstore))),
		blockFault: blocks, fault: map[int]*diskfault.Store{}}
	tn.keepOld.Store(true)
	tn.replicas = make([]*replica, n)
	for i := 0; i < n; i++ {
		tn.start(i, t.TempDir())
	}
	// Each replica writes before it hears of others, as a node does at
	// start: go-ds-crdt v0.6.8 loses a branch when a replica without heads
	// writes while it adopts the heads it was just sent.
	for i, r := range tn.replicas {
		tn.setOnline(i, false)
		role := RoleLaptop
		if i == 0 {
			role = RoleOffice
		}
		if err := r.SetNodeInfo(context.Background(), r.writer, role); err != nil {
			t.Fatal(err)
		}
	}
	for i := range tn.replicas {
		tn.setOnline(i, true)
	}
	if keys != nil {
		for _, r := range tn.replicas[1:] {
			if err := tn.replicas[0].AddMember(context.Background(), r.writer, "node "+r.writer, RoleLaptop); err != nil {
				t.Fatal(err)
			}
		}
	}
	sc, err := schema.Parse([]byte(schemaYAML))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.replicas[0].ApplySchema(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	t.Cleanup(tn.closeAll)
	return tn
}

func (tn *testNet) start(i int, dir string) *replica {
	t := tn.t
	opts := badger.DefaultOptions
	opts.SyncWrites = false
	opts.GcInterval = 0
	base, err := badger.NewDatastore(dir, &opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{n: tn, idx: i, dir: dir, writer: string(rune('A' + i)), base: base, online: true,
		clock: &testClock{t: epoch}}
	r.bc = &chanBroadcaster{n: tn, idx: i, in: make(chan []byte, 4096), ctx: ctx, cancel: cancel}
	o := DefaultOptions()
	o.Writer = r.writer
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", r.writer)
	o.Now = r.clock.Now
	o.RebroadcastInterval = time.Hour // tests exchange heads explicitly
	o.DAGSyncerTimeout = 10 * time.Second
	o.Journal = true // every test exercises the change journal's writes
	if tn.keys != nil {
		o.Trust = tn.trustFor(r.writer)
	}
	o.Recover, tn.recoverNext = tn.recoverNext, false
	o.OnEpoch = func(rep EpochReport) { tn.carried.Add(int64(rep.Carried + rep.Facts)) }
	fault := diskfault.Wrap(base)
	tn.mu.Lock()
	tn.fault[i] = fault
	tn.mu.Unlock()
	// The replicas share one block store: dropping an old epoch on one
	// must not take blocks from another (a node drops its own copies).
	st, err := New(ctx, fault, keepBlocks{tn.dag, tn}, r.bc, o)
	if err != nil {
		t.Fatal(err)
	}
	r.Store = st
	tn.mu.Lock()
	tn.replicas[i] = r
	tn.mu.Unlock()
	return r
}

// stop closes a replica the way the node does: broadcaster, store, datastore.
func (r *replica) stop() {
	r.bc.cancel()
	if err := r.Store.Close(); err != nil {
		r.n.t.Error(err)
	}
	if err := r.base.Close(); err != nil {
		r.n.t.Error(err)
	}
	r.n.mu.Lock()
	r.n.replicas[r.idx] = nil
	r.n.mu.Unlock()
}

func (tn *testNet) closeAll() {
	for _, r := range tn.all() {
		r.stop()
	}
}

func (tn *testNet) all() []*replica {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	var out []*replica
	for _, r := range tn.replicas {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

// setOnline cuts a replica off or brings it back; coming back, it exchanges
// heads with every online replica, as a node does when a connection forms.
func (tn *testNet) setOnline(i int, online bool) {
	tn.mu.Lock()
	tn.replicas[i].online = online
	tn.mu.Unlock()
	if online {
		tn.exchangeHeads(i)
	}
}

func (tn *testNet) exchangeHeads(i int) {
	ctx := context.Background()
	me := tn.replicas[i]
	for _, r := range tn.all() {
		if r.idx == i || !r.online {
			continue
		}
		r.bc.deliver(encodeTestHeads(tn.t, me.Stats(ctx).Heads, me.Epoch()))
		me.bc.deliver(encodeTestHeads(tn.t, r.Stats(ctx).Heads, r.Epoch()))
	}
}

func encodeTestHeads(t *testing.T, heads []cid.Cid, ep Epoch) []byte {
	msg := &pb.CRDTBroadcast{}
	for _, h := range heads {
		msg.Heads = append(msg.Heads, &pb.Head{Cid: h.Bytes()})
	}
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return appendEpochTag(b, ep)
}

// keepBlocks is the shared DAG service; with keepOld set, Remove keeps
// the block (tests of epochs, where each replica drops an old epoch).
type keepBlocks struct {
	ipld.DAGService
	tn *testNet
}

func (k keepBlocks) Remove(ctx context.Context, c cid.Cid) error {
	if k.tn.keepOld.Load() {
		return nil
	}
	return k.DAGService.Remove(ctx, c)
}

func (k keepBlocks) RemoveMany(ctx context.Context, cs []cid.Cid) error {
	if k.tn.keepOld.Load() {
		return nil
	}
	return k.DAGService.RemoveMany(ctx, cs)
}

// headsKey is an order-independent rendering of a replica's heads.
func headsKey(r *replica) string {
	heads := r.Stats(context.Background()).Heads
	s := make([]string, len(heads))
	for i, h := range heads {
		s[i] = h.String()
	}
	sort.Strings(s)
	return fmt.Sprint(s)
}

// waitConverged waits until every online replica holds the same heads and
// no DAG job is queued.
func (tn *testNet) waitConverged(timeout time.Duration) {
	tn.t.Helper()
	defer func() {
		if tn.t.Failed() {
			for _, r := range tn.all() {
				st := r.Stats(context.Background())
				tn.t.Logf("replica %s: online=%t height=%d queued=%d dirty=%t heads=%s\n  %s",
					r.writer, r.online, st.MaxHeight, st.QueuedJobs, st.Dirty, headsKey(r), dump(tn.t, r, "contacts"))
			}
		}
	}()
	// Equal heads are the sign that every delivery happened. go-ds-crdt
	// v0.6.8 can leave a merged block out of a replica's heads when a local
	// write races its merge (the state is the same; the next write that
	// links it heals the heads, as a node's periodic heads exchange would
	// not): so the same visible state, stable for two seconds with nothing
	// queued, counts too.
	var stableSince time.Time
	waitFor(tn.t, timeout, "replicas to converge", func() bool {
		var rs []*replica
		for _, r := range tn.all() {
			tn.mu.Lock()
			if r.online {
				rs = append(rs, r)
			}
			tn.mu.Unlock()
		}
		// Equal heads are not enough: a fresh replica adopts the heads it
		// hears of before merging them. Compare what is visible too.
		first := headsKey(rs[0])
		view := func(r *replica) string {
			return dump(tn.t, r, SchemaCollection) + dump(tn.t, r, MembersCollection) + dump(tn.t, r, "contacts") + dump(tn.t, r, "accounts") + dump(tn.t, r, "prices")
		}
		firstView := view(rs[0])
		sameHeads := true
		for _, r := range rs {
			if r.Stats(context.Background()).QueuedJobs > 0 || r.Epoch() != rs[0].Epoch() || r.EpochStatus().Adopting || view(r) != firstView {
				stableSince = time.Time{}
				return false
			}
			sameHeads = sameHeads && headsKey(r) == first
		}
		if sameHeads {
			return true
		}
		if stableSince.IsZero() {
			stableSince = time.Now()
		}
		return time.Since(stableSince) > 2*time.Second
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; ; delay = min(delay*2, 50*time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(delay)
	}
}

// dump renders the visible state of a collection on a replica, conflicts
// included (candidates, open or decided, record conflicts), for comparisons
// between replicas.
func dump(t *testing.T, r *replica, collection string) string {
	t.Helper()
	var out []string
	err := r.listFolded(context.Background(), collection, func(rec *Record, exists bool) error {
		names := make([]string, 0, len(rec.Fields))
		for n := range rec.Fields {
			names = append(names, n)
		}
		sort.Strings(names)
		s := rec.ID + ":"
		if !exists {
			s = rec.ID + "(deleted):"
		}
		for _, n := range names {
			f := rec.Fields[n]
			s += fmt.Sprintf(" %s=%v", n, f.Value)
			for _, c := range f.Candidates {
				s += fmt.Sprintf("|%v@%s", c.Value, c.Op)
			}
			if f.Open {
				s += "(open)"
			}
		}
		if c := rec.Conflict; c != nil {
			s += fmt.Sprintf(" record-conflict[deleted=%t open=%t dels=%d edits=%d]", c.Deleted, c.Open, len(c.Deletes), len(c.Edits))
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(out)
}

func mustPut(t *testing.T, r *replica, coll, id string, fields map[string]any) PutResult {
	t.Helper()
	res, err := r.Put(context.Background(), coll, id, fields)
	if err != nil {
		t.Fatalf("put on %s: %v", r.writer, err)
	}
	return res
}

func mustGet(t *testing.T, r *replica, coll, id string) *Record {
	t.Helper()
	rec, err := r.Get(context.Background(), coll, id)
	if err != nil {
		t.Fatalf("get on %s: %v", r.writer, err)
	}
	return rec
}

// testKeys returns a deterministic signing key per writer A, B, ...
func testKeys(n int) map[string]ed25519.PrivateKey {
	keys := map[string]ed25519.PrivateKey{}
	for i := 0; i < n; i++ {
		seed := make([]byte, ed25519.SeedSize)
		seed[0] = byte(i + 1)
		keys[string(rune('A'+i))] = ed25519.NewKeyFromSeed(seed)
	}
	return keys
}

// trustFor is the trust model of one replica of a keyed net.
func (tn *testNet) trustFor(writer string) *Trust {
	return &Trust{
		Founder: "A",
		Sign: func(msg []byte) ([]byte, error) {
			return ed25519.Sign(tn.keys[writer], msg), nil
		},
		Verify: func(w string, msg, sig []byte) bool {
			k, ok := tn.keys[w]
			return ok && ed25519.Verify(k.Public().(ed25519.PublicKey), msg, sig)
		},
	}
}
