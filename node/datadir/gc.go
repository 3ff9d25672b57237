package datadir

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	badgerdb "github.com/dgraph-io/badger"
	"github.com/dustin/go-humanize"

	"github.com/ferry-crm/ferry/internal/lifecycle"
)

// GCDiscardRatio is the share of a value-log file's sampled entries that
// must be dead for GC to rewrite the file: at 0.5 a rewrite appends at most
// half a file to reclaim a whole one.
const GCDiscardRatio = 0.5

// Defaults of GCOptions.
const (
	DefaultGCEvery     = DefaultValueLogFileSize
	DefaultGCIdle      = 30 * time.Second
	DefaultGCInterval  = 30 * time.Minute
	DefaultGCMaxRounds = 16
)

// gcMisses is how many rounds in a row may find nothing to rewrite before
// a run ends.
const gcMisses = 4

// GCOptions tune a GC; a zero field takes its default.
type GCOptions struct {
	// Room is asked before every round (disk.Watch.CheckRoom): while it
	// returns an error, GC does not run. A rewrite appends the live entries
	// of a file before it deletes the file, and on a nearly full disk that
	// write could fail part-way; the disk reserve is kept for merges and
	// repairs. nil: always room.
	Room func(context.Context) error
	// Every: a run once this many bytes were written through the guard
	// since the last one (default DefaultGCEvery, one value-log file: by
	// then a file may have become reclaimable), even while writes go on.
	Every uint64
	// Idle: a run once nothing was written for this long after a write, and
	// once after start (default DefaultGCIdle): an import's last files are
	// reclaimed when it ends, an older store's when the node starts.
	Idle time.Duration
	// Interval: a run at least this often, written or not (default
	// DefaultGCInterval): badger samples a file picked at random, so a
	// later run may reclaim what an earlier one passed over.
	Interval time.Duration
	// MaxRounds bounds the files rewritten by one run (default
	// DefaultGCMaxRounds): each round holds the writes back while it
	// rewrites.
	MaxRounds int
	// Logger receives what GC reclaimed (debug) and its failures (warn).
	// Default: slog.Default().
	Logger *slog.Logger
}

// GC is the one owner of badger's value-log GC for a store: it runs rounds
// of Guard.RunValueLogGC after large writes, when writes stop, and
// periodically, and only while the disk has room.
//
// Badger (LSM-only, see storeOptions) appends every write to its value log
// and reclaims the log only by rewriting a whole file's live entries
// elsewhere and deleting the file. go-ds-badger's CollectGarbage repeats
// rounds until none rewrites, with no bound, no room check and outside the
// guard, and its periodic GC is off (storeOptions): GC calls the guard,
// one round at a time.
//
// Start it with StartGC once the guard exists, and Close it before the
// datastore closes.
type GC struct {
	g    *Guard
	dir  string // badger's directory
	opts GCOptions
	log  *slog.Logger
	life *lifecycle.Group
	mu   sync.Mutex // one run at a time
}

// GCResult is what one run did.
type GCResult struct {
	// Rounds counts the value-log files rewritten and deleted.
	Rounds int
	// NoRoom: the run stopped because the disk was below its reserve.
	NoRoom bool
	// FilesBefore and FilesAfter count the value-log files; Before and
	// After sum their sizes in bytes.
	FilesBefore, FilesAfter int
	Before, After           int64
	Took                    time.Duration
}

// Freed is how many bytes of value log the run reclaimed.
func (r GCResult) Freed() int64 { return r.Before - r.After }

// StartGC starts the GC of the store of data dir dir, whose writes all go
// through g.
func StartGC(g *Guard, dir string, opts GCOptions) *GC {
	if opts.Every == 0 {
		opts.Every = DefaultGCEvery
	}
	if opts.Idle <= 0 {
		opts.Idle = DefaultGCIdle
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultGCInterval
	}
	if opts.MaxRounds <= 0 {
		opts.MaxRounds = DefaultGCMaxRounds
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &GC{g: g, dir: filepath.Join(dir, StoreDir), opts: opts, log: opts.Logger, life: lifecycle.New()}
	c.life.Go(c.loop)
	return c
}

// Close stops the GC, waiting for a round in progress. Safe to call twice.
func (c *GC) Close() error {
	c.life.Close()
	return nil
}

// loop runs GC when one of GCOptions' conditions holds, checking them
// every Idle (at most every 5 s): reading the written count is all a check
// costs.
func (c *GC) loop(ctx context.Context) {
	tick := time.NewTicker(min(c.opts.Idle, 5*time.Second))
	defer tick.Stop()
	now := time.Now()
	lastRun := now
	ranAt := c.g.Written()     // bytes written when the last run began
	seen, seenAt := ranAt, now // the count last seen, and since when
	pending := true            // written since the last run (or just opened)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		w := c.g.Written()
		if w != seen {
			seen, seenAt, pending = w, now, true
		}
		due := w-ranAt >= c.opts.Every || // large writes
			pending && now.Sub(seenAt) >= c.opts.Idle || // writes stopped
			now.Sub(lastRun) >= c.opts.Interval
		if !due {
			continue
		}
		lastRun, ranAt, pending = now, w, false
		r, err := c.Collect(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.log.Warn("value-log GC failed", "err", err, "rounds", r.Rounds)
		}
	}
}

