package datadir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
)

func TestOpenStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, StoreDir)); err != nil || !fi.IsDir() {
		t.Fatalf("no %s dir: %v", StoreDir, err)
	}
	if err := d.Put(ctx, ds.NewKey("/k"), []byte("v")); err != nil {
		t.Fatal(err)
	}

	// Badger locks its directory: a second open fails with ErrLocked, and
	// OpenStoreWait waits for it in vain, then gives up.
	if _, err := OpenStore(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	start := time.Now()
	if _, err := OpenStoreWait(ctx, dir, 200*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("wait on a held store: %v, want ErrLocked", err)
	}
	if time.Since(start) < 200*time.Millisecond {
		t.Error("OpenStoreWait gave up before its wait")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := OpenStoreWait(cctx, dir, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled context: %v", err)
	}

	// Released in time: the waiter gets the store.
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = d.Close()
	}()
	d2, err := OpenStoreWait(ctx, dir, 10*time.Second)
	if err != nil {
		t.Fatalf("wait for a store closed meanwhile: %v", err)
	}
	defer d2.Close()
	if v, err := d2.Get(ctx, ds.NewKey("/k")); err != nil || string(v) != "v" {
		t.Fatalf("reopened: %q, %v", v, err)
	}
}

func TestOpenStoreNotADir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(file); err == nil || errors.Is(err, ErrLocked) || !strings.HasPrefix(err.Error(), "open store") {
		t.Fatalf("store under a file: %v", err)
	}
}

func TestOpenMarker(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, OpenMarkerFile)
	unclean, err := MarkOpen(dir)
	if err != nil || unclean {
		t.Fatalf("first open: unclean %v, %v", unclean, err)
	}
	data, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("marker holds %q, %v; want the pid", data, err)
	}
	// Not closed: the next open is unclean.
	if unclean, err := MarkOpen(dir); err != nil || !unclean {
		t.Fatalf("open after no close: unclean %v, %v", unclean, err)
	}
	if err := MarkClosed(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker left after close: %v", err)
	}
	if err := MarkClosed(dir); err != nil {
		t.Fatalf("close without a marker: %v", err)
	}
	if unclean, err := MarkOpen(dir); err != nil || unclean {
		t.Fatalf("open after a clean close: unclean %v, %v", unclean, err)
	}
	if _, err := MarkOpen(filepath.Join(dir, "missing")); err == nil {
		t.Error("marker in a missing dir: no error")
	}
}
