package datadir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	badgerdb "github.com/dgraph-io/badger"
	ds "github.com/ipfs/go-datastore"
	badger "github.com/ipfs/go-ds-badger"

	"github.com/ferry-crm/ferry/internal/dsbatch"
)

// Guard serialises the writes to badger and repairs its value log after a
// write that failed part-way.
//
// badger v1.6.2 (under go-ds-badger v0.3.4) appends values to its value log
// with one write(2) per batch and advances its own idea of the log's end
// only when the write succeeds. A short write (a disk that fills up in the
// middle of it) moves the file's offset but not badger's: every value
// written after that is stored at one place and looked up at another, so
// later reads return other values' bytes (seen on a store broken by a full
// disk: a block key returning another record's op), and the store is
// corrupt until badger is closed and opened again (Close truncates the log
// to badger's end, dropping the partial write, but also cuts the values
// written since).
//
// It hits values of 64 KB and more (go-ds-badger's LSM-only options keep
// smaller ones in the LSM tree), such as the blocks of an import, and, at
// the next start, every write made after the partial one: the log replay
// stops at the partial entry and cuts what follows.
//
// Guard keeps that from happening: every write to badger goes
// through it, one at a time, and after a write fails it puts the value
// log's file back where badger thinks the log ends (truncates the partial
// write and seeks there) before the next write. Reads pass through.
// TestGuardSurvivesFullDisk shows the damage without it on a real
// filesystem that fills up (every acknowledged value lost or misread), and
// none with it. Badger's value-log GC rewrites live entries into the log
// too: it runs through the guard as well (RunValueLogGC), so a rewind never
// cuts its bytes and a rewrite that fails part-way is cut like any write.
//
// Create it with NewGuard. It is safe for concurrent use, and is a
// ds.Batching over the same store (it embeds the badger datastore, so
// everything else — Sync, Close — is badger's; value-log GC must go
// through RunValueLogGC, not the datastore's CollectGarbage).
type Guard struct {
	*badger.Datastore
	log *slog.Logger
	mu  sync.Mutex // one write at a time, and none while rewinding
	// lsm: one operation that stops badger's compactions at a time
	// (Flatten, DropPrefix): badger panics on two.
	lsm sync.Mutex
	// rewinds counts value-log rewinds after failed writes.
	rewinds atomic.Uint64
	// written counts the bytes of keys and values written (GC runs after
	// enough of them).
	written atomic.Uint64
}

var _ ds.Batching = (*Guard)(nil)

// NewGuard guards the writes to d; log tells of failed writes and rewinds.
func NewGuard(d *badger.Datastore, log *slog.Logger) *Guard {
	return &Guard{Datastore: d, log: log}
}

// Rewinds is how many times a failed write left partial bytes in badger's
// value log that the guard cut.
func (g *Guard) Rewinds() uint64 { return g.rewinds.Load() }

// Written is how many bytes of keys and values were written through the
// guard since it was made (what badger appended to its value log, give or
// take its headers).
func (g *Guard) Written() uint64 { return g.written.Load() }

// Put writes v under k, rewinding the value log if the write fails.
func (g *Guard) Put(ctx context.Context, k ds.Key, v []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.count(g.after(g.Datastore.Put(ctx, k, v)), len(k.String())+len(v))
}

// Delete removes k, rewinding the value log if the write fails.
func (g *Guard) Delete(ctx context.Context, k ds.Key) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.count(g.after(g.Datastore.Delete(ctx, k)), len(k.String()))
}

// RunValueLogGC runs one round of badger's value-log GC (DB.RunValueLogGC:
// it picks one log file and, when at least ratio of a sample of it is
// dead, rewrites the live entries at the log's end and deletes the file),
// with no write running meanwhile, and rewinds the log if the rewrite
// failed part-way. It returns badger.ErrNoRewrite when no file was worth
// rewriting and badger.ErrRejected when another GC runs.
func (g *Guard) RunValueLogGC(ratio float64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	err := g.Datastore.DB.RunValueLogGC(ratio)
	if err == nil || errors.Is(err, badgerdb.ErrNoRewrite) || errors.Is(err, badgerdb.ErrRejected) {
		return err
	}
	return g.after(err)
}

