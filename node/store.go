package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	badger "github.com/ipfs/go-ds-badger"
)

// ErrStoreLocked means another process (a running node) holds the store.
var ErrStoreLocked = errors.New("store is in use by another process")

// OpenDatastore opens the embedded store of a data dir: go-ds-badger, behind
// the go-datastore interface so that another engine is a one-line change.
//
// Badger's per-write fsync is turned off: go-ds-crdt makes several writes
// per delta, and the crdt package calls Sync once when a write is complete,
// before acknowledging it. So every acknowledged write is on disk, with one
// fsync per write instead of one per internal key.
func OpenDatastore(dir string) (*badger.Datastore, error) {
	path := filepath.Join(dir, "store")
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	opts := badger.DefaultOptions
	opts.SyncWrites = false
	opts.EventLogging = false // x/net/trace bookkeeping: ~8% of CPU per edit
	d, err := badger.NewDatastore(path, &opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open store %s: %w", path, ErrStoreLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return d, nil
}

// openDatastoreWait is OpenDatastore that waits up to wait while the store
// is locked: a CLI command holds it for a moment when no node runs.
func openDatastoreWait(ctx context.Context, dir string, wait time.Duration) (*badger.Datastore, error) {
	deadline := time.Now().Add(wait)
	for {
		d, err := OpenDatastore(dir)
		if !errors.Is(err, ErrStoreLocked) || time.Now().After(deadline) {
			return d, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// blockNamespace is where DAG blocks live, beside go-ds-crdt's state.
var blockNamespace = ds.NewKey("/ferry/blocks")

// NewBlockstore returns the block store kept in the same datastore.
func NewBlockstore(d ds.Batching) blockstore.Blockstore {
	return blockstore.NewBlockstore(namespace.Wrap(d, blockNamespace))
}

// The unclean-shutdown marker: present while a store is open. Found at open,
// it means the last process died without closing the store, so the DAG is
// re-walked (go-ds-crdt v0.6.8 does not detect this itself).
const runningMarker = "store.open"

// markOpen creates the marker and reports whether it was already there.
func markOpen(dir string) (unclean bool, err error) {
	path := filepath.Join(dir, runningMarker)
	if _, err := os.Stat(path); err == nil {
		unclean = true
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600); err != nil {
		return unclean, fmt.Errorf("write %s: %w", path, err)
	}
	return unclean, nil
}

func markClosed(dir string) error {
	if err := os.Remove(filepath.Join(dir, runningMarker)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove open marker: %w", err)
	}
	return nil
}

// reportingBlockstore tells failed tells of every block write that fails.
type reportingBlockstore struct {
	blockstore.Blockstore
	failed func(error)
}

func (b reportingBlockstore) Put(ctx context.Context, blk blocks.Block) error {
	err := b.Blockstore.Put(ctx, blk)
	if err != nil {
		b.failed(err)
	}
	return err
}

func (b reportingBlockstore) PutMany(ctx context.Context, blks []blocks.Block) error {
	err := b.Blockstore.PutMany(ctx, blks)
	if err != nil {
		b.failed(err)
	}
	return err
}
