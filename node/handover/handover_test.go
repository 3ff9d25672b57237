package handover

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/internal/testnet"
)

// recorder is a Receiver that keeps what it is given.
type recorder struct {
	mu       sync.Mutex
	refuse   error
	merge    error // what Merge answers
	blocks   map[string][]byte
	heads    []byte
	channel  string
	merged   bool
	received []string // the blocks Merge was told of
}

func (r *recorder) Accept(_ context.Context, _ peer.ID, channel string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.channel = channel
	return r.refuse
}

func (r *recorder) Put(_ context.Context, _ string, blk blocks.Block) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.blocks == nil {
		r.blocks = map[string][]byte{}
	}
	r.blocks[blk.Cid().String()] = blk.RawData()
	return nil
}

func (r *recorder) Merge(_ context.Context, _ peer.ID, _ string, heads []byte, received []cid.Cid) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.merge != nil {
		return r.merge
	}
	r.heads, r.merged = heads, true
	for _, c := range received {
		r.received = append(r.received, c.String())
	}
	return nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestHandOverDeliversBlocksThenHeads(t *testing.T) {
	ctx := context.Background()
	office, laptop := testnet.Host(t), testnet.Host(t)
	rec := &recorder{}
	srv := NewServer(office, rec, quiet())
	defer srv.Close()
	testnet.Connect(t, laptop, office)
	var blks []blocks.Block
	for _, s := range []string{"one", "two", "three"} {
		blks = append(blks, blocks.NewBlock([]byte(s)))
	}
	n, err := Send(ctx, laptop, office.ID(), "east", blks, []byte("heads payload"))
	if err != nil || n != 3 {
		t.Fatalf("hand-over: %d, %v", n, err)
	}
	if rec.channel != "east" || !rec.merged || string(rec.heads) != "heads payload" || len(rec.blocks) != 3 {
		t.Errorf("office got channel %q, merged %v, heads %q, %d blocks", rec.channel, rec.merged, rec.heads, len(rec.blocks))
	}
	// Merge waits for every block received, not only the heads'.
	if len(rec.received) != len(rec.blocks) {
		t.Errorf("Merge told of %d blocks, %d received", len(rec.received), len(rec.blocks))
	}
	for _, c := range rec.received {
		if _, ok := rec.blocks[c]; !ok {
			t.Errorf("Merge told of block %s, not received", c)
		}
	}
	for _, b := range blks {
		if !bytes.Equal(rec.blocks[b.Cid().String()], b.RawData()) {
			t.Errorf("block %s not stored as sent", b.Cid())
		}
	}
	// Refused by the office: the laptop is told why, nothing merged.
	rec2 := &recorder{refuse: errors.New("not a member")}
	srv.Close()
	srv2 := NewServer(office, rec2, quiet())
	defer srv2.Close()
	if _, err := Send(ctx, laptop, office.ID(), "east", blks, []byte("h")); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Errorf("a refused hand-over: %v", err)
	}
	if rec2.merged || len(rec2.blocks) > 0 {
		t.Error("a refused hand-over stored or merged something")
	}
	// Blocks missing below the heads: the laptop is told to send them all.
	rec3 := &recorder{merge: ErrWantAll}
	srv2.Close()
	srv3 := NewServer(office, rec3, quiet())
	defer srv3.Close()
	if _, err := Send(ctx, laptop, office.ID(), "east", blks[:1], []byte("h")); !errors.Is(err, ErrWantAll) {
		t.Errorf("an office missing blocks: %v, want ErrWantAll", err)
	}
	rec3.merge = errors.New("disk full")
	if _, err := Send(ctx, laptop, office.ID(), "east", blks, []byte("h")); err == nil || errors.Is(err, ErrWantAll) || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("a failed merge: %v", err)
	}
}

// frame builds one frame as the protocol writes it.
func frame(typ byte, body []byte) []byte {
	var b bytes.Buffer
	_ = writeFrame(&b, typ, body)
	return b.Bytes()
}

func blockFrame(cidBytes, data []byte) []byte {
	body := binary.AppendUvarint(nil, uint64(len(cidBytes)))
	return frame(frameBlock, append(append(body, cidBytes...), data...))
}

func TestHandOverRefusesBadInput(t *testing.T) {
	good := blocks.NewBlock([]byte("good"))
	cases := map[string][]byte{
		"no channel first":  frame(frameBlock, nil),
		"bad channel name":  frame(frameChannel, []byte("West Coast")),
		"block of bad hash": append(frame(frameChannel, []byte("east")), blockFrame(good.Cid().Bytes(), []byte("not good"))...),
		"garbage cid":       append(frame(frameChannel, []byte("east")), blockFrame([]byte{1, 2, 3}, []byte("x"))...),
		"heads, no end":     append(frame(frameChannel, []byte("east")), frame(frameHeads, []byte("h"))...),
		"huge frame":        append(frame(frameChannel, []byte("east")), append([]byte{frameBlock}, binary.AppendUvarint(nil, 1<<40)...)...),
		"unknown frame":     append(frame(frameChannel, []byte("east")), frame('Z', nil)...),
		"truncated":         frame(frameChannel, []byte("east"))[:3],
	}
	for name, in := range cases {
		rec := &recorder{}
		s := &Server{recv: rec, log: quiet()}
		if _, err := s.receive(context.Background(), "", bufio.NewReader(bytes.NewReader(in))); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if rec.merged {
			t.Errorf("%s: merged", name)
		}
	}
}

func FuzzHandOverFrames(f *testing.F) {
	good := blocks.NewBlock([]byte("good"))
	ok := append(frame(frameChannel, []byte("east")), blockFrame(good.Cid().Bytes(), good.RawData())...)
	ok = append(ok, frame(frameHeads, []byte("h"))...)
	ok = append(ok, frame(frameEnd, nil)...)
	f.Add(ok)
	f.Add(frame(frameChannel, []byte("east")))
	f.Fuzz(func(t *testing.T, in []byte) {
		rec := &recorder{}
		s := &Server{recv: rec, log: quiet()}
		n, err := s.receive(context.Background(), "", bufio.NewReader(bytes.NewReader(in)))
		if err == nil && !rec.merged {
			t.Fatal("accepted without merging")
		}
		if n != len(rec.blocks) && err == nil {
			t.Fatalf("counted %d blocks, stored %d", n, len(rec.blocks))
		}
		for c, data := range rec.blocks {
			id, err := cid.Decode(c)
			if err != nil {
				t.Fatalf("stored a block under %q: %v", c, err)
			}
			if sum, err := id.Prefix().Sum(data); err != nil || !sum.Equals(id) {
				t.Fatalf("stored block %s whose data hashes elsewhere", c)
			}
		}
	})
}
