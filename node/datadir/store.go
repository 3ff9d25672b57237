package datadir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	badger "github.com/ipfs/go-ds-badger"
)

// StoreDir is the embedded store (badger) inside the data dir.
const StoreDir = "store"

// ErrLocked means another process (a running node) holds the store.
var ErrLocked = errors.New("store is in use by another process")

// OpenStore opens the embedded store of a data dir: go-ds-badger, behind
// the go-datastore interface so that another engine is a one-line change.
// It returns an error wrapping ErrLocked when another process has it open.
//
// Badger's per-write fsync is turned off: go-ds-crdt makes several writes
// per delta, and the crdt package calls Sync once when a write is complete,
// before acknowledging it. So every acknowledged write is on disk, with one
// fsync per write instead of one per internal key.
func OpenStore(dir string) (*badger.Datastore, error) {
	path := filepath.Join(dir, StoreDir)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	opts := badger.DefaultOptions
	opts.SyncWrites = false
	opts.EventLogging = false // x/net/trace bookkeeping: ~8% of CPU per edit
	d, err := badger.NewDatastore(path, &opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return d, nil
}

// OpenStoreWait is OpenStore that waits up to wait while the store is
// locked: a CLI command holds it for a moment when no node runs.
func OpenStoreWait(ctx context.Context, dir string, wait time.Duration) (*badger.Datastore, error) {
	deadline := time.Now().Add(wait)
	for {
		d, err := OpenStore(dir)
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			return d, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// OpenMarkerFile is the unclean-shutdown marker inside the data dir:
// present while a store is open. Found at open, it means the last process
// died without closing the store, so the DAG is re-walked (go-ds-crdt
// v0.6.8 does not detect this itself).
const OpenMarkerFile = "store.open"

// MarkOpen creates the marker (holding this process's id) and reports
// whether it was already there.
func MarkOpen(dir string) (unclean bool, err error) {
	path := filepath.Join(dir, OpenMarkerFile)
	if _, err := os.Stat(path); err == nil {
		unclean = true
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600); err != nil {
		return unclean, fmt.Errorf("write %s: %w", path, err)
	}
	return unclean, nil
}

// MarkClosed removes the marker; no marker is not an error.
func MarkClosed(dir string) error {
	if err := os.Remove(filepath.Join(dir, OpenMarkerFile)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove open marker: %w", err)
	}
	return nil
}