// Collect runs GC now: rounds until badger finds no file worth rewriting,
// up to MaxRounds, stopping early when the disk falls below its reserve or
// ctx ends. Running out of files to rewrite (badger.ErrNoRewrite) is the
// normal end, not an error.
func (c *GC) Collect(ctx context.Context) (GCResult, error) {
	var r GCResult
	if !c.life.Enter() {
		return r, errors.New("value-log GC: closed")
	}
	defer c.life.Leave()
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	var err error
	if r.FilesBefore, r.Before, err = valueLogSize(c.dir); err != nil {
		return r, err
	}
	// Badger picks the file with the most dead entries known from its
	// compactions, or else one at random: a round that finds nothing worth
	// rewriting (ErrNoRewrite) may have looked at the wrong file, so a run
	// gives up only after a few misses in a row.
	misses := 0
	for attempts := 0; r.Rounds < c.opts.MaxRounds && attempts < 2*c.opts.MaxRounds; attempts++ {
		if err = ctx.Err(); err != nil {
			break
		}
		if err = c.life.Context().Err(); err != nil {
			break
		}
		if c.opts.Room != nil {
			if rerr := c.opts.Room(ctx); rerr != nil {
				r.NoRoom = true
				c.log.Debug("value-log GC skipped: no room on the disk", "reason", rerr)
				break
			}
		}
		err = c.g.RunValueLogGC(GCDiscardRatio)
		if errors.Is(err, badgerdb.ErrNoRewrite) {
			if misses++; misses == gcMisses {
				break
			}
			continue
		}
		if err != nil {
			break
		}
		misses = 0
		r.Rounds++
	}
	if errors.Is(err, badgerdb.ErrNoRewrite) || errors.Is(err, badgerdb.ErrRejected) {
		err = nil // nothing (more) worth rewriting, or badger is closing
	}
	r.FilesAfter, r.After, _ = valueLogSize(c.dir)
	r.Took = time.Since(start)
	if r.Rounds > 0 {
		c.log.Debug("value-log GC", "rounds", r.Rounds, "freed", humanize.IBytes(uint64(max(r.Freed(), 0))),
			"files", fmt.Sprintf("%d -> %d", r.FilesBefore, r.FilesAfter),
			"log", fmt.Sprintf("%s -> %s", humanize.IBytes(uint64(r.Before)), humanize.IBytes(uint64(r.After))), "took", r.Took)
	}
	if err != nil {
		return r, fmt.Errorf("value-log GC: %w", err)
	}
	return r, nil
}

// Reclaim frees the disk after many keys were deleted at once (an old
// epoch dropped): the LSM tree is compacted into one level, then value-log
// GC runs (Collect).
func (c *GC) Reclaim(ctx context.Context) (GCResult, error) {
	if !c.life.Enter() {
		return GCResult{}, errors.New("reclaim: closed")
	}
	// Never during a GC run (and one at a time: see Guard.Flatten).
	c.mu.Lock()
	err := c.g.Flatten()
	c.mu.Unlock()
	c.life.Leave()
	if err != nil {
		return GCResult{}, fmt.Errorf("reclaim: %w", err)
	}
	return c.Collect(ctx)
}

// valueLogSize counts badger's value-log files in dir and sums their sizes.
func valueLogSize(dir string) (files int, size int64, err error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return 0, 0, fmt.Errorf("value-log size: %w", err)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted by a round meanwhile
		}
		if err != nil {
			return 0, 0, fmt.Errorf("value-log size: %w", err)
		}
		files++
		size += fi.Size()
	}
	return files, size, nil
}
