package blocksync

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/heads"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/ipfs/go-ds-crdt/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/proto"
)

// The test environment: hosts, blockstores, logs.

func newTestBlockstore() blockstore.Blockstore {
	return blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
}

func fixedHeads(heads []cid.Cid) HeadsFunc {
	return func(context.Context) ([]cid.Cid, error) { return heads, nil }
}

func mustEncode(t testing.TB, cids []cid.Cid) []byte {
	t.Helper()
	data, err := heads.Encode(cids)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Blocks, DAGs and syncers.

// testConfig is the default config with short waits.
func testConfig() config {
	cfg := defaultConfig()
	cfg.idle = 5 * time.Second
	cfg.prepare = 10 * time.Second
	cfg.slotWait = 5 * time.Second
	return cfg
}

func newTestSyncer(t testing.TB, h host.Host, bs blockstore.Blockstore, heads []cid.Cid, log *slog.Logger, cfg config) *Syncer {
	t.Helper()
	if log == nil {
		log = testnet.Logger()
	}
	s := newSyncer(h, bs, fixedHeads(heads), log, cfg)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// testNode makes a go-ds-crdt-shaped block linking to parents: dag-pb, CIDv1,
// whose data is a pb.Delta with priority 1 + the parents' highest (delta),
// or plain bytes that are not a delta.
func testNode(t testing.TB, delta bool, tag string, parents ...*merkledag.ProtoNode) *merkledag.ProtoNode {
	t.Helper()
	var data []byte
	if delta {
		prio := uint64(1)
		for _, p := range parents {
			prio = max(prio, crdt.ReadBlock(p.Cid(), p.RawData()).Priority+1)
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

func putNodes(t testing.TB, bs blockstore.Blockstore, nodes ...*merkledag.ProtoNode) {
	t.Helper()
	blks := make([]blocks.Block, len(nodes))
	for i, n := range nodes {
		blks[i] = n
	}
	if err := bs.PutMany(context.Background(), blks); err != nil {
		t.Fatal(err)
	}
}

// storedKeys returns the multihashes in bs.
func storedKeys(t testing.TB, bs blockstore.Blockstore) map[string]struct{} {
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

func stored(t testing.TB, bs blockstore.Blockstore, c cid.Cid) bool {
	t.Helper()
	ok, err := bs.Has(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func sameSet(a, b []cid.Cid) bool {
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

func cidsOf(nodes ...*merkledag.ProtoNode) []cid.Cid {
	out := make([]cid.Cid, len(nodes))
	for i, n := range nodes {
		out[i] = n.Cid()
	}
	return out
}

func sizeOf(nodes ...*merkledag.ProtoNode) int64 {
	var n int64
	for _, nd := range nodes {
		n += int64(len(nd.RawData()))
	}
	return n
}

// testDAG is a chain of 2,000 blocks, a branch of 50 blocks from
// chain[299] left as a second head, and a branch of 20 blocks from
// chain[1199] merged back by chain[1500].
type testDAG struct {
	chain, fork, merged []*merkledag.ProtoNode
}

func newTestDAG(t testing.TB, delta bool) *testDAG {
	d := &testDAG{}
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
				d.merged = append(d.merged, testNode(t, delta, fmt.Sprintf("m%d", j), p))
			}
		}
		if i == 1500 {
			parents = append(parents, d.merged[19])
		}
		d.chain = append(d.chain, testNode(t, delta, fmt.Sprintf("c%d", i), parents...))
		if i == 299 {
			for j := range 50 {
				p := d.chain[299]
				if j > 0 {
					p = d.fork[j-1]
				}
				d.fork = append(d.fork, testNode(t, delta, fmt.Sprintf("f%d", j), p))
			}
		}
	}
	return d
}

func (d *testDAG) all() []*merkledag.ProtoNode {
	return slices.Concat(d.chain, d.fork, d.merged)
}

func (d *testDAG) heads() []cid.Cid { return cidsOf(d.chain[1999], d.fork[49]) }

// progressLog records progress callbacks.
type progressLog struct {
	mu  sync.Mutex
	got []Progress
}

func (p *progressLog) fn(pr Progress) {
	p.mu.Lock()
	p.got = append(p.got, pr)
	p.mu.Unlock()
}

func (p *progressLog) check(t testing.TB, blocks int, bytes int64) {
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

// servedWalks returns the walk methods logged by a responder.
func servedWalks(h *testnet.LogRecorder) []string {
	var out []string
	for _, r := range h.Records() {
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

// serveEvil makes h answer Protocol with serve, after reading the
// request frame.
func serveEvil(t testing.TB, h host.Host, serve func(w io.Writer)) {
	h.SetStreamHandler(Protocol, func(str network.Stream) {
		_ = str.SetDeadline(time.Now().Add(20 * time.Second))
		if _, _, err := readFrame(bufio.NewReader(str), maxRequestFrame); err != nil {
			_ = str.Reset()
			return
		}
		w := bufio.NewWriter(str)
		serve(w)
		_ = w.Flush()
		_ = str.Close()
	})
}

func headerFrame(w io.Writer, n, size uint64, cids []cid.Cid) {
	payload, _ := heads.Encode(cids)
	_ = writeFrame(w, frameHeader, binary.AppendUvarint(binary.AppendUvarint(nil, n), size), payload)
}

func blockFrame(w io.Writer, c cid.Cid, data []byte) {
	_ = writeFrame(w, frameBlock, binary.AppendUvarint(nil, uint64(len(c.Bytes()))), c.Bytes(), data)
}
