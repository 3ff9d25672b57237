package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

// How a change reaches an action exactly once per success:
//
//  1. go-ds-crdt merges a write; its journal entry is put in the same
//     batch (crdt.Options.Journal), so it is on disk exactly when the
//     write is.
//  2. drain reads the entry, reconstructs the change (crdt.ChangeOf) and,
//     in one batch, puts a pending run for every rule that matches (unless
//     that rule has a run for that op already, in any state) and deletes
//     the entry. A crash before the batch leaves the entry: done again.
//  3. A pending run is attempted: its attempt count is written first, then
//     the action runs; success moves it to done, failure schedules the next
//     attempt or moves it to failed, each in one batch. A crash during the
//     action leaves it pending: it runs again, with the same payload and
//     idempotency key. So every matching change is delivered at least once,
//     and is never delivered again after its success was recorded; an
//     action that succeeded but whose success was not recorded (a crash in
//     between) is delivered again with the same key, for the receiver to
//     recognise.

var (
	prefix      = ds.NewKey("/ferry/local/workflow")
	pendingRoot = prefix.ChildString("pending")
	doneRoot    = prefix.ChildString("done")
	failedRoot  = prefix.ChildString("failed")
)

const (
	statePending = "pending"
	stateDone    = "done"
	stateFailed  = "failed"
)

// run is a stored run: its state and the payload every attempt gets.
type run struct {
	Rule      string                  `json:"rule"`
	Op        string                  `json:"op"`
	Payload   apijson.WorkflowPayload `json:"payload"`
	Attempts  int                     `json:"attempts"`
	LastError string                  `json:"last_error,omitempty"`
	NextTry   time.Time               `json:"next_try"`
	Queued    time.Time               `json:"queued"`
	Finished  time.Time               `json:"finished,omitzero"`
}

func runKey(root ds.Key, rule string, je crdt.JournalEntry) ds.Key {
	rel := strings.TrimPrefix(je.Key.String(), crdt.JournalPrefix.String())
	return ds.RawKey(root.String() + "/" + rule + rel)
}

// Store is what the engine reads of the node's records.
type Store interface {
	Stats(ctx context.Context) crdt.Stats
	Journal(ctx context.Context, limit int) ([]crdt.JournalEntry, error)
	ChangeOf(ctx context.Context, collection, id string, op crdt.OpID, complete bool) (*crdt.Change, bool, error)
}

// Deps are what the engine needs from its node.
type Deps struct {
	// Store is the node's records: the journal of merged writes, and the
	// change each entry stands for (a *crdt.Router, across channels).
	Store Store
	// DS is the node's datastore (the store's): runs live next to the
	// journal.
	DS ds.Batching
	// Names maps writer ids to what the nodes say about themselves.
	Names func(ctx context.Context) map[string]crdt.NodeInfo
	// Here says whether this node runs rule (see docs/workflows.md).
	Here func(ctx context.Context, r *Rule) bool
	Log  *slog.Logger
	Now  func() time.Time
}

// Engine consumes the change journal and runs the rules' actions.
type Engine struct {
	rules []Rule
	d     Deps
	wake  chan struct{}
	// deferred: journal entries whose change could not be read complete
	// yet, since when (used by Run's goroutine only).
	deferred map[ds.Key]time.Time
	// unreadable counts merged changes skipped because their write was
	// gone before it could be read (see drain).
	unreadable atomic.Int64
}

// Unreadable is how many merged changes were skipped since the start
// because their write was compacted away before it could be read.
func (e *Engine) Unreadable() int64 { return e.unreadable.Load() }

// maxDefer is how long a change waits for the writes it replaced to merge
// before it is delivered with what is known (they may be gone for good,
// compacted away).
const maxDefer = time.Minute

// New returns an engine for validated rules.
func New(rules []Rule, d Deps) (*Engine, error) {
	if err := ValidateRules(rules); err != nil {
		return nil, err
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Engine{rules: rules, d: d, wake: make(chan struct{}, 1), deferred: map[ds.Key]time.Time{}}, nil
}

// Changed wakes the engine (a merge happened); it never blocks.
func (e *Engine) Changed() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) rule(name string) *Rule {
	for i := range e.rules {
		if e.rules[i].Name == name {
			return &e.rules[i]
		}
	}
	return nil
}

// Run drains the journal and runs due actions until ctx is done.
func (e *Engine) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := e.drain(ctx); err != nil && ctx.Err() == nil {
			e.d.Log.Warn("workflows: reading merged changes", "err", err)
		}
		if err := e.runDue(ctx); err != nil && ctx.Err() == nil {
			e.d.Log.Warn("workflows: running actions", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-tick.C:
		}
	}
}

