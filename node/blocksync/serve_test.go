package blocksync

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/heads"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func TestMaliciousResponder(t *testing.T) {
	good := []*merkledag.ProtoNode{testNode(t, true, "g0"), testNode(t, true, "g1"), testNode(t, true, "g2")}
	bad := testNode(t, true, "bad")
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
	heads := cidsOf(good[2])
	size := func(n ...*merkledag.ProtoNode) uint64 { return uint64(sizeOf(n...)) }

	cases := []struct {
		name      string
		serve     func(w io.Writer)
		violation bool
		notStored []cid.Cid
	}{
		{"block not matching its CID", func(w io.Writer) {
			headerFrame(w, 1, uint64(len(badData)), heads)
			blockFrame(w, bad.Cid(), badData)
			_ = writeFrame(w, frameEnd)
		}, true, cidsOf(bad)},
		{"more blocks than announced", func(w io.Writer) {
			headerFrame(w, 2, size(good...), heads)
			for _, g := range good {
				blockFrame(w, g.Cid(), g.RawData())
			}
			_ = writeFrame(w, frameEnd)
		}, true, cidsOf(good[2])},
		{"fewer blocks than announced", func(w io.Writer) {
			headerFrame(w, 3, size(good...), heads)
			blockFrame(w, good[0].Cid(), good[0].RawData())
			_ = writeFrame(w, frameEnd)
		}, true, nil},
		{"more bytes than announced", func(w io.Writer) {
			headerFrame(w, 2, 10, heads)
			blockFrame(w, good[0].Cid(), good[0].RawData())
			blockFrame(w, good[1].Cid(), good[1].RawData())
			_ = writeFrame(w, frameEnd)
		}, true, nil},
		{"block too large", func(w io.Writer) {
			headerFrame(w, 2, uint64(len(big)), heads)
			blockFrame(w, bigCid, big)
			_ = writeFrame(w, frameEnd)
		}, true, []cid.Cid{bigCid}},
		{"insecure hash", func(w io.Writer) {
			headerFrame(w, 1, 3, heads)
			blockFrame(w, weak, []byte("abc"))
			_ = writeFrame(w, frameEnd)
		}, true, []cid.Cid{weak}},
		{"bad CID bytes", func(w io.Writer) {
			headerFrame(w, 1, 3, heads)
			_ = writeFrame(w, frameBlock, []byte{5, 1, 2, 3, 4, 5}, []byte("abc"))
		}, true, nil},
		{"huge frame", func(w io.Writer) {
			headerFrame(w, 1, 3, heads)
			_, _ = w.Write(binary.AppendUvarint(nil, 1<<40))
		}, true, nil},
		{"empty frame", func(w io.Writer) {
			headerFrame(w, 1, 3, heads)
			_, _ = w.Write([]byte{0})
		}, true, nil},
		{"unknown frame", func(w io.Writer) {
			headerFrame(w, 1, 3, heads)
			_ = writeFrame(w, 0x7f, []byte("?"))
		}, true, nil},
		{"huge count", func(w io.Writer) {
			headerFrame(w, 1<<62, 1<<62, heads)
		}, true, nil},
		{"bad heads", func(w io.Writer) {
			_ = writeFrame(w, frameHeader, []byte{1, 1}, []byte("garbage"))
		}, true, nil},
		{"no end frame", func(w io.Writer) {
			headerFrame(w, 1, size(good[0]), heads)
			blockFrame(w, good[0].Cid(), good[0].RawData())
		}, true, nil},
		{"data after end", func(w io.Writer) {
			headerFrame(w, 0, 0, heads)
			_ = writeFrame(w, frameEnd)
			_, _ = w.Write([]byte("more"))
		}, true, nil},
		{"header expected", func(w io.Writer) {
			blockFrame(w, good[0].Cid(), good[0].RawData())
		}, true, cidsOf(good[0])},
		{"nothing", func(w io.Writer) {}, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hA, hB := testnet.Host(t), testnet.Host(t)
			serveEvil(t, hA, tc.serve)
			bsB := newTestBlockstore()
			sB := newTestSyncer(t, hB, bsB, nil, nil, testConfig())
			testnet.Connect(t, hB, hA)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := sB.Fetch(ctx, hA.ID(), nil, nil)
			if err == nil {
				t.Fatalf("fetch succeeded: %+v", res)
			}
			if tc.violation != errors.Is(err, ErrViolation) {
				t.Errorf("error %v: violation %v, want %v", err, errors.Is(err, ErrViolation), tc.violation)
			}
			t.Log(err)
			for _, c := range tc.notStored {
				if stored(t, bsB, c) {
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
func TestIdleResponder(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	g := testNode(t, true, "g")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	serveEvil(t, hA, func(w io.Writer) {
		headerFrame(w, 2, 2*uint64(len(g.RawData())), cidsOf(g))
		blockFrame(w, g.Cid(), g.RawData())
		_ = w.(*bufio.Writer).Flush()
		<-release
	})
	cfg := testConfig()
	cfg.idle = 300 * time.Millisecond
	sB := newTestSyncer(t, hB, newTestBlockstore(), nil, nil, cfg)
	testnet.Connect(t, hB, hA)
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
func TestMaliciousRequester(t *testing.T) {
	d := newTestDAG(t, true)
	hA, hB, hC := testnet.Host(t), testnet.Host(t), testnet.Host(t)
	bsA := newTestBlockstore()
	putNodes(t, bsA, d.all()...)
	logs := &testnet.LogRecorder{}
	sA := newTestSyncer(t, hA, bsA, d.heads(), slog.New(logs), testConfig())
	testnet.Connect(t, hC, hA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	unknown := mustEncode(t, testnet.CIDs(t, "unknown", 1))
	junk := map[string]func(w io.Writer) error{
		"raw junk": func(w io.Writer) error {
			_, err := w.Write([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xffjunk"))
			return err
		},
		"bad heads": func(w io.Writer) error { return writeFrame(w, frameRequest, []byte("garbage")) },
		"too many heads": func(w io.Writer) error {
			return writeFrame(w, frameRequest, mustEncode(t, testnet.CIDs(t, "many", heads.MaxHeads+1)))
		},
		"wrong frame type": func(w io.Writer) error { return writeFrame(w, frameLocator, mustEncode(t, nil)) },
		"oversized frame": func(w io.Writer) error {
			return writeFrame(w, frameRequest, make([]byte, heads.MaxPayload+1))
		},
		"huge length": func(w io.Writer) error { _, err := w.Write(binary.AppendUvarint(nil, 1<<60)); return err },
		"truncated":   func(w io.Writer) error { _, err := w.Write([]byte{100, 1, 2, 3}); return err },
		"nothing":     func(io.Writer) error { return nil },
		"bad locator": func(w io.Writer) error {
			if err := writeFrame(w, frameRequest, unknown); err != nil {
				return err
			}
			return writeFrame(w, frameLocator, []byte("garbage"))
		},
	}
	for name, write := range junk {
		str, err := hC.NewStream(ctx, hA.ID(), Protocol)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_ = str.SetDeadline(time.Now().Add(15 * time.Second))
		_ = write(str)
		_ = str.CloseWrite()
		reply, err := io.ReadAll(str)
		if err == nil && bytes.Contains(reply, []byte{frameHeader}) && name != "bad locator" {
			t.Errorf("%s: responder replied %q", name, reply)
		}
		if err == nil {
			t.Errorf("%s: stream not reset", name)
		}
		_ = str.Reset()
	}
	// A requester that reads the header and goes away.
	str, err := hC.NewStream(ctx, hA.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	_ = writeFrame(str, frameRequest, mustEncode(t, nil))
	r := bufio.NewReader(str)
	if typ, _, err := readFrame(r, maxResponseFrame); err != nil || typ != frameHeader {
		t.Fatalf("header: %#x, %v", typ, err)
	}
	_ = str.Reset()

	for _, msg := range []string{"block sync: dropping malformed request", "block sync: dropping malformed locator"} {
		if !logs.Has(slog.LevelWarn, msg) {
			t.Errorf("no warning %q", msg)
		}
	}
	// Still serving.
	sB := newTestSyncer(t, hB, newTestBlockstore(), nil, nil, testConfig())
	testnet.Connect(t, hB, hA)
	res, err := sB.Fetch(ctx, hA.ID(), nil, nil)
	if err != nil || res.Blocks != len(d.all()) {
		t.Fatalf("fetch after junk: %+v, %v", res, err)
	}
	testnet.WaitFor(t, 5*time.Second, func() bool {
		sA.mu.Lock()
		defer sA.mu.Unlock()
		return sA.serving == 0
	})
}

// The responder serves at most maxServing requests at once; the others
// wait for a slot.
func TestServeLimit(t *testing.T) {
	d := newTestDAG(t, true)
	hA := testnet.Host(t)
	bsA := newTestBlockstore()
	putNodes(t, bsA, d.all()...)
	cfg := testConfig()
	cfg.maxServing = 2
	var calls atomic.Int32
	sA := newSyncer(hA, bsA, func(ctx context.Context) ([]cid.Cid, error) {
		calls.Add(1)
		select { // slow, so that requests overlap
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
		}
		return d.heads(), nil
	}, testnet.Logger(), cfg)
	t.Cleanup(func() { _ = sA.Close() })

	const n = 5
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		h := testnet.Host(t)
		s := newTestSyncer(t, h, newTestBlockstore(), nil, nil, testConfig())
		testnet.Connect(t, h, hA)
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