// Flatten compacts badger's LSM tree into one level (DB.Flatten), which
// drops deleted keys for good and tells value-log GC which entries died.
// Writes go on meanwhile.
func (g *Guard) Flatten() error {
	g.lsm.Lock()
	defer g.lsm.Unlock()
	if err := g.Datastore.DB.Flatten(2); err != nil {
		return fmt.Errorf("flatten: %w", err)
	}
	return nil
}

// DropPrefix deletes every key under prefix at once (DB.DropPrefix): the
// keys leave the LSM tree without a delete each written to the value log.
// Writes wait meanwhile (badger refuses them during a drop).
func (g *Guard) DropPrefix(prefix string) error {
	g.lsm.Lock()
	defer g.lsm.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.Datastore.DB.DropPrefix([]byte(prefix)); err != nil {
		return fmt.Errorf("drop %s: %w", prefix, err)
	}
	return nil
}

// RotateValueLog ends badger's current value-log file and starts a new
// one, with the head badger records on disk moved into it: every earlier
// file is then one value-log GC may delete (GC never touches the file the
// head is in). After a purge, the write-ahead copies of the purged values
// in the current file go with the next GC (GC.Reclaim), instead of staying
// until another ValueLogFileSize was written.
func (g *Guard) RotateValueLog(ctx context.Context) error {
	g.lsm.Lock()
	defer g.lsm.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := endValueLogFile(g.Datastore.DB); err != nil {
		return fmt.Errorf("rotate the value log: %w", err)
	}
	// The first write goes to the current file and ends it; the second
	// starts the new one, and the head moves there at the next memtable
	// flush, which DropPrefix makes (nothing is under that prefix).
	k := ds.NewKey(rotateKey)
	if err := g.after(g.Datastore.Put(ctx, k, []byte{1})); err != nil {
		return fmt.Errorf("rotate the value log: %w", err)
	}
	if err := g.after(g.Datastore.Delete(ctx, k)); err != nil {
		return fmt.Errorf("rotate the value log: %w", err)
	}
	if err := g.Datastore.DB.DropPrefix([]byte(rotateKey + "/")); err != nil {
		return fmt.Errorf("rotate the value log: %w", err)
	}
	return nil
}

// rotateKey is the key RotateValueLog writes then deletes.
const rotateKey = "/ferry/local/rotate-value-log"

// endValueLogFile makes badger start a new value-log file after its next
// write, as if the current one held ValueLogMaxEntries entries: it sets
// badger v1.6.2's unexported valueLog.numEntriesWritten (only the write
// goroutine reads it, after the next write request reaches it over a
// channel). TestRotateValueLog fails if it changes.
func endValueLogFile(db *badgerdb.DB) error {
	if db == nil {
		return errors.New("no badger DB")
	}
	vlog := reflect.ValueOf(db).Elem().FieldByName("vlog")
	if !vlog.IsValid() {
		return errors.New("badger has no field vlog")
	}
	f := vlog.FieldByName("numEntriesWritten")
	if !f.IsValid() || f.Kind() != reflect.Uint32 {
		return errors.New("badger's valueLog has no uint32 numEntriesWritten")
	}
	p := (*uint32)(unsafe.Pointer(f.UnsafeAddr()))
	*p = 1 << 31
	return nil
}

// count adds n written bytes when err is nil, and returns err.
func (g *Guard) count(err error, n int) error {
	if err == nil {
		g.written.Add(uint64(n))
	}
	return err
}

// Batch buffers the writes: badger's own write batch may write part of
// them before Commit, in the background.
func (g *Guard) Batch(context.Context) (ds.Batch, error) {
	return &guardedBatch{g: g}, nil
}

// after rewinds the value log when a write failed.
func (g *Guard) after(err error) error {
	if err == nil || errors.Is(err, ds.ErrNotFound) {
		return err
	}
	moved, rerr := rewindValueLog(g.Datastore.DB)
	if rerr != nil {
		g.log.Error("a write failed and badger's value log could not be checked: restart the node before writing again", "write", err, "err", rerr)
		return err
	}
	if moved > 0 {
		g.rewinds.Add(1)
		g.log.Warn("a write failed part-way: its partial bytes were cut from badger's value log", "bytes", moved, "err", err)
	}
	return err
}