// drain turns journal entries into pending runs.
func (e *Engine) drain(ctx context.Context) error {
	if e.d.Store.Stats(ctx).QueuedJobs > 0 {
		// A DAG walk is under way: the older writes of a branch merge
		// after its newer ones; wait for them (the tick comes back).
		return nil
	}
	entries, err := e.d.Store.Journal(ctx, 0)
	if err != nil {
		return err
	}
	var names map[string]crdt.NodeInfo
	for _, je := range entries {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b, err := e.d.DS.Batch(ctx)
		if err != nil {
			return fmt.Errorf("drain journal: %w", err)
		}
		var ch *crdt.Change
		gone := false
		for i := range e.rules {
			r := &e.rules[i]
			if r.Collection != je.Collection || !e.d.Here(ctx, r) {
				continue
			}
			if ch == nil {
				first, waited := e.deferred[je.Key]
				complete := !waited || e.d.Now().Sub(first) < maxDefer
				c, found, err := e.d.Store.ChangeOf(ctx, je.Collection, je.ID, je.Op, complete)
				if err != nil {
					return err
				}
				if !found && !complete {
					// Asked again after maxDefer without waiting for
					// what it replaced, and still not here: its write is
					// gone (a compaction dropped it before it could be
					// read). Nothing will ever show it: it is skipped.
					e.d.Log.Warn("workflows: a merged change can no longer be read (its write was compacted away first); skipped",
						"collection", je.Collection, "id", je.ID, "op", je.Op)
					e.unreadable.Add(1)
					gone = true
					break
				}
				if !found {
					if !waited {
						e.deferred[je.Key] = e.d.Now()
					}
					ch = nil
					break // its block is not here yet: the entry stays
				}
				ch = c
			}
			if ch.Ignored || !r.Matches(ch) {
				continue
			}
			if names == nil {
				names = e.d.Names(ctx)
			}
			if err := e.enqueue(ctx, b, r, je, ch, names); err != nil {
				return err
			}
		}
		if ch == nil && !gone && e.needsChange(ctx, je) {
			continue
		}
		delete(e.deferred, je.Key)
		if err := b.Delete(ctx, je.Key); err != nil {
			return fmt.Errorf("drain journal: %w", err)
		}
		if err := b.Commit(ctx); err != nil {
			return fmt.Errorf("drain journal: %w", err)
		}
	}
	return nil
}

// needsChange: some rule here watches the entry's collection (so a change
// that could not be read keeps its entry).
func (e *Engine) needsChange(ctx context.Context, je crdt.JournalEntry) bool {
	for i := range e.rules {
		if e.rules[i].Collection == je.Collection && e.d.Here(ctx, &e.rules[i]) {
			return true
		}
	}
	return false
}

// enqueue adds a pending run to b, unless rule r has a run for the op.
func (e *Engine) enqueue(ctx context.Context, b ds.Batch, r *Rule, je crdt.JournalEntry, ch *crdt.Change, names map[string]crdt.NodeInfo) error {
	for _, root := range []ds.Key{pendingRoot, doneRoot, failedRoot} {
		has, err := e.d.DS.Has(ctx, runKey(root, r.Name, je))
		if err != nil {
			return fmt.Errorf("enqueue %s: %w", r.Name, err)
		}
		if has {
			return nil // journalled again (another block, a new epoch)
		}
	}
	now := e.d.Now()
	p := apijson.WorkflowPayload{Rule: r.Name, IdempotencyKey: je.Op.String(), Collection: je.Collection, ID: je.ID,
		Event: ch.Event, Writer: je.Op.Writer, WriterName: names[je.Op.Writer].Name, Time: je.Op.Time.Wall().UTC(),
		Before: ch.Before, After: ch.After, Changed: ch.Changed}
	if p.Changed == nil {
		p.Changed = []string{}
	}
	return put(ctx, b, runKey(pendingRoot, r.Name, je), &run{Rule: r.Name, Op: je.Key.String(), Payload: p, NextTry: now, Queued: now})
}

func put(ctx context.Context, b ds.Write, k ds.Key, r *run) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := b.Put(ctx, k, data); err != nil {
		return fmt.Errorf("save run %s: %w", k, err)
	}
	return nil
}

// stored is a run and its key.
type stored struct {
	key ds.Key
	run
}

// list reads the runs under root.
func (e *Engine) list(ctx context.Context, root ds.Key) ([]stored, error) {
	res, err := e.d.DS.Query(ctx, query.Query{Prefix: root.String() + "/"})
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer res.Close()
	var out []stored
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("list runs: %w", r.Error)
		}
		var s stored
		if err := json.Unmarshal(r.Value, &s.run); err != nil {
			e.d.Log.Warn("workflows: ignoring a run that does not decode", "key", r.Key, "err", err)
			continue
		}
		s.key = ds.RawKey(r.Key)
		out = append(out, s)
	}
	return out, nil
}

