package blocksync

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

// randomDAG builds a random go-ds-crdt-shaped DAG: each block links to 0
// to 3 recent blocks.
func randomDAG(t testing.TB, rng *rand.Rand, n int, delta bool) []*merkledag.ProtoNode {
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
		nodes = append(nodes, testNode(t, delta, fmt.Sprintf("r%d-%d", i, rng.Int()), parents...))
	}
	return nodes
}

// reach returns the blocks reachable from roots among nodes.
func reach(nodes []*merkledag.ProtoNode, roots []cid.Cid) map[string]bool {
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
func TestPlan(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		delta := seed%4 != 3
		nodes := randomDAG(t, rng, 50+rng.IntN(300), delta)
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
		putNodes(t, bs, stored...)
		pick := func(k int) []cid.Cid {
			var out []cid.Cid
			for range k {
				out = append(out, nodes[rng.IntN(len(nodes))].Cid())
			}
			return out
		}
		ours := append(pick(1+rng.IntN(3)), nodes[len(nodes)-1].Cid())
		theirs := pick(rng.IntN(6))
		theirs = append(theirs, testnet.CIDs(t, "unknown", 2)...)

		want := map[string]bool{}
		have := reach(stored, theirs)
		for k := range reach(stored, ours) {
			if !have[k] {
				want[k] = true
			}
		}
		check := func(name string, plan blockPlan) {
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
		plan, err := planByClosure(ctx, bs, ours, theirs)
		if err != nil {
			t.Fatal(err)
		}
		check("closure", plan)
		plan, err = planByPriority(ctx, bs, ours, theirs)
		if delta != (err == nil) {
			t.Fatalf("seed %d: priority walk on delta=%v: %v", seed, delta, err)
		}
		if delta {
			check("priority", plan)
		}
		plan, method, err := planBlocks(ctx, bs, ours, theirs)
		if err != nil {
			t.Fatal(err)
		}
		check(method, plan)
		if (method == walkPriority) != delta {
			t.Errorf("seed %d: walk %s on delta=%v", seed, method, delta)
		}
	}
}

// Priorities that are not above the children's make the responder fall
// back to the closure walk.
func TestPlanBadPriorities(t *testing.T) {
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
	putNodes(t, bs, a, b, c)
	if _, err := planByPriority(ctx, bs, cidsOf(c), nil); !errors.Is(err, errNoPriorities) {
		t.Fatalf("priority walk: %v", err)
	}
	plan, method, err := planBlocks(ctx, bs, cidsOf(c), nil)
	if err != nil || method != walkClosure || len(plan.refs) != 3 {
		t.Fatalf("plan %+v, %s, %v", plan, method, err)
	}
	// The walk checks only the links it follows: it stops above b here.
	plan, method, err = planBlocks(ctx, bs, cidsOf(c), cidsOf(b))
	if err != nil || method != walkPriority || len(plan.refs) != 1 || !plan.refs[0].c.Equals(c.Cid()) {
		t.Fatalf("plan %+v, %s, %v", plan, method, err)
	}
}

// loadBlock reads links and priorities through crdt.ReadBlock as the walks
// expect: a delta's priority, 0 for data that is not a delta, no links for
// blocks of other codecs or dag-pb blocks that do not decode.
func TestLoadBlock(t *testing.T) {
	ctx := context.Background()
	bs := newTestBlockstore()
	child := testNode(t, true, "child")
	put := func(c cid.Cid, raw []byte) {
		t.Helper()
		blk, err := blocks.NewBlockWithCid(raw, c)
		if err != nil {
			t.Fatal(err)
		}
		if err := bs.Put(ctx, blk); err != nil {
			t.Fatal(err)
		}
	}
	withData := func(data []byte) *merkledag.ProtoNode {
		t.Helper()
		nd := merkledag.NodeWithData(data)
		if err := nd.SetCidBuilder(merkledag.V1CidPrefix()); err != nil {
			t.Fatal(err)
		}
		if err := nd.AddNodeLink("", child); err != nil {
			t.Fatal(err)
		}
		put(nd.Cid(), nd.RawData())
		return nd
	}
	check := func(name string, c cid.Cid, links int, prio uint64) {
		t.Helper()
		b, found, err := loadBlock(ctx, bs, c)
		if err != nil || !found {
			t.Fatalf("%s: found %v, %v", name, found, err)
		}
		blk, _ := bs.Get(ctx, c)
		if len(b.Links) != links || b.Priority != prio || b.size != len(blk.RawData()) {
			t.Errorf("%s: %d links, priority %d, size %d; want %d, %d, %d", name, len(b.Links), b.Priority, b.size, links, prio, len(blk.RawData()))
		}
	}

	data, _ := proto.Marshal(&pb.Delta{
		Elements:   []*pb.Element{{Key: "k", Id: "i", Value: []byte("v")}},
		Tombstones: []*pb.Element{{Key: "k2", Id: "i2"}},
		Priority:   42,
	})
	nd := withData(data)
	check("delta", nd.Cid(), 1, 42)
	if b, _, _ := loadBlock(ctx, bs, nd.Cid()); !b.Links[0].Equals(child.Cid()) {
		t.Errorf("link %s, want %s", b.Links[0], child.Cid())
	}
	for _, d := range [][]byte{nil, []byte("plain"), {0x18}, {0xff, 0xff}, append(slices.Clip(data), 0x20, 1)} {
		check(fmt.Sprintf("data %x", d), withData(d).Cid(), 1, 0)
	}

	// A raw block holding dag-pb bytes: neither links nor priority.
	rawCid, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(nd.RawData())
	if err != nil {
		t.Fatal(err)
	}
	put(rawCid, nd.RawData())
	check("raw codec", rawCid, 0, 0)

	// A dag-pb CID over bytes that do not decode.
	junk := []byte{0xff, 0xff, 0xff, 0x01}
	junkCid, err := merkledag.V1CidPrefix().Sum(junk)
	if err != nil {
		t.Fatal(err)
	}
	put(junkCid, junk)
	check("undecodable", junkCid, 0, 0)

	if _, found, err := loadBlock(ctx, bs, testnet.CIDs(t, "absent", 1)[0]); found || err != nil {
		t.Errorf("absent block: found %v, %v", found, err)
	}
}
