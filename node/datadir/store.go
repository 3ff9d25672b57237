package datadir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/options"
	badger "github.com/ipfs/go-ds-badger"
)

// StoreDir is the embedded store (badger) inside the data dir.
const StoreDir = "store"

// ErrLocked means another process (a running node) holds the store.
var ErrLocked = errors.New("store is in use by another process")

// OpenStore opens the embedded store of a data dir: go-ds-badger, behind
// the go-datastore interface so that another engine is a one-line change,
// with the settings of storeOptions. It returns an error wrapping
// ErrLocked when another process has it open.
func OpenStore(dir string) (*badger.Datastore, error) {
	return OpenStoreWith(dir, StoreOptions{})
}

// StoreOptions change what OpenStoreWith opens; the zero value is
// OpenStore's settings.
type StoreOptions struct {
	// ValueLogFileSize is the size at which badger starts a new value-log
	// file (default DefaultValueLogFileSize; badger takes 1 MiB to 2 GiB).
	// Tests make it small, to get several files out of little data.
	ValueLogFileSize int64
}

// DefaultValueLogFileSize is the size of badger's value-log files: see
// storeOptions.
const DefaultValueLogFileSize = 64 << 20

// OpenStoreWith is OpenStore with options.
func OpenStoreWith(dir string, so StoreOptions) (*badger.Datastore, error) {
	path := filepath.Join(dir, StoreDir)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	opts := storeOptions(so)
	d, err := badger.NewDatastore(path, &opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return d, nil
}

// storeOptions are badger v1.6.2's settings for Ferry's data, chosen to
// bound the node's memory (docs/storage.md, "Badger settings", has the
// figures). They start from go-ds-badger's defaults, which keep: every
// value under 64 KB in the LSM tree with its key, the value log then being
// a write-ahead copy of every write (LSMOnlyOptions); value-log files read
// with pread, not mapped (ValueLogLoadingMode FileIO); Truncate, to drop a
// torn write at open; no compaction of level 0 at close.
func storeOptions(so StoreOptions) badger.Options {
	opts := badger.DefaultOptions

	// Badger's per-write fsync is turned off: go-ds-crdt makes several
	// writes per delta, and the crdt package calls Sync once when a write is
	// complete, before acknowledging it. So every acknowledged write is on
	// disk, with one fsync per write instead of one per internal key.
	opts.SyncWrites = false
	opts.EventLogging = false // x/net/trace bookkeeping: ~8% of CPU per edit

	// Value-log GC is the node's (GC, below the write guard, and only with
	// room on the disk); go-ds-badger's own, every 15 minutes, would write
	// outside the guard. CollectGarbage, if called, uses GC's ratio.
	opts.GcInterval = 0
	opts.GcDiscardRatio = GCDiscardRatio

	// GC reclaims whole value-log files, never the one being written: at
	// badger's 1 GiB a store under ~40,000 contacts had a second full copy
	// of everything in a log no GC could touch. At 64 MiB a file is
	// complete every few thousand contacts, and at most about one file of
	// dead entries waits for GC.
	opts.ValueLogFileSize = DefaultValueLogFileSize
	if so.ValueLogFileSize > 0 {
		opts.ValueLogFileSize = so.ValueLogFileSize
	}
	// Badger also starts a new file after this many entries. Entries here
	// average ~300 bytes (an import: ~310), so at one per 128 bytes the
	// size comes first; the count only cuts a file of tiny entries. GC
	// samples 1% of it (5,242 entries of a 64 MiB file).
	opts.ValueLogMaxEntries = uint32(opts.ValueLogFileSize / 128)

	// Tables stay memory-mapped (go-ds-badger's choice): reads come from
	// the page cache in place, pages the kernel reclaims under pressure
	// and that are no Go heap (they do count in RSS while touched). FileIO
	// would allocate every block read (100 entries, tens of KB) on the
	// heap; LoadToRAM would keep the whole LSM tree there.
	opts.TableLoadingMode = options.MemoryMap

	// MaxTableSize sizes the memtable (a preallocated Go heap arena of
	// MaxTableSize plus 30%) and every table badger builds, each in a
	// bytes.Buffer doubling from 1 MiB: 7 MiB keeps a table's buffer at
	// 8 MiB where 8 MiB would make it 16. It also bounds one badger
	// transaction, so one atomic batch, to 15% of it (1.05 MiB, 11,000
	// entries): an import delta's batch is ~250 KB and 1,200 entries.
	opts.MaxTableSize = 7 << 20
	// One memtable written, up to two waiting for their flush (default 5):
	// ~27 MiB of arenas instead of ~125 MiB with go-ds-badger's 16 MiB
	// tables. A flush takes a fraction of a second; writes wait meanwhile
	// only when both are full.
	opts.NumMemtables = 2
	// A compaction builds all its output tables in memory before writing
	// any, so its peak is the size of its inputs: the settings below bound
	// the inputs. Two compactions at a time (badger's default) stay: with
	// one, a 125,000-contact import waited on compaction and took 60% longer
	// for the same peak RSS.
	opts.NumCompactors = 2
	// Level 0 to 1 merges every level-0 table with all of level 1 (each
	// holds keys from across the key range: blocks by hash, go-ds-crdt's
	// state by record). Compacting at 4
	// tables, writes waiting at 8, and a 32 MiB level 1 (default 256 MiB)
	// keep that under ~120 MiB; the cost is one more level once the LSM
	// tree passes ~350 MiB.
	opts.NumLevelZeroTables = 4
	opts.NumLevelZeroTablesStall = 8
	opts.LevelOneSize = 32 << 20
	// Deeper levels merge one table with the ~10 it overlaps below
	// (LevelSizeMultiplier, kept at 10): ~80 MiB.
	return opts
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
