package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/ipfs/go-ds-crdt/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

// bsTestConfig is the default config with short waits.
func bsTestConfig() blockSyncConfig {
	cfg := defaultBlockSyncConfig()
	cfg.idle = 5 * time.Second
	cfg.prepare = 10 * time.Second
	cfg.slotWait = 5 * time.Second
	return cfg
}

func newTestBlockSync(t testing.TB, h host.Host, bs blockstore.Blockstore, heads []cid.Cid, log *slog.Logger, cfg blockSyncConfig) *BlockSync {
	t.Helper()
	if log == nil {
		log = testLogger()
	}
	s := newBlockSync(h, bs, fixedHeads(heads), log, cfg)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// bsNode makes a go-ds-crdt-shaped block linking to parents: dag-pb, CIDv1,
// whose data is a pb.Delta with priority 1 + the parents' highest (delta),
// or plain bytes that are not a delta.
func bsNode(t testing.TB, delta bool, tag string, parents ...*merkledag.ProtoNode) *merkledag.ProtoNode {
	t.Helper()
	var data []byte
	if delta {
		prio := uint64(1)
		for _, p := range parents {
			prio = max(prio, bsDeltaPriority(p.Data())+1)
		}
		var err error
		data, err = proto.Marshal(&pb.Delta{
			Elements: []*pb.Element{{Key: "/k/" + tag, Id: tag, Value: []byte("value of " + tag)}},
			Priority: prio,
		})
		if err != nil {
			t.Fatal(err)
		}
	} else {
		data = []byte("plain block " + tag)
	}
	nd := merkledag.NodeWithData(data)
	if err := nd.SetCidBuilder(merkledag.V1CidPrefix()); err != nil {
		t.Fatal(err)
	}
	for _, p := range parents {
		if err := nd.AddNodeLink("", p); err != nil {
			t.Fatal(err)
		}
	}
	return nd
}

func bsPut(t testing.TB, bs blockstore.Blockstore, nodes ...*merkledag.ProtoNode) {
	t.Helper()
	blks := make([]blocks.Block, len(nodes))
	for i, n := range nodes {
		blks[i] = n
	}
	if err := bs.PutMany(context.Background(), blks); err != nil {
		t.Fatal(err)
	}
}

// bsKeys returns the multihashes in bs.
func bsKeys(t testing.TB, bs blockstore.Blockstore) map[string]struct{} {
	t.Helper()
	ch, err := bs.AllKeysChan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]struct{}{}
	for c := range ch {
		out[string(c.Hash())] = struct{}{}
	}
	return out
}

func bsHas(t testing.TB, bs blockstore.Blockstore, c cid.Cid) bool {
	t.Helper()
	ok, err := bs.Has(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func bsSameSet(a, b []cid.Cid) bool {
	ka := make([]string, len(a))
	kb := make([]string, len(b))
	for i, c := range a {
		ka[i] = string(c.Hash())
	}
	for i, c := range b {
		kb[i] = string(c.Hash())
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}

func bsCids(nodes ...*merkledag.ProtoNode) []cid.Cid {
	out := make([]cid.Cid, len(nodes))
	for i, n := range nodes {
		out[i] = n.Cid()
	}
	return out
}

func bsSize(nodes ...*merkledag.ProtoNode) int64 {
	var n int64
	for _, nd := range nodes {
		n += int64(len(nd.RawData()))
	}
	return n
}

// bsTestDAG is a chain of 2,000 blocks, a branch of 50 blocks from
// chain[299] left as a second head, and a branch of 20 blocks from
// chain[1199] merged back by chain[1500].
type bsTestDAG struct {
	chain, fork, merged []*merkledag.ProtoNode
}

func newBSTestDAG(t testing.TB, delta bool) *bsTestDAG {
	d := &bsTestDAG{}
	for i := range 2000 {
		var parents []*merkledag.ProtoNode
		if i > 0 {
			parents = append(parents, d.chain[i-1])
		}
		if i == 1200 {
			for j := range 20 {
				p := d.chain[1199]
				if j > 0 {
					p = d.merged[j-1]
				}
				d.merged = append(d.merged, bsNode(t, delta, fmt.Sprintf("m%d", j), p))
			}
		}
		if i == 1500 {
			parents = append(parents, d.merged[19])
		}
		d.chain = append(d.chain, bsNode(t, delta, fmt.Sprintf("c%d", i), parents...))
		if i == 299 {
			for j := range 50 {
				p := d.chain[299]
				if j > 0 {
					p = d.fork[j-1]
				}
				d.fork = append(d.fork, bsNode(t, delta, fmt.Sprintf("f%d", j), p))
			}
		}
	}
	return d
}

func (d *bsTestDAG) all() []*merkledag.ProtoNode {
	return slices.Concat(d.chain, d.fork, d.merged)
}

func (d *bsTestDAG) heads() []cid.Cid { return bsCids(d.chain[1999], d.fork[49]) }

// bsProgress records progress callbacks.
type bsProgress struct {
	mu  sync.Mutex
	got []FetchProgress
}

func (p *bsProgress) fn(pr FetchProgress) {
	p.mu.Lock()
	p.got = append(p.got, pr)
	p.mu.Unlock()
}

func (p *bsProgress) check(t testing.TB, blocks int, bytes int64) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.got) == 0 {
		t.Fatal("no progress reported")
	}
	for i, pr := range p.got {
		if pr.Total != blocks {
			t.Errorf("progress %d: total %d, want %d", i, pr.Total, blocks)
		}
		if i > 0 && (pr.Blocks < p.got[i-1].Blocks || pr.Bytes < p.got[i-1].Bytes) {
			t.Errorf("progress went back: %+v after %+v", pr, p.got[i-1])
		}
	}
	if last := p.got[len(p.got)-1]; last.Blocks != blocks || last.Bytes != bytes {
		t.Errorf("last progress %+v, want %d blocks, %d bytes", last, blocks, bytes)
	}
}

// bsServedWalk returns the walk methods logged by a responder.
func bsServedWalk(h *recordingHandler) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Message != "block sync: served" {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "walk" {
				out = append(out, a.Value.String())
			}
			return true
		})
	}
	return out
}

