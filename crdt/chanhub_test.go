package crdt

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dscrdt "github.com/ipfs/go-ds-crdt"
)

// Channel stores for tests: each replica of a testNet opens a store per
// channel over its own datastore, with its everyone store as authority;
// a chanHub carries one channel's heads between replicas.

// grantsSchema routes deals by territory and visits by region.
const grantsSchema = trustSchema + `
  deals:
    channel: {field: territory}
    fields:
      territory: {type: enum, values: [east, west, north]}
      title:     {type: string}
  visits:
    channel: {field: region, default: hq}
    fields:
      region: {type: string}
`

// newGrantsNet starts an office A and a laptop B (more laptops with n > 2)
// sharing grantsSchema, every clock at epoch + 1 minute.
func newGrantsNet(t *testing.T, n int) *testNet {
	t.Helper()
	tn := newTestNetWith(t, n, grantsSchema, testKeys(n))
	setClocks(tn, time.Minute)
	return tn
}

// setClocks sets every replica's physical clock to epoch + d.
func setClocks(tn *testNet, d time.Duration) {
	for _, r := range tn.all() {
		r.clock.Set(epoch.Add(d))
	}
}

// chanHub connects one channel's stores across replicas: what a store
// broadcasts reaches the others while both replicas are online (the
// replica's online flag cuts the everyone store and its channels alike).
type chanHub struct {
	tn      *testNet
	channel string
	mu      sync.Mutex
	members []*hubMember
}

type hubMember struct {
	hub    *chanHub
	r      *replica
	store  *Store
	in     chan []byte
	ctx    context.Context
	cancel context.CancelFunc
}

func newHub(tn *testNet, channel string) *chanHub { return &chanHub{tn: tn, channel: channel} }

func (m *hubMember) online() bool {
	m.hub.tn.mu.Lock()
	defer m.hub.tn.mu.Unlock()
	return m.r.online
}

func (m *hubMember) Broadcast(ctx context.Context, data []byte) error {
	if !m.online() {
		return nil
	}
	m.hub.mu.Lock()
	others := slices.Clone(m.hub.members)
	m.hub.mu.Unlock()
	for _, o := range others {
		if o != m && o.online() {
			o.deliver(data)
		}
	}
	return nil
}

func (m *hubMember) deliver(data []byte) {
	select {
	case m.in <- data:
	case <-m.ctx.Done():
	}
}

func (m *hubMember) Next(ctx context.Context) ([]byte, error) {
	select {
	case d := <-m.in:
		return d, nil
	case <-ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	case <-m.ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	}
}

// open opens r's store of the hub's channel, under its own root in r's
// datastore, with r's everyone store as its authority.
func (h *chanHub) open(t *testing.T, r *replica) *Store {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &hubMember{hub: h, r: r, in: make(chan []byte, 4096), ctx: ctx, cancel: cancel}
	o := DefaultOptions()
	o.Writer = r.writer
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", r.writer, "channel", h.channel)
	o.Now = r.clock.Now
	o.RebroadcastInterval = time.Hour
	o.DAGSyncerTimeout = 10 * time.Second
	o.Trust = r.opts.Trust
	o.Root, o.Namespace = DefaultRoot.ChildString("ch").ChildString(h.channel), ds.Key{}
	o.Channel, o.Authority = h.channel, r.Store
	st, err := New(ctx, r.base, h.tn.dag, m, o)
	if err != nil {
		t.Fatal(err)
	}
	m.store = st
	h.mu.Lock()
	h.members = append(h.members, m)
	h.mu.Unlock()
	t.Cleanup(func() {
		m.cancel()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	h.exchange()
	return st
}

// exchange hands every online store's heads to every other, as a node does
// when a connection forms.
func (h *chanHub) exchange() {
	h.mu.Lock()
	ms := slices.Clone(h.members)
	h.mu.Unlock()
	ctx := context.Background()
	for _, a := range ms {
		for _, b := range ms {
			if a != b && a.online() && b.online() {
				b.deliver(encodeTestHeads(h.tn.t, a.store.Stats(ctx).Heads, a.store.Epoch()))
			}
		}
	}
}

// converged waits until the channel's online stores hold the same heads
// and show the same deals.
func (h *chanHub) converged(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	ms := slices.Clone(h.members)
	h.mu.Unlock()
	waitFor(t, 10*time.Second, "channel "+h.channel+" to converge", func() bool {
		var first, firstView string
		for i, m := range ms {
			if !m.online() {
				continue
			}
			r := &replica{Store: m.store}
			if m.store.Stats(context.Background()).QueuedJobs > 0 {
				return false
			}
			heads, view := headsKey(r), dump(t, r, "deals")+dump(t, r, "contacts")
			if i > 0 && first != "" && (heads != first || view != firstView) {
				return false
			}
			first, firstView = heads, view
		}
		return true
	})
}

// forge writes one write of several fields the way a modified client
// would: straight into s's go-ds-crdt, as writer, signed with signer (nil:
// unsigned), superseding nothing.
func forge(t *testing.T, s *Store, coll, id string, fields map[string]any, writer string, signer ed25519.PrivateKey) OpID {
	t.Helper()
	ctx := context.Background()
	eid, err := EscapeID(id)
	if err != nil {
		t.Fatal(err)
	}
	opID := OpID{Time: s.clock.Now(), Writer: writer}
	w := &write{ID: opID}
	for _, f := range slices.Sorted(func(yield func(string) bool) {
		for f := range fields {
			if !yield(f) {
				return
			}
		}
	}) {
		w.Ops = append(w.Ops, Op{ID: opID, Field: f, Value: fields[f]})
	}
	key := writeKey(coll, eid, opID)
	data, err := encodeWrite(w)
	if err != nil {
		t.Fatal(err)
	}
	if signer != nil {
		data = append(data, ed25519.Sign(signer, writeMessage(key.String(), data))...)
	}
	b, err := s.eng().Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return opID
}

// ignoredFor returns the reason s ignores op for ("" when it does not).
func ignoredFor(t *testing.T, s *Store, op OpID) string {
	t.Helper()
	ig, err := s.Ignored(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ig {
		if o.Op == op {
			return o.Reason
		}
	}
	return ""
}

// expectIgnored waits until every store lists op as ignored for reason.
func expectIgnored(t *testing.T, op OpID, reason string, stores ...*Store) {
	t.Helper()
	for _, s := range stores {
		waitFor(t, 10*time.Second, "op "+op.String()+" ignored ("+reason+") by "+s.Writer()+" "+s.opts.Channel, func() bool {
			return ignoredFor(t, s, op) == reason
		})
	}
}

// getValue returns a field's shown value (nil: no record).
func getValue(t *testing.T, s *Store, coll, id, field string) any {
	t.Helper()
	rec, err := s.Get(context.Background(), coll, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("get %s/%s on %s %s: %v", coll, id, s.Writer(), s.opts.Channel, err)
	}
	return rec.Values()[field]
}

// putIn writes fields of a record into store s.
func putIn(t *testing.T, s *Store, coll, id string, fields map[string]any) OpID {
	t.Helper()
	res, err := s.Put(context.Background(), coll, id, fields)
	if err != nil {
		t.Fatalf("put %s/%s on %s %s: %v", coll, id, s.Writer(), s.opts.Channel, err)
	}
	return res.Op
}