// runDue attempts every pending run whose time has come, oldest change
// first.
func (e *Engine) runDue(ctx context.Context) error {
	runs, err := e.list(ctx, pendingRoot)
	if err != nil {
		return err
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].Payload.Time.Before(runs[j].Payload.Time) })
	for _, s := range runs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r := e.rule(s.Rule)
		if r == nil || s.NextTry.After(e.d.Now()) {
			continue // a rule no longer configured waits for it to come back
		}
		if err := e.attempt(ctx, r, s); err != nil {
			return err
		}
	}
	return nil
}

// attempt runs one pending run once and records the outcome.
func (e *Engine) attempt(ctx context.Context, r *Rule, s stored) error {
	s.Attempts++
	s.Payload.Attempt = s.Attempts
	if err := put(ctx, e.d.DS, s.key, &s.run); err != nil {
		return err
	}
	log := e.d.Log.With("workflow", r.Name, "collection", s.Payload.Collection, "id", s.Payload.ID, "key", s.Payload.IdempotencyKey, "attempt", s.Attempts)
	actErr := deliver(ctx, r, s.Payload)
	if actErr != nil && ctx.Err() != nil {
		return ctx.Err() // shutting down: the run stays pending
	}
	b, err := e.d.DS.Batch(ctx)
	if err != nil {
		return err
	}
	now := e.d.Now()
	rel := strings.TrimPrefix(s.key.String(), pendingRoot.String())
	switch {
	case actErr == nil:
		s.LastError, s.Finished = "", now
		if err := put(ctx, b, ds.RawKey(doneRoot.String()+rel), &s.run); err != nil {
			return err
		}
	case s.Attempts >= r.Attempts:
		s.LastError, s.Finished = actErr.Error(), now
		if err := put(ctx, b, ds.RawKey(failedRoot.String()+rel), &s.run); err != nil {
			return err
		}
		log.Warn("workflow failed: given up (ferry workflows retry)", "err", actErr)
	default:
		s.LastError, s.NextTry = actErr.Error(), now.Add(backoff(s.Attempts))
		log.Warn("workflow failed: tried again later", "err", actErr, "next", s.NextTry)
		if err := put(ctx, b, s.key, &s.run); err != nil {
			return err
		}
		return b.Commit(ctx)
	}
	if err := b.Delete(ctx, s.key); err != nil {
		return err
	}
	if err := b.Commit(ctx); err != nil {
		if actErr == nil {
			log.Warn("workflow ran, but its success could not be recorded: it runs again with the same key", "err", err)
		}
		return fmt.Errorf("record run: %w", err)
	}
	if actErr == nil {
		log.Info("workflow ran")
	}
	return nil
}

// backoff is the wait after the n-th failed attempt: 1s, 2s, 4s... up to
// 5 minutes.
func backoff(n int) time.Duration {
	d := time.Second << min(n-1, 20)
	return min(d, 5*time.Minute)
}

// Retry moves failed runs (all, a rule's, or one by key) back to pending;
// it returns how many.
func (e *Engine) Retry(ctx context.Context, rule, key string) (int, error) {
	runs, err := e.list(ctx, failedRoot)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range runs {
		if rule != "" && s.Rule != rule || key != "" && s.Payload.IdempotencyKey != key {
			continue
		}
		b, err := e.d.DS.Batch(ctx)
		if err != nil {
			return n, err
		}
		s.Attempts, s.NextTry, s.Finished = 0, e.d.Now(), time.Time{}
		rel := strings.TrimPrefix(s.key.String(), failedRoot.String())
		if err := put(ctx, b, ds.RawKey(pendingRoot.String()+rel), &s.run); err != nil {
			return n, err
		}
		if err := b.Delete(ctx, s.key); err != nil {
			return n, err
		}
		if err := b.Commit(ctx); err != nil {
			return n, fmt.Errorf("retry: %w", err)
		}
		n++
	}
	if n == 0 && (rule != "" || key != "") {
		return 0, fmt.Errorf("retry: no failed run of workflow %q with key %q: %w", rule, key, crdt.ErrNotFound)
	}
	e.Changed()
	return n, nil
}

// Counts returns how many runs are pending and failed.
func (e *Engine) Counts(ctx context.Context) (pending, failed int, err error) {
	if pending, err = e.count(ctx, pendingRoot); err != nil {
		return 0, 0, err
	}
	failed, err = e.count(ctx, failedRoot)
	return pending, failed, err
}

func (e *Engine) count(ctx context.Context, root ds.Key) (int, error) {
	res, err := e.d.DS.Query(ctx, query.Query{Prefix: root.String() + "/", KeysOnly: true})
	if err != nil {
		return 0, err
	}
	defer res.Close()
	n := 0
	for r := range res.Next() {
		if r.Error != nil {
			return 0, r.Error
		}
		n++
	}
	return n, nil
}

var errNoAction = errors.New("no command or url")
