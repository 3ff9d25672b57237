package datadir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
)

// waitFor bounds the conditions these tests wait on.
const waitFor = 20 * time.Second

// churn fills a store whose value-log files are 1 MiB with ~12 MB, mixed
// like a node's writes: small values (kept in the LSM tree, so dead in the
// value log as soon as badger flushed them) rewritten many times, and
// values of 72 KB (stored in the value log, like an import's blocks) under
// 10 keys, each written 4 times, then half of those keys deleted. It
// returns the values that must survive, by key.
func churn(t *testing.T, g *Guard) map[ds.Key][]byte {
	t.Helper()
	ctx := context.Background()
	live := map[ds.Key][]byte{}
	put := func(key ds.Key, v []byte) {
		if err := g.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
		live[key] = v
	}
	for round := range 4 {
		for k := range 10 {
			put(ds.NewKey(fmt.Sprintf("/k%d", k)), value(round*10+k))
			for i := range 200 {
				small := fmt.Sprintf("/small/%d", (k*200+i)%500)
				put(ds.NewKey(small), bytes.Repeat([]byte(fmt.Sprintf("%d.%d.%d|", round, k, i)), 100))
			}
		}
	}
	for k := 5; k < 10; k++ {
		key := ds.NewKey(fmt.Sprintf("/k%d", k))
		if err := g.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		delete(live, key)
	}
	if err := g.Sync(ctx, ds.NewKey("/")); err != nil {
		t.Fatal(err)
	}
	return live
}

func openSmallLogStore(t *testing.T) (*Guard, string) {
	t.Helper()
	dir := t.TempDir()
	d, err := OpenStoreWith(dir, StoreOptions{ValueLogFileSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return NewGuard(d, slog.New(slog.NewTextHandler(io.Discard, nil))), dir
}

func checkValues(t *testing.T, g *Guard, live map[ds.Key][]byte) {
	t.Helper()
	ctx := context.Background()
	for k, want := range live {
		got, err := g.Get(ctx, k)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after GC: %d bytes, %v; want its last value", k, len(got), err)
		}
	}
	for k := 5; k < 10; k++ {
		if _, err := g.Get(ctx, ds.NewKey(fmt.Sprintf("/k%d", k))); !errors.Is(err, ds.ErrNotFound) {
			t.Errorf("deleted /k%d after GC: %v", k, err)
		}
	}
}

// TestGCShrinksValueLog: after values are overwritten and deleted, the
// running GC (once writes stop) deletes value-log files: the log on disk
// gets smaller, and every live value still reads back.
func TestGCShrinksValueLog(t *testing.T) {
	g, dir := openSmallLogStore(t)
	live := churn(t, g)
	files, size, err := valueLogSize(filepath.Join(dir, StoreDir))
	if err != nil {
		t.Fatal(err)
	}
	if files < 8 {
		t.Fatalf("%d value-log files (%d bytes) after ~12 MB written: want several 1 MiB files", files, size)
	}

	c := StartGC(g, dir, GCOptions{Idle: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer c.Close()
	deadline := time.Now().Add(waitFor)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		f, s, err := valueLogSize(filepath.Join(dir, StoreDir))
		if err != nil {
			t.Fatal(err)
		}
		// Live in the log: 5 values of 72 KB; the files ahead of badger's
		// head (not yet flushed to the LSM tree) are out of GC's reach.
		if f <= files/2 && s <= size/2 {
			t.Logf("value log: %d files, %d bytes -> %d files, %d bytes", files, size, f, s)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("value log still %d files, %d bytes after %s (was %d files, %d bytes)", f, s, waitFor, files, size)
		}
		<-poll.C
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkValues(t, g, live)
}

// TestGCCollect: a run reports the files it rewrote and the bytes it
// freed; a run with nothing left to rewrite (badger.ErrNoRewrite) is no
// error; a closed GC refuses to run.
func TestGCCollect(t *testing.T) {
	ctx := context.Background()
	g, dir := openSmallLogStore(t)
	// A long Idle and Interval: only Collect runs.
	c := StartGC(g, dir, GCOptions{Idle: time.Hour, Interval: time.Hour})
	defer c.Close()
	if r, err := c.Collect(ctx); err != nil || r.Rounds != 0 {
		t.Fatalf("GC of an empty store: %+v, %v; want no rounds, no error", r, err)
	}
	live := churn(t, g)
	r, err := c.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rounds == 0 || r.FilesAfter >= r.FilesBefore || r.Freed() <= 0 {
		t.Fatalf("GC after churn: %+v; want files rewritten and bytes freed", r)
	}
	checkValues(t, g, live)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Collect(ctx); err == nil {
		t.Error("Collect after Close: no error")
	}
}

// TestGCNeedsRoom: below the disk reserve GC rewrites nothing (a rewrite
// could fail part-way on a full disk).
func TestGCNeedsRoom(t *testing.T) {
	ctx := context.Background()
	g, dir := openSmallLogStore(t)
	full := errors.New("disk almost full")
	asked := 0
	c := StartGC(g, dir, GCOptions{Idle: time.Hour, Interval: time.Hour, Room: func(context.Context) error {
		asked++
		return full
	}})
	defer c.Close()
	live := churn(t, g)
	r, err := c.Collect(ctx)
	if err != nil || !r.NoRoom || r.Rounds != 0 || asked == 0 {
		t.Fatalf("GC without room: %+v, %v (room asked %d times); want it skipped", r, err, asked)
	}
	if r.FilesAfter != r.FilesBefore || r.After != r.Before {
		t.Fatalf("GC without room changed the value log: %+v", r)
	}
	checkValues(t, g, live)
}