func TestBlockSyncFetchDAG(t *testing.T) {
	for _, delta := range []bool{true, false} {
		name, walk := "deltas", bsWalkPriority
		if !delta {
			name, walk = "plain", bsWalkClosure
		}
		t.Run(name, func(t *testing.T) {
			d := newBSTestDAG(t, delta)
			hA, hB := newTestHost(t), newTestHost(t)
			bsA, bsB := newTestBlockstore(), newTestBlockstore()
			bsPut(t, bsA, d.all()...)
			bsPut(t, bsB, d.chain[:500]...)
			bsPut(t, bsB, d.fork...)
			logsA := &recordingHandler{}
			sA := newTestBlockSync(t, hA, bsA, d.heads(), slog.New(logsA), bsTestConfig())
			sB := newTestBlockSync(t, hB, bsB, nil, nil, bsTestConfig())
			connect(t, hB, hA)

			want := slices.Concat(d.chain[500:], d.merged)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var prog bsProgress
			res, err := sB.Fetch(ctx, hA.ID(), bsCids(d.chain[499], d.fork[49]), prog.fn)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("fetched %d blocks, %d bytes in %s", res.Blocks, res.Bytes, res.Duration)
			if res.Blocks != len(want) || res.Bytes != bsSize(want...) {
				t.Errorf("fetched %d blocks, %d bytes; want %d, %d", res.Blocks, res.Bytes, len(want), bsSize(want...))
			}
			if !bsSameSet(res.Heads, d.heads()) {
				t.Errorf("heads %v, want %v", res.Heads, d.heads())
			}
			if ka, kb := bsKeys(t, bsA), bsKeys(t, bsB); len(kb) != len(ka) || len(ka) != len(d.all()) {
				t.Errorf("B has %d blocks, A %d, DAG %d", len(kb), len(ka), len(d.all()))
			} else {
				for k := range ka {
					if _, ok := kb[k]; !ok {
						t.Fatal("B lacks a block of A")
					}
				}
			}
			prog.check(t, len(want), bsSize(want...))
			if got := bsServedWalk(logsA); !slices.Equal(got, []string{walk}) {
				t.Errorf("walks %v, want [%s]", got, walk)
			}
			stA, stB := sA.Stats(), sB.Stats()
			if stB.FetchedBlocks != int64(len(want)) || stB.FetchedBytes != bsSize(want...) || stB.InProgress {
				t.Errorf("B stats %+v", stB)
			}
			if stA.ServedBlocks != int64(len(want)) || stA.ServedBytes != bsSize(want...) || stA.FetchedBlocks != 0 {
				t.Errorf("A stats %+v", stA)
			}

			// In sync now: nothing to send.
			res, err = sB.Fetch(ctx, hA.ID(), d.heads(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Blocks != 0 || res.Bytes != 0 || !bsSameSet(res.Heads, d.heads()) {
				t.Errorf("second fetch: %+v", res)
			}
			// Claiming only chain[1989]: what is not below it, chain[1990..1999]
			// and the 50 blocks of the fork (B already has them: no new keys).
			res, err = sB.Fetch(ctx, hA.ID(), bsCids(d.chain[1989]), nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Blocks != 60 || len(bsKeys(t, bsB)) != len(d.all()) {
				t.Errorf("fetch above chain[1989]: %d blocks, want 60", res.Blocks)
			}
		})
	}
}

// A fresh requester gets everything; a responder without blocks sends none.
func TestBlockSyncFreshAndEmpty(t *testing.T) {
	d := newBSTestDAG(t, true)
	hA, hB, hC := newTestHost(t), newTestHost(t), newTestHost(t)
	bsA, bsB := newTestBlockstore(), newTestBlockstore()
	bsPut(t, bsA, d.all()...)
	newTestBlockSync(t, hA, bsA, d.heads(), nil, bsTestConfig())
	sB := newTestBlockSync(t, hB, bsB, nil, nil, bsTestConfig())
	newTestBlockSync(t, hC, newTestBlockstore(), nil, nil, bsTestConfig())
	connect(t, hB, hA)
	connect(t, hB, hC)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	res, err := sB.Fetch(ctx, hC.ID(), nil, nil)
	if err != nil || res.Blocks != 0 || len(res.Heads) != 0 {
		t.Fatalf("from empty responder: %+v, %v", res, err)
	}
	res, err = sB.Fetch(ctx, hA.ID(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != len(d.all()) || len(bsKeys(t, bsB)) != len(d.all()) {
		t.Fatalf("fresh fetch: %d blocks, B has %d, want %d", res.Blocks, len(bsKeys(t, bsB)), len(d.all()))
	}
	// Requester ahead: the responder lacks its heads, asks for a locator,
	// and sends nothing.
	extra := bsNode(t, true, "extra", d.chain[1999], d.fork[49])
	bsPut(t, bsB, extra)
	res, err = sB.Fetch(ctx, hA.ID(), bsCids(extra), nil)
	if err != nil || res.Blocks != 0 {
		t.Fatalf("requester ahead: %+v, %v", res, err)
	}
}

// A requester with blocks of its own (offline writes): the responder lacks
// its heads and asks for a locator, so it sends only about what is missing,
// not its whole DAG. Both directions.
func TestBlockSyncDiverged(t *testing.T) {
	for _, delta := range []bool{true, false} {
		t.Run(map[bool]string{true: "deltas", false: "plain"}[delta], func(t *testing.T) {
			d := newBSTestDAG(t, delta)
			var own []*merkledag.ProtoNode // B's offline writes on chain[499]
			for j := range 30 {
				p := d.chain[499]
				if j > 0 {
					p = own[j-1]
				}
				own = append(own, bsNode(t, delta, fmt.Sprintf("b%d", j), p))
			}
			hA, hB := newTestHost(t), newTestHost(t)
			bsA, bsB := newTestBlockstore(), newTestBlockstore()
			bsPut(t, bsA, d.chain...)
			bsPut(t, bsB, d.chain[:500]...)
			bsPut(t, bsB, own...)
			sA := newTestBlockSync(t, hA, bsA, bsCids(d.chain[1999]), nil, bsTestConfig())
			sB := newTestBlockSync(t, hB, bsB, bsCids(own[29]), nil, bsTestConfig())
			connect(t, hB, hA)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			res, err := sB.Fetch(ctx, hA.ID(), bsCids(own[29]), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("B from A: %d blocks (1,500 missing)", res.Blocks)
			if res.Blocks < 1500 || res.Blocks > 1500+1500/8+1 {
				t.Errorf("B got %d blocks, want 1,500 (+ at most 1/8)", res.Blocks)
			}
			if n := len(bsKeys(t, bsB)); n != 2030 {
				t.Errorf("B has %d blocks, want 2,030", n)
			}

			res, err = sA.Fetch(ctx, hB.ID(), bsCids(d.chain[1999]), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("A from B: %d blocks (30 missing)", res.Blocks)
			if res.Blocks < 30 || res.Blocks > 30+1500/8+1 {
				t.Errorf("A got %d blocks, want 30 (+ at most 1,500/8)", res.Blocks)
			}
			if n := len(bsKeys(t, bsA)); n != 2030 {
				t.Errorf("A has %d blocks, want 2,030", n)
			}
		})
	}
}

// A fork deeper than the locator's walk budget: the responder sends more
// than needed, never less.
func TestBlockSyncLocatorBudget(t *testing.T) {
	d := newBSTestDAG(t, true)
	var own []*merkledag.ProtoNode
	for j := range 30 {
		p := d.chain[499]
		if j > 0 {
			p = own[j-1]
		}
		own = append(own, bsNode(t, true, fmt.Sprintf("b%d", j), p))
	}
	hA, hB := newTestHost(t), newTestHost(t)
	bsA, bsB := newTestBlockstore(), newTestBlockstore()
	bsPut(t, bsA, d.chain...)
	bsPut(t, bsB, d.chain[:500]...)
	bsPut(t, bsB, own...)
	newTestBlockSync(t, hA, bsA, bsCids(d.chain[1999]), nil, bsTestConfig())
	cfg := bsTestConfig()
	cfg.locatorBudget = 8
	sB := newTestBlockSync(t, hB, bsB, nil, nil, cfg)
	connect(t, hB, hA)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	loc, err := sB.locator(ctx, bsCids(own[29]))
	if err != nil {
		t.Fatal(err)
	}
	if !bsSameSet(loc, bsCids(own[28], own[27], own[26], own[25], own[24], own[23], own[22], own[21])) {
		t.Errorf("locator %v", loc)
	}
	res, err := sB.Fetch(ctx, hA.ID(), bsCids(own[29]), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 2000 || len(bsKeys(t, bsB)) != 2030 {
		t.Errorf("fetched %d blocks (want all 2,000 of A), B has %d", res.Blocks, len(bsKeys(t, bsB)))
	}
}

// bsRandomDAG builds a random go-ds-crdt-shaped DAG: each block links to 0
// to 3 recent blocks.
func bsRandomDAG(t testing.TB, rng *rand.Rand, n int, delta bool) []*merkledag.ProtoNode {
	var nodes []*merkledag.ProtoNode
	for i := range n {
		var parents []*merkledag.ProtoNode
		if i > 0 {
			for range rng.IntN(4) {
				p := nodes[max(0, i-1-rng.IntN(min(i, 8)))]
				if !slices.Contains(parents, p) {
					parents = append(parents, p)
				}
			}
		}
		nodes = append(nodes, bsNode(t, delta, fmt.Sprintf("r%d-%d", i, rng.Int()), parents...))
	}
	return nodes
}

// bsReach returns the blocks reachable from roots among nodes.
func bsReach(nodes []*merkledag.ProtoNode, roots []cid.Cid) map[string]bool {
	byKey := map[string]*merkledag.ProtoNode{}
	for _, n := range nodes {
		byKey[string(n.Cid().Hash())] = n
	}
	out := map[string]bool{}
	var walk func(c cid.Cid)
	walk = func(c cid.Cid) {
		k := string(c.Hash())
		n, ok := byKey[k]
		if !ok || out[k] {
			return
		}
		out[k] = true
		for _, l := range n.Links() {
			walk(l.Cid)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

// Both walks send exactly the blocks reachable from ours and not from
// theirs, and the priority walk is chosen only when priorities are usable.
func TestBlockSyncPlan(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		delta := seed%4 != 3
		nodes := bsRandomDAG(t, rng, 50+rng.IntN(300), delta)
		bs := newTestBlockstore()
		// The responder may lack a few blocks (never a head).
		var missing map[string]bool
		if seed%5 == 4 {
			missing = map[string]bool{}
			for range 3 {
				missing[string(nodes[rng.IntN(len(nodes)-1)].Cid().Hash())] = true
			}
		}
		var stored []*merkledag.ProtoNode
		for _, n := range nodes {
			if !missing[string(n.Cid().Hash())] {
				stored = append(stored, n)
			}
		}
		bsPut(t, bs, stored...)
		pick := func(k int) []cid.Cid {
			var out []cid.Cid
			for range k {
				out = append(out, nodes[rng.IntN(len(nodes))].Cid())
			}
			return out
		}
		ours := append(pick(1+rng.IntN(3)), nodes[len(nodes)-1].Cid())
		theirs := pick(rng.IntN(6))
		theirs = append(theirs, testCids(t, "unknown", 2)...)

		want := map[string]bool{}
		have := bsReach(stored, theirs)
		for k := range bsReach(stored, ours) {
			if !have[k] {
				want[k] = true
			}
		}
		check := func(name string, plan bsPlan) {
			t.Helper()
			got := map[string]bool{}
			var size int64
			for _, r := range plan.refs {
				k := string(r.c.Hash())
				if got[k] {
					t.Errorf("seed %d %s: %s twice", seed, name, r.c)
				}
				got[k] = true
				size += int64(r.size)
			}
			if len(got) != len(want) {
				t.Errorf("seed %d %s: %d blocks, want %d", seed, name, len(got), len(want))
			}
			for k := range want {
				if !got[k] {
					t.Errorf("seed %d %s: a wanted block is missing", seed, name)
					break
				}
			}
			if size != plan.bytes {
				t.Errorf("seed %d %s: bytes %d, sizes add up to %d", seed, name, plan.bytes, size)
			}
		}
		plan, err := bsPlanByClosure(ctx, bs, ours, theirs)
		if err != nil {
			t.Fatal(err)
		}
		check("closure", plan)
		plan, err = bsPlanByPriority(ctx, bs, ours, theirs)
		if delta != (err == nil) {
			t.Fatalf("seed %d: priority walk on delta=%v: %v", seed, delta, err)
		}
		if delta {
			check("priority", plan)
		}
		plan, method, err := bsPlanBlocks(ctx, bs, ours, theirs)
		if err != nil {
			t.Fatal(err)
		}
		check(method, plan)
		if (method == bsWalkPriority) != delta {
			t.Errorf("seed %d: walk %s on delta=%v", seed, method, delta)
		}
	}
}

// Priorities that are not above the children's make the responder fall
// back to the closure walk.
func TestBlockSyncPlanBadPriorities(t *testing.T) {
	ctx := context.Background()
	mk := func(prio uint64, tag string, parents ...*merkledag.ProtoNode) *merkledag.ProtoNode {
		data, _ := proto.Marshal(&pb.Delta{Priority: prio, Elements: []*pb.Element{{Key: tag}}})
		nd := merkledag.NodeWithData(data)
		_ = nd.SetCidBuilder(merkledag.V1CidPrefix())
		for _, p := range parents {
			_ = nd.AddNodeLink("", p)
		}
		return nd
	}
	a := mk(5, "a")
	b := mk(3, "b", a) // lower than its child
	c := mk(9, "c", b)
	bs := newTestBlockstore()
	bsPut(t, bs, a, b, c)
	if _, err := bsPlanByPriority(ctx, bs, bsCids(c), nil); !errors.Is(err, errBSNoPriorities) {
		t.Fatalf("priority walk: %v", err)
	}
	plan, method, err := bsPlanBlocks(ctx, bs, bsCids(c), nil)
	if err != nil || method != bsWalkClosure || len(plan.refs) != 3 {
		t.Fatalf("plan %+v, %s, %v", plan, method, err)
	}
	// The walk checks only the links it follows: it stops above b here.
	plan, method, err = bsPlanBlocks(ctx, bs, bsCids(c), bsCids(b))
	if err != nil || method != bsWalkPriority || len(plan.refs) != 1 || !plan.refs[0].c.Equals(c.Cid()) {
		t.Fatalf("plan %+v, %s, %v", plan, method, err)
	}
}

func TestBlockSyncDeltaPriority(t *testing.T) {
	data, _ := proto.Marshal(&pb.Delta{
		Elements:   []*pb.Element{{Key: "k", Id: "i", Value: []byte("v")}},
		Tombstones: []*pb.Element{{Key: "k2", Id: "i2"}},
		Priority:   42,
	})
	if p := bsDeltaPriority(data); p != 42 {
		t.Errorf("priority %d", p)
	}
	for _, d := range [][]byte{nil, []byte("plain"), {0x18}, {0xff, 0xff}, append(data, 0x20, 1)} {
		if p := bsDeltaPriority(d); p != 0 {
			t.Errorf("%x: priority %d", d, p)
		}
	}
}

// bsReplica is a go-ds-crdt replica wired like a node (broadcaster, bitswap
// DAG service over bstore), with a BlockSync on the same blockstore and no
// heads exchange.
type bsReplica struct {
	h      host.Host
	bstore blockstore.Blockstore
	bc     *Broadcaster
	store  *dscrdt.Datastore
	sync   *BlockSync
}

// newBSReplicaOn keeps the crdt state and the blocks in base, like a node
// (a map datastore if base is nil).
func newBSReplicaOn(t testing.TB, base ds.Batching) *bsReplica {
	t.Helper()
	e := newTestEngine(t, base, "ferry-blocksync-test", 5*time.Minute)
	bsync := NewBlockSync(e.h, e.bstore, e.heads, testLogger())
	t.Cleanup(func() { _ = bsync.Close() })
	return &bsReplica{h: e.h, bstore: e.bstore, bc: e.bc, store: e.store, sync: bsync}
}

// bsDump returns every key and value of a replica.
func bsDump(t testing.TB, s *dscrdt.Datastore) map[string]string {
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

// bsCatchUp writes n single-key Puts on a fresh replica A (one block each),
// then a fresh replica B connects, fetches A's blocks with block sync (or
// not, with bitswap only), gets A's heads and merges. It returns the fetch
// time and the total time to convergence.
func bsCatchUp(t *testing.T, n int, useBlockSync bool, deadline time.Duration) (fetch, total time.Duration, res FetchResult) {
	var baseA, baseB ds.Batching // closed after the replicas (cleanups run last first)
	if os.Getenv("FERRY_BLOCKSYNC_BADGER") != "" {
		open := func() ds.Batching {
			d, err := OpenDatastore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Close() })
			return d
		}
		baseA, baseB = open(), open()
	}
	a, b := newBSReplicaOn(t, baseA), newBSReplicaOn(t, baseB)
	ctx, cancel := context.WithTimeout(context.Background(), deadline+time.Minute)
	defer cancel()
	t0 := time.Now()
	for i := range n {
		if err := a.store.Put(ctx, ds.NewKey(fmt.Sprintf("/contacts/%06d/name", i)), []byte(fmt.Sprintf("name %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("A wrote %d blocks in %s (height %d)", n, time.Since(t0).Round(time.Millisecond), a.store.InternalStats(ctx).MaxHeight)
	want := bsDump(t, a.store)
	if len(want) != n {
		t.Fatalf("A has %d keys", len(want))
	}
	connect(t, b.h, a.h)

	start := time.Now()
	heads := a.store.InternalStats(ctx).Heads
	if useBlockSync {
		var err error
		res, err = b.sync.Fetch(ctx, a.h.ID(), b.store.InternalStats(ctx).Heads, nil)
		if err != nil {
			t.Fatal(err)
		}
		heads = res.Heads
	}
	fetch = time.Since(start)
	payload, err := EncodeHeads(heads)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.bc.Inject(ctx, a.h.ID(), payload); err != nil {
		t.Fatal(err)
	}
	for {
		if got := bsDump(t, b.store); len(got) == len(want) {
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
			t.Fatalf("B did not converge within %s (%d/%d keys)", deadline, len(bsDump(t, b.store)), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	total = time.Since(start)
	return fetch, total, res
}

// The catch-up go-ds-crdt alone does at ~48 blocks/s (~21 s for 1,000
// blocks) takes seconds with the blocks fetched first.
func TestBlockSyncCRDTCatchUp(t *testing.T) {
	const n = 1000
	fetch, total, res := bsCatchUp(t, n, true, 10*time.Second)
	if res.Blocks != n {
		t.Errorf("fetched %d blocks, want %d", res.Blocks, n)
	}
	t.Logf("%d blocks: fetch %s (%d bytes), fetch + merge %s (bitswap alone: ~%s)",
		n, fetch.Round(time.Millisecond), res.Bytes, total.Round(time.Millisecond), time.Duration(n/48)*time.Second)
}

// FERRY_BLOCKSYNC_BENCH=1000,10000 measures catch-ups of those sizes;
// FERRY_BLOCKSYNC_BITSWAP=1 also measures bitswap alone;
// FERRY_BLOCKSYNC_BADGER=1 keeps both replicas in badger, like a node.
func TestBlockSyncCatchUpTiming(t *testing.T) {
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
			fetch, total, res := bsCatchUp(t, n, true, 10*time.Minute)
			t.Logf("block sync, %d blocks: fetch %s (%d bytes, %.0f blocks/s), fetch + merge %s",
				n, fetch.Round(time.Millisecond), res.Bytes, float64(n)/fetch.Seconds(), total.Round(time.Millisecond))
		})
		if os.Getenv("FERRY_BLOCKSYNC_BITSWAP") != "" {
			t.Run(fmt.Sprintf("bitswap-%d", n), func(t *testing.T) {
				_, total, _ := bsCatchUp(t, n, false, 10*time.Minute)
				t.Logf("bitswap alone, %d blocks: %s (%.0f blocks/s)", n, total.Round(time.Millisecond), float64(n)/total.Seconds())
			})
		}
	}
}

// bsEvil makes h answer BlocksProtocol with serve, after reading the
// request frame.
func bsEvil(t testing.TB, h host.Host, serve func(w io.Writer)) {
	h.SetStreamHandler(BlocksProtocol, func(str network.Stream) {
		_ = str.SetDeadline(time.Now().Add(20 * time.Second))
		if _, _, err := bsReadFrame(bufio.NewReader(str), blockSyncMaxRequestFrame); err != nil {
			_ = str.Reset()
			return
		}
		w := bufio.NewWriter(str)
		serve(w)
		_ = w.Flush()
		_ = str.Close()
	})
}

func bsHeaderFrame(w io.Writer, n, size uint64, heads []cid.Cid) {
	payload, _ := EncodeHeads(heads)
	_ = bsWriteFrame(w, bsFrameHeader, binary.AppendUvarint(binary.AppendUvarint(nil, n), size), payload)
}

func bsBlockFrame(w io.Writer, c cid.Cid, data []byte) {
	_ = bsWriteFrame(w, bsFrameBlock, binary.AppendUvarint(nil, uint64(len(c.Bytes()))), c.Bytes(), data)
}

func TestBlockSyncMaliciousResponder(t *testing.T) {
	good := []*merkledag.ProtoNode{bsNode(t, true, "g0"), bsNode(t, true, "g1"), bsNode(t, true, "g2")}
	bad := bsNode(t, true, "bad")
	badData := bytes.Repeat([]byte{'x'}, len(bad.RawData())) // same size, wrong content
	big := make([]byte, MaxBlockSize+1)
	bigCid, err := merkledag.V1CidPrefix().Sum(big)
	if err != nil {
		t.Fatal(err)
	}
	md5, err := mh.Encode(make([]byte, 16), mh.MD5)
	if err != nil {
		t.Fatal(err)
	}
	weak := cid.NewCidV1(cid.Raw, md5)
	heads := bsCids(good[2])
	size := func(n ...*merkledag.ProtoNode) uint64 { return uint64(bsSize(n...)) }

	cases := []struct {
		name      string
		serve     func(w io.Writer)
		violation bool
		notStored []cid.Cid
	}{
		{"block not matching its CID", func(w io.Writer) {
			bsHeaderFrame(w, 1, uint64(len(badData)), heads)
			bsBlockFrame(w, bad.Cid(), badData)
			_ = bsWriteFrame(w, bsFrameEnd)
		}, true, bsCids(bad)},
		{"more blocks than announced", func(w io.Writer) {
			bsHeaderFrame(w, 2, size(good...), heads)
			for _, g := range good {
				bsBlockFrame(w, g.Cid(), g.RawData())
			}
			_ = bsWriteFrame(w, bsFrameEnd)
		}, true, bsCids(good[2])},
		{"fewer blocks than announced", func(w io.Writer) {
			bsHeaderFrame(w, 3, size(good...), heads)
			bsBlockFrame(w, good[0].Cid(), good[0].RawData())
			_ = bsWriteFrame(w, bsFrameEnd)
		}, true, nil},
		{"more bytes than announced", func(w io.Writer) {
			bsHeaderFrame(w, 2, 10, heads)
			bsBlockFrame(w, good[0].Cid(), good[0].RawData())
			bsBlockFrame(w, good[1].Cid(), good[1].RawData())
			_ = bsWriteFrame(w, bsFrameEnd)
		}, true, nil},
		{"block too large", func(w io.Writer) {
			bsHeaderFrame(w, 2, uint64(len(big)), heads)
			bsBlockFrame(w, bigCid, big)
			_ = bsWriteFrame(w, bsFrameEnd)
		}, true, []cid.Cid{bigCid}},
		{"insecure hash", func(w io.Writer) {
			bsHeaderFrame(w, 1, 3, heads)
			bsBlockFrame(w, weak, []byte("abc"))
			_ = bsWriteFrame(w, bsFrameEnd)
		}, true, []cid.Cid{weak}},
		{"bad CID bytes", func(w io.Writer) {
			bsHeaderFrame(w, 1, 3, heads)
			_ = bsWriteFrame(w, bsFrameBlock, []byte{5, 1, 2, 3, 4, 5}, []byte("abc"))
		}, true, nil},
		{"huge frame", func(w io.Writer) {
			bsHeaderFrame(w, 1, 3, heads)
			_, _ = w.Write(binary.AppendUvarint(nil, 1<<40))
		}, true, nil},
		{"empty frame", func(w io.Writer) {
			bsHeaderFrame(w, 1, 3, heads)
			_, _ = w.Write([]byte{0})
		}, true, nil},
		{"unknown frame", func(w io.Writer) {
			bsHeaderFrame(w, 1, 3, heads)
			_ = bsWriteFrame(w, 0x7f, []byte("?"))
		}, true, nil},
		{"huge count", func(w io.Writer) {
			bsHeaderFrame(w, 1<<62, 1<<62, heads)
		}, true, nil},
		{"bad heads", func(w io.Writer) {
			_ = bsWriteFrame(w, bsFrameHeader, []byte{1, 1}, []byte("garbage"))
		}, true, nil},
		{"no end frame", func(w io.Writer) {
			bsHeaderFrame(w, 1, size(good[0]), heads)
			bsBlockFrame(w, good[0].Cid(), good[0].RawData())
		}, true, nil},
		{"data after end", func(w io.Writer) {
			bsHeaderFrame(w, 0, 0, heads)
			_ = bsWriteFrame(w, bsFrameEnd)
			_, _ = w.Write([]byte("more"))
		}, true, nil},
		{"header expected", func(w io.Writer) {
			bsBlockFrame(w, good[0].Cid(), good[0].RawData())
		}, true, bsCids(good[0])},
		{"nothing", func(w io.Writer) {}, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hA, hB := newTestHost(t), newTestHost(t)
			bsEvil(t, hA, tc.serve)
			bsB := newTestBlockstore()
			sB := newTestBlockSync(t, hB, bsB, nil, nil, bsTestConfig())
			connect(t, hB, hA)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := sB.Fetch(ctx, hA.ID(), nil, nil)
			if err == nil {
				t.Fatalf("fetch succeeded: %+v", res)
			}
			if tc.violation != errors.Is(err, ErrBlockSyncViolation) {
				t.Errorf("error %v: violation %v, want %v", err, errors.Is(err, ErrBlockSyncViolation), tc.violation)
			}
			t.Log(err)
			for _, c := range tc.notStored {
				if bsHas(t, bsB, c) {
					t.Errorf("%s was stored", c)
				}
			}
			if st := sB.Stats(); st.InProgress {
				t.Errorf("stats after failure: %+v", st)
			}
		})
	}
}

// A responder that stops sending: the per-frame deadline ends the fetch.
func TestBlockSyncIdleResponder(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	g := bsNode(t, true, "g")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	bsEvil(t, hA, func(w io.Writer) {
		bsHeaderFrame(w, 2, 2*uint64(len(g.RawData())), bsCids(g))
		bsBlockFrame(w, g.Cid(), g.RawData())
		_ = w.(*bufio.Writer).Flush()
		<-release
	})
	cfg := bsTestConfig()
	cfg.idle = 300 * time.Millisecond
	sB := newTestBlockSync(t, hB, newTestBlockstore(), nil, nil, cfg)
	connect(t, hB, hA)
	start := time.Now()
	_, err := sB.Fetch(context.Background(), hA.ID(), nil, nil)
	if err == nil {
		t.Fatal("fetch succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("fetch took %s", el)
	}
	t.Log(err)
}

// A requester sending junk, or giving up early: the responder logs, resets
// and keeps serving.
func TestBlockSyncMaliciousRequester(t *testing.T) {
	d := newBSTestDAG(t, true)
	hA, hB, hC := newTestHost(t), newTestHost(t), newTestHost(t)
	bsA := newTestBlockstore()
	bsPut(t, bsA, d.all()...)
	logs := &recordingHandler{}
	sA := newTestBlockSync(t, hA, bsA, d.heads(), slog.New(logs), bsTestConfig())
	connect(t, hC, hA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	unknown := mustEncode(t, testCids(t, "unknown", 1))
	junk := map[string]func(w io.Writer) error{
		"raw junk": func(w io.Writer) error {
			_, err := w.Write([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xffjunk"))
			return err
		},
		"bad heads": func(w io.Writer) error { return bsWriteFrame(w, bsFrameRequest, []byte("garbage")) },
		"too many heads": func(w io.Writer) error {
			return bsWriteFrame(w, bsFrameRequest, mustEncode(t, testCids(t, "many", MaxHeads+1)))
		},
		"wrong frame type": func(w io.Writer) error { return bsWriteFrame(w, bsFrameLocator, mustEncode(t, nil)) },
		"oversized frame": func(w io.Writer) error {
			return bsWriteFrame(w, bsFrameRequest, make([]byte, MaxHeadsPayload+1))
		},
		"huge length": func(w io.Writer) error { _, err := w.Write(binary.AppendUvarint(nil, 1<<60)); return err },
		"truncated":   func(w io.Writer) error { _, err := w.Write([]byte{100, 1, 2, 3}); return err },
		"nothing":     func(io.Writer) error { return nil },
		"bad locator": func(w io.Writer) error {
			if err := bsWriteFrame(w, bsFrameRequest, unknown); err != nil {
				return err
			}
			return bsWriteFrame(w, bsFrameLocator, []byte("garbage"))
		},
	}
	for name, write := range junk {
		str, err := hC.NewStream(ctx, hA.ID(), BlocksProtocol)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_ = str.SetDeadline(time.Now().Add(15 * time.Second))
		_ = write(str)
		_ = str.CloseWrite()
		reply, err := io.ReadAll(str)
		if err == nil && bytes.Contains(reply, []byte{bsFrameHeader}) && name != "bad locator" {
			t.Errorf("%s: responder replied %q", name, reply)
		}
		if err == nil {
			t.Errorf("%s: stream not reset", name)
		}
		_ = str.Reset()
	}
	// A requester that reads the header and goes away.
	str, err := hC.NewStream(ctx, hA.ID(), BlocksProtocol)
	if err != nil {
		t.Fatal(err)
	}
	_ = bsWriteFrame(str, bsFrameRequest, mustEncode(t, nil))
	r := bufio.NewReader(str)
	if typ, _, err := bsReadFrame(r, blockSyncMaxResponseFrame); err != nil || typ != bsFrameHeader {
		t.Fatalf("header: %#x, %v", typ, err)
	}
	_ = str.Reset()

	for _, msg := range []string{"block sync: dropping malformed request", "block sync: dropping malformed locator"} {
		if !logs.has(slog.LevelWarn, msg) {
			t.Errorf("no warning %q", msg)
		}
	}
	// Still serving.
	sB := newTestBlockSync(t, hB, newTestBlockstore(), nil, nil, bsTestConfig())
	connect(t, hB, hA)
	res, err := sB.Fetch(ctx, hA.ID(), nil, nil)
	if err != nil || res.Blocks != len(d.all()) {
		t.Fatalf("fetch after junk: %+v, %v", res, err)
	}
	waitFor(t, 5*time.Second, func() bool {
		sA.mu.Lock()
		defer sA.mu.Unlock()
		return sA.serving == 0
	})
}

// A second Fetch from the same peer while one runs joins it: one transfer,
// the same result for both.
func TestBlockSyncFetchJoins(t *testing.T) {
	d := newBSTestDAG(t, true)
	hA, hB := newTestHost(t), newTestHost(t)
	bsA := newTestBlockstore()
	bsPut(t, bsA, d.all()...)
	sA := newTestBlockSync(t, hA, bsA, d.heads(), nil, bsTestConfig())
	sB := newTestBlockSync(t, hB, newTestBlockstore(), nil, nil, bsTestConfig())
	connect(t, hB, hA)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	first := func(FetchProgress) {
		once.Do(func() {
			close(started)
			<-release
		})
	}
	var second bsProgress
	type out struct {
		res FetchResult
		err error
	}
	results := make(chan out, 2)
	go func() {
		res, err := sB.Fetch(ctx, hA.ID(), nil, first)
		results <- out{res, err}
	}()
	<-started
	st := sB.Stats()
	if !st.InProgress || st.Peer != hA.ID() || st.Current.Total != len(d.all()) || st.Current.Blocks != 0 {
		t.Errorf("stats during fetch: %+v", st)
	}
	go func() {
		res, err := sB.Fetch(ctx, hA.ID(), d.heads(), second.fn)
		results <- out{res, err}
	}()
	waitFor(t, 5*time.Second, func() bool {
		sB.mu.Lock()
		defer sB.mu.Unlock()
		c := sB.fetches[hA.ID()]
		return c != nil && c.waiters == 2
	})
	// A third caller that gives up does not cancel the fetch.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := sB.Fetch(cctx, hA.ID(), nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	close(release)
	r1, r2 := <-results, <-results
	if r1.err != nil || r2.err != nil {
		t.Fatal(r1.err, r2.err)
	}
	if r1.res.Blocks != len(d.all()) || r1.res.Blocks != r2.res.Blocks || r1.res.Duration != r2.res.Duration || !bsSameSet(r1.res.Heads, r2.res.Heads) {
		t.Errorf("results differ: %+v, %+v", r1.res, r2.res)
	}
	if n := sA.Stats().ServedBlocks; n != int64(len(d.all())) {
		t.Errorf("A served %d blocks, want one transfer of %d", n, len(d.all()))
	}
	second.mu.Lock()
	if len(second.got) == 0 {
		t.Error("the joining caller got no progress")
	}
	second.mu.Unlock()
	if st := sB.Stats(); st.InProgress {
		t.Errorf("stats after: %+v", st)
	}
}

// The responder serves at most maxServing requests at once; the others
// wait for a slot.
func TestBlockSyncServeLimit(t *testing.T) {
	d := newBSTestDAG(t, true)
	hA := newTestHost(t)
	bsA := newTestBlockstore()
	bsPut(t, bsA, d.all()...)
	cfg := bsTestConfig()
	cfg.maxServing = 2
	var calls atomic.Int32
	sA := newBlockSync(hA, bsA, func(ctx context.Context) ([]cid.Cid, error) {
		calls.Add(1)
		select { // slow, so that requests overlap
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
		}
		return d.heads(), nil
	}, testLogger(), cfg)
	t.Cleanup(func() { _ = sA.Close() })

	const n = 5
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		h := newTestHost(t)
		s := newTestBlockSync(t, h, newTestBlockstore(), nil, nil, bsTestConfig())
		connect(t, h, hA)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Fetch(context.Background(), hA.ID(), nil, nil)
			if err == nil && res.Blocks != len(d.all()) {
				err = fmt.Errorf("%d blocks", res.Blocks)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	sA.mu.Lock()
	peak := sA.peakServing
	sA.mu.Unlock()
	if peak != 2 || calls.Load() != n {
		t.Errorf("peak %d requests at once (want 2), %d served (want %d)", peak, calls.Load(), n)
	}
}

// Close cancels running fetches and serves, and waits for them.
func TestBlockSyncClose(t *testing.T) {
	hA, hB := newTestHost(t), newTestHost(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	bsEvil(t, hA, func(w io.Writer) { // a header, then nothing
		bsHeaderFrame(w, 1000, 1000, nil)
		_ = w.(*bufio.Writer).Flush()
		<-release
	})
	sB := newBlockSync(hB, newTestBlockstore(), fixedHeads(nil), testLogger(), defaultBlockSyncConfig())
	connect(t, hB, hA)
	errc := make(chan error, 1)
	go func() {
		_, err := sB.Fetch(context.Background(), hA.ID(), nil, nil)
		errc <- err
	}()
	waitFor(t, 10*time.Second, func() bool { return sB.Stats().Current.Total == 1000 })
	start := time.Now()
	if err := sB.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Error("fetch succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("close took %s", el)
	}
	if err := sB.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sB.Fetch(context.Background(), hA.ID(), nil, nil); err == nil {
		t.Error("fetch after close succeeded")
	}

	// Responder side: a serve blocked in the heads function.
	hC, hD := newTestHost(t), newTestHost(t)
	inHeads := make(chan struct{})
	sC := newBlockSync(hC, newTestBlockstore(), func(ctx context.Context) ([]cid.Cid, error) {
		close(inHeads)
		<-ctx.Done()
		return nil, ctx.Err()
	}, testLogger(), defaultBlockSyncConfig())
	sD := newTestBlockSync(t, hD, newTestBlockstore(), nil, nil, bsTestConfig())
	connect(t, hD, hC)
	go func() {
		_, err := sD.Fetch(context.Background(), hC.ID(), nil, nil)
		errc <- err
	}()
	<-inHeads
	start = time.Now()
	if err := sC.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Error("fetch from a closed responder succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("close took %s", el)
	}
	// A caller's cancellation ends the fetch when nobody else waits.
	hE := newTestHost(t)
	bsEvil(t, hE, func(w io.Writer) {
		bsHeaderFrame(w, 1000, 1000, nil)
		_ = w.(*bufio.Writer).Flush()
		<-release
	})
	connect(t, hD, hE)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := sD.Fetch(ctx, hE.ID(), nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("fetch: %v", err)
	}
	waitFor(t, 5*time.Second, func() bool { return !sD.Stats().InProgress })
}