// guardedBatch buffers a batch and writes it at Commit, under the guard.
type guardedBatch struct {
	dsbatch.Buffer
	g *Guard
}

func (b *guardedBatch) Commit(ctx context.Context) error {
	ops := b.Take()
	if len(ops) == 0 {
		return nil
	}
	n := 0
	for _, op := range ops {
		n += len(op.Key.String()) + len(op.Value)
	}
	b.g.mu.Lock()
	defer b.g.mu.Unlock()
	return b.g.count(b.g.after(dsbatch.Apply(ctx, b.g.Datastore, ops)), n)
}

// rewindValueLog truncates badger's current value log file to the end
// badger records, and seeks there, when a failed write left the file
// longer. It returns how many bytes it cut.
func rewindValueLog(db *badgerdb.DB) (int64, error) {
	fd, woff, unlock, err := valueLogFile(db)
	if err != nil {
		return 0, err
	}
	defer unlock()
	pos, err := fd.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, fmt.Errorf("value log offset: %w", err)
	}
	if pos <= int64(woff) {
		return 0, nil
	}
	if err := fd.Truncate(int64(woff)); err != nil {
		return 0, fmt.Errorf("cut the value log back to %d: %w", woff, err)
	}
	if _, err := fd.Seek(int64(woff), io.SeekStart); err != nil {
		return 0, fmt.Errorf("seek the value log back to %d: %w", woff, err)
	}
	return pos - int64(woff), nil
}

// valueLogFile returns badger's current value log file and the offset
// badger believes it ends at, with its files lock held for reading until
// unlock. It reads badger v1.6.2's unexported fields (DB.vlog,
// valueLog.filesLock, filesMap, maxFid, writableLogOffset, logFile.fd):
// TestRewindValueLog fails if they change.
func valueLogFile(db *badgerdb.DB) (fd *os.File, woff uint32, unlock func(), err error) {
	if db == nil {
		return nil, 0, nil, errors.New("no badger DB")
	}
	field := func(v reflect.Value, name string) (reflect.Value, error) {
		f := v.FieldByName(name)
		if !f.IsValid() {
			return reflect.Value{}, fmt.Errorf("badger has no field %s", name)
		}
		return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), nil
	}
	vlog, err := field(reflect.ValueOf(db).Elem(), "vlog")
	if err != nil {
		return nil, 0, nil, err
	}
	lockV, err := field(vlog, "filesLock")
	if err != nil {
		return nil, 0, nil, err
	}
	lock, ok := lockV.Addr().Interface().(*sync.RWMutex)
	if !ok {
		return nil, 0, nil, errors.New("badger's valueLog.filesLock is not a sync.RWMutex")
	}
	lock.RLock()
	fail := func(err error) (*os.File, uint32, func(), error) {
		lock.RUnlock()
		return nil, 0, nil, err
	}
	var maxFid uint32
	for name, dst := range map[string]*uint32{"writableLogOffset": &woff, "maxFid": &maxFid} {
		f, err := field(vlog, name)
		if err != nil {
			return fail(err)
		}
		p, ok := f.Addr().Interface().(*uint32)
		if !ok {
			return fail(fmt.Errorf("badger's valueLog.%s is not a uint32", name))
		}
		*dst = atomic.LoadUint32(p)
	}
	files, err := field(vlog, "filesMap")
	if err != nil {
		return fail(err)
	}
	if files.Kind() != reflect.Map || files.Type().Key().Kind() != reflect.Uint32 {
		return fail(errors.New("badger's valueLog.filesMap is not a map by uint32"))
	}
	lf := files.MapIndex(reflect.ValueOf(maxFid))
	if !lf.IsValid() || lf.IsNil() {
		return fail(fmt.Errorf("badger has no value log file %d", maxFid))
	}
	fdV, err := field(lf.Elem(), "fd")
	if err != nil {
		return fail(err)
	}
	fd, ok = fdV.Interface().(*os.File)
	if !ok || fd == nil {
		return fail(errors.New("badger's logFile.fd is not an *os.File"))
	}
	return fd, woff, lock.RUnlock, nil
}
