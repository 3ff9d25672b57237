package blocksync

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
)

func TestFetchDAG(t *testing.T) {
	for _, delta := range []bool{true, false} {
		name, walk := "deltas", walkPriority
		if !delta {
			name, walk = "plain", walkClosure
		}
		t.Run(name, func(t *testing.T) {
			d := newTestDAG(t, delta)
			hA, hB := testnet.Host(t), testnet.Host(t)
			bsA, bsB := newTestBlockstore(), newTestBlockstore()
			putNodes(t, bsA, d.all()...)
			putNodes(t, bsB, d.chain[:500]...)
			putNodes(t, bsB, d.fork...)
			logsA := &testnet.LogRecorder{}
			sA := newTestSyncer(t, hA, bsA, d.heads(), slog.New(logsA), testConfig())
			sB := newTestSyncer(t, hB, bsB, nil, nil, testConfig())
			testnet.Connect(t, hB, hA)

			want := slices.Concat(d.chain[500:], d.merged)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var prog progressLog
			res, err := sB.Fetch(ctx, hA.ID(), cidsOf(d.chain[499], d.fork[49]), prog.fn)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("fetched %d blocks, %d bytes in %s", res.Blocks, res.Bytes, res.Duration)
			if res.Blocks != len(want) || res.Bytes != sizeOf(want...) {
				t.Errorf("fetched %d blocks, %d bytes; want %d, %d", res.Blocks, res.Bytes, len(want), sizeOf(want...))
			}
			if !sameSet(res.Heads, d.heads()) {
				t.Errorf("heads %v, want %v", res.Heads, d.heads())
			}
			if ka, kb := storedKeys(t, bsA), storedKeys(t, bsB); len(kb) != len(ka) || len(ka) != len(d.all()) {
				t.Errorf("B has %d blocks, A %d, DAG %d", len(kb), len(ka), len(d.all()))
			} else {
				for k := range ka {
					if _, ok := kb[k]; !ok {
						t.Fatal("B lacks a block of A")
					}
				}
			}
			prog.check(t, len(want), sizeOf(want...))
			if got := servedWalks(logsA); !slices.Equal(got, []string{walk}) {
				t.Errorf("walks %v, want [%s]", got, walk)
			}
			stA, stB := sA.Stats(), sB.Stats()
			if stB.FetchedBlocks != int64(len(want)) || stB.FetchedBytes != sizeOf(want...) || stB.InProgress {
				t.Errorf("B stats %+v", stB)
			}
			if stA.ServedBlocks != int64(len(want)) || stA.ServedBytes != sizeOf(want...) || stA.FetchedBlocks != 0 {
				t.Errorf("A stats %+v", stA)
			}

			// In sync now: nothing to send.
			res, err = sB.Fetch(ctx, hA.ID(), d.heads(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Blocks != 0 || res.Bytes != 0 || !sameSet(res.Heads, d.heads()) {
				t.Errorf("second fetch: %+v", res)
			}
			// Claiming only chain[1989]: what is not below it, chain[1990..1999]
			// and the 50 blocks of the fork (B already has them: no new keys).
			res, err = sB.Fetch(ctx, hA.ID(), cidsOf(d.chain[1989]), nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Blocks != 60 || len(storedKeys(t, bsB)) != len(d.all()) {
				t.Errorf("fetch above chain[1989]: %d blocks, want 60", res.Blocks)
			}
		})
	}
}

// A fresh requester gets everything; a responder without blocks sends none.
func TestFreshAndEmpty(t *testing.T) {
	d := newTestDAG(t, true)
	hA, hB, hC := testnet.Host(t), testnet.Host(t), testnet.Host(t)
	bsA, bsB := newTestBlockstore(), newTestBlockstore()
	putNodes(t, bsA, d.all()...)
	newTestSyncer(t, hA, bsA, d.heads(), nil, testConfig())
	sB := newTestSyncer(t, hB, bsB, nil, nil, testConfig())
	newTestSyncer(t, hC, newTestBlockstore(), nil, nil, testConfig())
	testnet.Connect(t, hB, hA)
	testnet.Connect(t, hB, hC)
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
	if res.Blocks != len(d.all()) || len(storedKeys(t, bsB)) != len(d.all()) {
		t.Fatalf("fresh fetch: %d blocks, B has %d, want %d", res.Blocks, len(storedKeys(t, bsB)), len(d.all()))
	}
	// Requester ahead: the responder lacks its heads, asks for a locator,
	// and sends nothing.
	extra := testNode(t, true, "extra", d.chain[1999], d.fork[49])
	putNodes(t, bsB, extra)
	res, err = sB.Fetch(ctx, hA.ID(), cidsOf(extra), nil)
	if err != nil || res.Blocks != 0 {
		t.Fatalf("requester ahead: %+v, %v", res, err)
	}
}

// A requester with blocks of its own (offline writes): the responder lacks
// its heads and asks for a locator, so it sends only about what is missing,
// not its whole DAG. Both directions.
func TestDiverged(t *testing.T) {
	for _, delta := range []bool{true, false} {
		t.Run(map[bool]string{true: "deltas", false: "plain"}[delta], func(t *testing.T) {
			d := newTestDAG(t, delta)
			var own []*merkledag.ProtoNode // B's offline writes on chain[499]
			for j := range 30 {
				p := d.chain[499]
				if j > 0 {
					p = own[j-1]
				}
				own = append(own, testNode(t, delta, fmt.Sprintf("b%d", j), p))
			}
			hA, hB := testnet.Host(t), testnet.Host(t)
			bsA, bsB := newTestBlockstore(), newTestBlockstore()
			putNodes(t, bsA, d.chain...)
			putNodes(t, bsB, d.chain[:500]...)
			putNodes(t, bsB, own...)
			sA := newTestSyncer(t, hA, bsA, cidsOf(d.chain[1999]), nil, testConfig())
			sB := newTestSyncer(t, hB, bsB, cidsOf(own[29]), nil, testConfig())
			testnet.Connect(t, hB, hA)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			res, err := sB.Fetch(ctx, hA.ID(), cidsOf(own[29]), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("B from A: %d blocks (1,500 missing)", res.Blocks)
			if res.Blocks < 1500 || res.Blocks > 1500+1500/8+1 {
				t.Errorf("B got %d blocks, want 1,500 (+ at most 1/8)", res.Blocks)
			}
			if n := len(storedKeys(t, bsB)); n != 2030 {
				t.Errorf("B has %d blocks, want 2,030", n)
			}

			res, err = sA.Fetch(ctx, hB.ID(), cidsOf(d.chain[1999]), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("A from B: %d blocks (30 missing)", res.Blocks)
			if res.Blocks < 30 || res.Blocks > 30+1500/8+1 {
				t.Errorf("A got %d blocks, want 30 (+ at most 1,500/8)", res.Blocks)
			}
			if n := len(storedKeys(t, bsA)); n != 2030 {
				t.Errorf("A has %d blocks, want 2,030", n)
			}
		})
	}
}

// A fork deeper than the locator's walk budget: the responder sends more
// than needed, never less.
func TestLocatorBudget(t *testing.T) {
	d := newTestDAG(t, true)
	var own []*merkledag.ProtoNode
	for j := range 30 {
		p := d.chain[499]
		if j > 0 {
			p = own[j-1]
		}
		own = append(own, testNode(t, true, fmt.Sprintf("b%d", j), p))
	}
	hA, hB := testnet.Host(t), testnet.Host(t)
	bsA, bsB := newTestBlockstore(), newTestBlockstore()
	putNodes(t, bsA, d.chain...)
	putNodes(t, bsB, d.chain[:500]...)
	putNodes(t, bsB, own...)
	newTestSyncer(t, hA, bsA, cidsOf(d.chain[1999]), nil, testConfig())
	cfg := testConfig()
	cfg.locatorBudget = 8
	sB := newTestSyncer(t, hB, bsB, nil, nil, cfg)
	testnet.Connect(t, hB, hA)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	loc, err := sB.locator(ctx, cidsOf(own[29]))
	if err != nil {
		t.Fatal(err)
	}
	if !sameSet(loc, cidsOf(own[28], own[27], own[26], own[25], own[24], own[23], own[22], own[21])) {
		t.Errorf("locator %v", loc)
	}
	res, err := sB.Fetch(ctx, hA.ID(), cidsOf(own[29]), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 2000 || len(storedKeys(t, bsB)) != 2030 {
		t.Errorf("fetched %d blocks (want all 2,000 of A), B has %d", res.Blocks, len(storedKeys(t, bsB)))
	}
}

// A second Fetch from the same peer while one runs joins it: one transfer,
// the same result for both.
func TestFetchJoins(t *testing.T) {
	d := newTestDAG(t, true)
	hA, hB := testnet.Host(t), testnet.Host(t)
	bsA := newTestBlockstore()
	putNodes(t, bsA, d.all()...)
	sA := newTestSyncer(t, hA, bsA, d.heads(), nil, testConfig())
	sB := newTestSyncer(t, hB, newTestBlockstore(), nil, nil, testConfig())
	testnet.Connect(t, hB, hA)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	first := func(Progress) {
		once.Do(func() {
			close(started)
			<-release
		})
	}
	var second progressLog
	type out struct {
		res Result
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
	testnet.WaitFor(t, 5*time.Second, func() bool {
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
	if r1.res.Blocks != len(d.all()) || r1.res.Blocks != r2.res.Blocks || r1.res.Duration != r2.res.Duration || !sameSet(r1.res.Heads, r2.res.Heads) {
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

// Close cancels running fetches and serves, and waits for them.
func TestClose(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	serveEvil(t, hA, func(w io.Writer) { // a header, then nothing
		headerFrame(w, 1000, 1000, nil)
		_ = w.(*bufio.Writer).Flush()
		<-release
	})
	sB := newSyncer(hB, newTestBlockstore(), fixedHeads(nil), testnet.Logger(), defaultConfig())
	testnet.Connect(t, hB, hA)
	errc := make(chan error, 1)
	go func() {
		_, err := sB.Fetch(context.Background(), hA.ID(), nil, nil)
		errc <- err
	}()
	testnet.WaitFor(t, 10*time.Second, func() bool { return sB.Stats().Current.Total == 1000 })
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
	hC, hD := testnet.Host(t), testnet.Host(t)
	inHeads := make(chan struct{})
	sC := newSyncer(hC, newTestBlockstore(), func(ctx context.Context) ([]cid.Cid, error) {
		close(inHeads)
		<-ctx.Done()
		return nil, ctx.Err()
	}, testnet.Logger(), defaultConfig())
	sD := newTestSyncer(t, hD, newTestBlockstore(), nil, nil, testConfig())
	testnet.Connect(t, hD, hC)
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
	hE := testnet.Host(t)
	serveEvil(t, hE, func(w io.Writer) {
		headerFrame(w, 1000, 1000, nil)
		_ = w.(*bufio.Writer).Flush()
		<-release
	})
	testnet.Connect(t, hD, hE)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := sD.Fetch(ctx, hE.ID(), nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("fetch: %v", err)
	}
	testnet.WaitFor(t, 5*time.Second, func() bool { return !sD.Stats().InProgress })
}
