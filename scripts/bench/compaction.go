package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-datastore/query"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// The compaction benchmark (issue 13): an office imports N contacts, gets
// K single-field edits per contact, and compacts (node.Compact: a new
// epoch seeded with the visible writes, the old one dropped, badger
// flattened and its value log collected). Measured at each point, the same
// way: the store's disk size and a Store.Get median. Then fresh laptops
// catch up with the compacted office, against fresh laptops catching up
// with an office that only imported the same contacts (a copy of the
// office's data dir taken right after the import).

// Node names of the compaction benchmark.
const (
	compOffice = "compaction-office"
	// compBase is a copy of the office's data dir right after the import:
	// the import-only office the baseline catch-ups use.
	compBase = "compaction-base"
	// compKeep0 is a copy of the office's data dir after the edits,
	// compacted with history_keep 0.
	compKeep0 = "compaction-office-keep0"

	compFreshImport     = "compaction-fresh-import"
	compCleanImport     = "compaction-clean-import"
	compFreshCompacted  = "compaction-fresh-compacted"
	compCleanCompacted  = "compaction-clean-compacted"
	compFreshHistory    = "compaction-fresh-history"
	compGetPasses       = 3
	compEditModeImport  = "import"
	compEditModePut     = "put"
	compactionEditModes = compEditModeImport + " or " + compEditModePut
)

// storePoint is what was measured of an office's store at one point: its
// disk size (the node stopped, then the store reopened alone, flattened
// and value-log collected as node.Compact does, and closed again), the
// keys it holds by kind, and the Store.Get latencies of the node started
// again on it.
type storePoint struct {
	disk    storeSizes
	gc      datadir.GCResult
	reclaim time.Duration // opening the stopped store and its Reclaim
	keys    keyBreakdown
	get     timings
}

// compactRun is one compaction of an office.
type compactRun struct {
	keep int
	// compact is crdt.Store.Compact's duration (node.Compact's with
	// --compaction-node-compact, then res is its report), close the node's
	// Close right after it.
	compact, close time.Duration
	res            apijson.CompactResult
	// rep is the store's own report (crdt.EpochReport, through OnEpoch):
	// the new epoch seeded, switched to and the old one dropped, without
	// the node's Reclaim.
	rep           crdt.EpochReport
	before, after crdt.HistorySize
	// switched: from the Compact call until the store logged that it moved
	// to the new epoch (cut, seed, carry, archive, switch); dropped: from
	// then until its OnEpoch hook ran (the old epoch's keys and blocks
	// dropped).
	switched, dropped time.Duration
	point             storePoint
}

// benchCompaction: see the comment at the top of this file.
func (e *env) benchCompaction(ctx context.Context) (res result, err error) {
	c := e.cfg
	n, k := c.compactionRecords, c.compactionEdits
	recs := e.contacts(n)
	sample := compactionSample(recs, c.compactionGetSample, c.seed)
	officeDir := filepath.Join(e.root, compOffice)
	fresh := []string{compFreshImport, compCleanImport, compFreshCompacted, compCleanCompacted}
	if c.compactionHistoryCatchup {
		fresh = append(fresh, compFreshHistory)
	}
	want := make(map[string]map[string]any, len(recs))
	for _, r := range recs {
		m := make(map[string]any, len(r.Fields))
		for f, v := range r.Fields {
			m[f] = v
		}
		want[r.ID] = m
	}

	// 1. The import.
	e.progress("compaction: office imports %d contacts (Store.Import, network off; %d fresh nodes enrolled first)", n, len(fresh))
	var importTook time.Duration
	var importDeltas int
	// Store.Get on the node that just wrote, before it is stopped (badger
	// not flattened): right after the import and right after the edits.
	var getImportLive, getEditedLive timings
	err = e.withNode(ctx, nodeSpec{name: compOffice, role: node.RoleOffice}, func(nd *node.Node) error {
		st := nd.Store().Everyone()
		if err := e.applySchema(ctx, st); err != nil {
			return err
		}
		if err := e.enrol(ctx, nd, fresh...); err != nil {
			return err
		}
		stop := e.profile("compaction-import")
		t0 := time.Now()
		r, err := importAll(ctx, st, recs)
		importTook = time.Since(t0)
		stop()
		if err != nil {
			return err
		}
		importDeltas = r.Deltas
		if err := checkState(ctx, st, want); err != nil {
			return err
		}
		getImportLive, err = getTimings(ctx, st, sample, compGetPasses)
		return err
	})
	if err != nil {
		return res, err
	}
	e.progress("compaction: imported in %s (%d deltas)", fmtDur(importTook), importDeltas)
	imported, err := e.measurePoint(ctx, "after the import", compOffice, nil, sample, nil)
	if err != nil {
		return res, err
	}
	if _, err := copyDir(officeDir, filepath.Join(e.root, compBase)); err != nil {
		return res, fmt.Errorf("copy the office after the import: %w", err)
	}
	wantImport := make(map[string]map[string]any, len(want))
	for id, m := range want {
		wantImport[id] = maps.Clone(m)
	}

	// 2. The edits.
	mode := c.compactionEditMode
	e.progress("compaction: %d single-field edits per contact, %d in all (%s)", k, k*n, editModeNote(mode))
	var editsTook time.Duration
	var editDeltas int
	var history crdt.HistorySize
	err = e.withNode(ctx, nodeSpec{name: compOffice, role: node.RoleOffice}, func(nd *node.Node) error {
		st := nd.Store().Everyone()
		stop := e.profile("compaction-edits")
		var err error
		editsTook, editDeltas, err = e.compactionEditRounds(ctx, st, recs, k, mode, want)
		stop()
		if err != nil {
			return err
		}
		if history, err = st.HistorySize(ctx); err != nil {
			return err
		}
		if err := checkState(ctx, st, want); err != nil {
			return err
		}
		getEditedLive, err = getTimings(ctx, st, sample, compGetPasses)
		return err
	})
	if err != nil {
		return res, err
	}
	e.progress("compaction: %d edits in %s (%s, %d deltas); history %d writes, %d visible",
		k*n, fmtDur(editsTook), fmtRate(rate(k*n, editsTook), "edits/s"), editDeltas, history.Writes, history.Visible)
	edited, err := e.measurePoint(ctx, "after the edits", compOffice, nil, sample, nil)
	if err != nil {
		return res, err
	}
	if _, err := copyDir(officeDir, filepath.Join(e.root, compKeep0)); err != nil {
		return res, fmt.Errorf("copy the office after the edits: %w", err)
	}

	// 3. Compaction, history_keep 10 (the default) and 0.
	keep10, err := e.compactOffice(ctx, compOffice, crdt.DefaultOptions().HistoryKeep, want, sample)
	if err != nil {
		return res, err
	}
	var histRun catchUpRun
	if c.compactionHistoryCatchup {
		// For information: a fresh node catching up on the whole history,
		// on the copy before it compacts.
		e.progress("compaction (info): fresh node catching up on the uncompacted history (%d edits), from a copy of the office", k*n)
		histRun, err = e.compactionCatchUp(ctx, compKeep0, compFreshHistory, want, crdt.Epoch{}, nil)
		if err != nil {
			return res, err
		}
	}
	keep0, err := e.compactOffice(ctx, compKeep0, 0, want, sample)
	if err != nil {
		return res, err
	}

	// Store.Get once more on the three stores, interleaved, so that the
	// machine's load falls on all three alike: the import-only copy, the
	// office (history_keep 10) and the copy compacted with history_keep 0.
	e.progress("compaction: Store.Get on the import-only copy and the two compacted offices, interleaved (%d rounds)", compGetRounds)
	gets, err := e.interleavedGets(ctx, sample, []string{compBase, compOffice, compKeep0}, []int{-1, 10, 0})
	if err != nil {
		return res, err
	}

	// 4. Fresh nodes: the import-only office (baseline), then the
	// compacted one.
	epoch := keep10.rep.Epoch
	e.progress("compaction: fresh node catch-up (bulk block sync) and clean sync from the import-only office (baseline)")
	baseRun, err := e.compactionCatchUp(ctx, compBase, compFreshImport, wantImport, crdt.Epoch{}, nil)
	if err != nil {
		return res, err
	}
	baseClean, err := e.compactionCleanSync(ctx, compBase, compCleanImport, wantImport, crdt.Epoch{})
	if err != nil {
		return res, err
	}
	e.progress("compaction: fresh node catch-up and clean sync from the compacted office (epoch %s)", epoch)
	var adopted []crdt.EpochReport
	var mu sync.Mutex
	compRun, err := e.compactionCatchUp(ctx, compOffice, compFreshCompacted, want, epoch, func(r crdt.EpochReport) {
		mu.Lock()
		adopted = append(adopted, r)
		mu.Unlock()
	})
	if err != nil {
		return res, err
	}
	compClean, err := e.compactionCleanSync(ctx, compOffice, compCleanCompacted, want, epoch)
	if err != nil {
		return res, err
	}

	return e.compactionResult(compactionOutcome{
		n: n, k: k, mode: mode, sample: len(sample),
		importTook: importTook, importDeltas: importDeltas,
		editsTook: editsTook, editDeltas: editDeltas, history: history,
		imported: imported, edited: edited, keep10: keep10, keep0: keep0,
		baseRun: baseRun, compRun: compRun, histRun: histRun, histDone: c.compactionHistoryCatchup,
		baseClean: baseClean, compClean: compClean, gets: gets, getImportLive: getImportLive, getEditedLive: getEditedLive, adopted: adopted, nodeCompact: c.compactionNodeCompact,
	}), nil
}

// ignoredNote renders operations ignored by reason.
func ignoredNote(by map[string]int) string {
	if len(by) == 0 {
		return "no operation ignored"
	}
	reasons := slices.Sorted(maps.Keys(by))
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%d operations ignored: %s", by[r], r)
	}
	return strings.Join(parts, ", ")
}

// phases renders the two parts of a store's compaction.
func phases(cr compactRun) string {
	if cr.switched == 0 {
		return "no phase times: the store's log line was not seen"
	}
	return fmt.Sprintf("from the call until the store logged \"moved to a new epoch\", i.e. DAG walk for the cut, seed, manifest, carry, archive and switch: %s; from then until its OnEpoch hook ran, i.e. dropping epoch 0's keys and blocks: %s",
		fmtDur(cr.switched), fmtDur(cr.dropped))
}

func compactHow(nodeCompact bool) string {
	if nodeCompact {
		return "node.Compact on the node (network off; what `POST /v1/compact` and `ferry compact` run: the store's compaction, then badger flattened and its value log collected), timed as its caller sees it"
	}
	return "crdt.Store.Compact on the node (network off; --compaction-node-compact=false), then the node closed (its Close waits for the Reclaim the node's OnEpoch hook starts) and the stopped store given the Reclaim node.Compact would run; the time counted is the sum of the three"
}

func editModeNote(mode string) string {
	if mode == compEditModePut {
		return "Store.Put, one write, one delta and one fsync per edit (what `ferry put` and PUT /v1/records do)"
	}
	return "Store.Import rounds (--compaction-edit-mode import): one edit of every contact per round, batch-signed deltas of up to 400 writes"
}

// withNode starts the node of spec, runs fn and closes the node.
func (e *env) withNode(ctx context.Context, spec nodeSpec, fn func(*node.Node) error) (err error) {
	nd, err := e.startNode(ctx, spec)
	if err != nil {
		return err
	}
	defer closeNode(nd, &err)
	return fn(nd)
}

// compactionSample picks up to n contact ids (seeded).
func compactionSample(recs []crdt.ImportRecord, n int, seed uint64) []string {
	r := newRand(seed + 29)
	perm := r.Perm(len(recs))
	ids := make([]string, min(n, len(recs)))
	for i := range ids {
		ids[i] = recs[perm[i]].ID
	}
	return ids
}

// compactionEditRounds makes k single-field edits of every contact, in k
// rounds each editing every contact once (a random field among
// first_name, phone, stage, amount, active, a random value different from
// the current one: edits()'s semantics), and updates want. mode import:
// one Store.Import per round, one single-field record per contact (the
// store's batched write: deltas of up to BatchOps writes, each synced);
// mode put: one Store.Put per edit (one delta and one fsync each). It
// returns the time spent writing and the deltas committed.
func (e *env) compactionEditRounds(ctx context.Context, st *crdt.Store, recs []crdt.ImportRecord, k int, mode string, want map[string]map[string]any) (took time.Duration, deltas int, err error) {
	r := newRand(e.cfg.seed + 13)
	every := max(1, k/20)
	var took0 time.Duration
	for round := range k {
		if round > 0 && round%every == 0 {
			e.progress("compaction: %d of %d edit rounds done, last %d at %s; %d deltas so far", round, k, every,
				fmtRate(rate(every*len(recs), took-took0), "edits/s"), deltas)
			took0 = took
		}
		eds := make([]edit, len(recs))
		for i, rec := range recs {
			f := pick(r, editFields)
			v := editValue(r, f)
			for v == want[rec.ID][f] {
				v = editValue(r, f)
			}
			want[rec.ID][f] = v
			eds[i] = edit{ID: rec.ID, Field: f, Value: v}
		}
		switch mode {
		case compEditModePut:
			t0 := time.Now()
			for i, ed := range eds {
				res, err := st.Put(ctx, contactsCollection, ed.ID, map[string]any{ed.Field: ed.Value})
				if err != nil {
					return took + time.Since(t0), deltas, fmt.Errorf("round %d, edit %d (%s.%s): %w", round, i, ed.ID, ed.Field, err)
				}
				if len(res.Fields) != 1 {
					return took + time.Since(t0), deltas, fmt.Errorf("round %d, edit %d (%s.%s=%v) wrote fields %v, want exactly one", round, i, ed.ID, ed.Field, ed.Value, res.Fields)
				}
				deltas++
			}
			took += time.Since(t0)
		default:
			irecs := make([]crdt.ImportRecord, len(eds))
			for i, ed := range eds {
				irecs[i] = crdt.ImportRecord{Line: i + 1, ID: ed.ID, Fields: map[string]any{ed.Field: ed.Value}}
			}
			t0 := time.Now()
			res, err := st.Import(ctx, contactsCollection, irecs, nil)
			took += time.Since(t0)
			if err != nil {
				return took, deltas, fmt.Errorf("round %d: %w", round, err)
			}
			if res.Written != len(eds) {
				return took, deltas, fmt.Errorf("round %d: import wrote %d of %d records", round, res.Written, len(eds))
			}
			deltas += res.Deltas
		}
	}
	return took, deltas, nil
}

// measurePoint measures the stopped office dir name: its store reopened
// alone, flattened and value-log collected (datadir.GC.Reclaim, what
// node.Compact runs), its keys counted by kind, closed, and its files
// summed; then the node started again (network off; spec changed by tweak)
// and Store.Get timed on the sample, then check (if set) run on it.
func (e *env) measurePoint(ctx context.Context, what, name string, tweak func(*nodeSpec), sample []string, check func(*node.Node) error) (p storePoint, err error) {
	dir := filepath.Join(e.root, name)
	if p.gc, p.reclaim, p.keys, err = e.reclaimStopped(ctx, dir); err != nil {
		return p, fmt.Errorf("%s: %w", what, err)
	}
	if p.disk, err = storeSize(filepath.Join(dir, datadir.StoreDir)); err != nil {
		return p, err
	}
	spec := nodeSpec{name: name, role: node.RoleOffice}
	if tweak != nil {
		tweak(&spec)
	}
	err = e.withNode(ctx, spec, func(nd *node.Node) error {
		var err error
		if p.get, err = getTimings(ctx, nd.Store().Everyone(), sample, compGetPasses); err != nil {
			return err
		}
		if check != nil {
			return check(nd)
		}
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("%s: %w", what, err)
	}
	e.progress("compaction: %s: store %s (reclaimed in %s); Store.Get p50 %s, p90 %s (%d reads)", what, p.disk, fmtDur(p.reclaim), fmtDur(p.get.p(50)), fmtDur(p.get.p(90)), len(p.get.lat))
	return p, nil
}

// reclaimStopped opens the store of a stopped data dir, runs what
// node.Compact runs to free the disk (datadir.GC.Reclaim: badger's LSM
// tree flattened into one level, then value-log GC rounds), counts its
// keys by kind, and closes it. took: opening the store and Reclaim.
func (e *env) reclaimStopped(ctx context.Context, dir string) (r datadir.GCResult, took time.Duration, kb keyBreakdown, err error) {
	t0 := time.Now()
	d, err := datadir.OpenStore(dir)
	if err != nil {
		return r, 0, kb, err
	}
	defer closeDatastore(d, &err)
	// Only the Reclaim below: no run after writes, idle time or interval.
	gc := datadir.StartGC(datadir.NewGuard(d, e.log), dir, datadir.GCOptions{Every: math.MaxUint64, Idle: 1000 * time.Hour, Interval: 1000 * time.Hour, Logger: e.log})
	r, err = gc.Reclaim(ctx)
	took = time.Since(t0)
	if cerr := gc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return r, took, kb, err
	}
	kb, err = countKeys(ctx, d)
	return r, took, kb, err
}

// compGetRounds is how many times interleavedGets starts each node.
const compGetRounds = 3

// interleavedGets times Store.Get on the sample on each of the stopped
// office dirs names, compGetRounds rounds each starting every node in turn
// (network off; keeps[i] >= 0 sets its history_keep) for one warm-up pass
// and one timed pass. It returns each node's timed reads.
func (e *env) interleavedGets(ctx context.Context, sample []string, names []string, keeps []int) ([]timings, error) {
	out := make([]timings, len(names))
	for range compGetRounds {
		for i, name := range names {
			spec := nodeSpec{name: name, role: node.RoleOffice}
			if keeps[i] >= 0 {
				spec.historyKeep = &keeps[i]
			}
			err := e.withNode(ctx, spec, func(nd *node.Node) error {
				t, err := getTimings(ctx, nd.Store().Everyone(), sample, 1)
				out[i].lat = append(out[i].lat, t.lat...)
				out[i].total += t.total
				return err
			})
			if err != nil {
				return nil, err
			}
		}
	}
	for i := range out {
		slices.Sort(out[i].lat)
		e.progress("compaction: interleaved Store.Get on %s: p50 %s, p90 %s", names[i], fmtDur(out[i].p(50)), fmtDur(out[i].p(90)))
	}
	return out, nil
}

// getTimings reads every id of the sample once (warm-up, not timed), then
// passes more times, each Store.Get timed.
func getTimings(ctx context.Context, st *crdt.Store, ids []string, passes int) (t timings, err error) {
	for _, id := range ids {
		if _, err := st.Get(ctx, contactsCollection, id); err != nil {
			return t, fmt.Errorf("get %s: %w", id, err)
		}
	}
	t.lat = make([]time.Duration, 0, passes*len(ids))
	t0 := time.Now()
	for range passes {
		for _, id := range ids {
			s := time.Now()
			_, err := st.Get(ctx, contactsCollection, id)
			t.lat = append(t.lat, time.Since(s))
			if err != nil {
				return t, fmt.Errorf("get %s: %w", id, err)
			}
		}
	}
	t.total = time.Since(t0)
	slices.Sort(t.lat)
	return t, nil
}

// compactOffice compacts the stopped office dir name with history_keep
// keep: the node started (network off, role office), crdt.Store.Compact
// timed (or node.Compact, with --compaction-node-compact), the node closed
// (timed: Close waits for the Flatten the node's OnEpoch starts), then the
// point measured (its Reclaim timed too) and the history size, epoch and
// contacts checked on the node started again.
func (e *env) compactOffice(ctx context.Context, name string, keep int, want map[string]map[string]any, sample []string) (cr compactRun, err error) {
	cr.keep = keep
	var mu sync.Mutex
	var reps []crdt.EpochReport
	var epochAt time.Time
	watch := &logWatch{Handler: e.log.Handler(), msg: "moved to a new epoch", at: &loggedAt{}}
	spec := nodeSpec{name: name, role: node.RoleOffice, historyKeep: &keep, logger: slog.New(watch), onEpoch: func(r crdt.EpochReport) {
		mu.Lock()
		reps = append(reps, r)
		epochAt = time.Now()
		mu.Unlock()
	}}
	how := "crdt.Store.Compact"
	if e.cfg.compactionNodeCompact {
		how = "node.Compact"
	}
	e.progress("compaction: %s compacts (%s, history_keep %d)", name, how, keep)
	nd, err := e.startNode(ctx, spec)
	if err != nil {
		return cr, err
	}
	st := nd.Store().Everyone()
	if cr.before, err = st.HistorySize(ctx); err != nil {
		_ = nd.Close()
		return cr, err
	}
	stop := e.profile(name + "-compact")
	t0 := time.Now()
	var rep *crdt.EpochReport
	if e.cfg.compactionNodeCompact {
		cr.res, err = nd.Compact(ctx)
	} else {
		rep, err = st.Compact(ctx)
	}
	cr.compact = time.Since(t0)
	t1 := time.Now()
	if cerr := nd.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close node %s: %w", name, cerr)
	}
	cr.close = time.Since(t1)
	stop()
	if err != nil {
		return cr, fmt.Errorf("compact %s: %w", name, err)
	}
	mu.Lock()
	if len(reps) != 1 {
		mu.Unlock()
		return cr, fmt.Errorf("compact %s: %d epoch reports, want 1", name, len(reps))
	}
	cr.rep = reps[0]
	if sw := watch.at.get(); !sw.IsZero() {
		cr.switched, cr.dropped = sw.Sub(t0), epochAt.Sub(sw)
	}
	mu.Unlock()
	if rep != nil {
		// The report OnEpoch is given has no Took (Store.Compact sets it
		// after switchEpoch called OnEpoch): the returned one has.
		cr.rep = *rep
	} else if !epochAt.IsZero() {
		cr.rep.Took = epochAt.Sub(t0) // node.Compact: its store part
	}
	e.progress("compaction: %s: %s took %s (the store's report: %s), node closed in %s: epoch %s, %d writes seeded (%d records), %d carried, %d archived, %d keys and %d blocks dropped",
		name, how, fmtDur(cr.compact), fmtDur(cr.rep.Took), fmtDur(cr.close), cr.rep.Epoch, cr.rep.Seeded, cr.rep.Records, cr.rep.Carried, cr.rep.Archived, cr.rep.DroppedKeys, cr.rep.DroppedBlocks)
	cr.point, err = e.measurePoint(ctx, fmt.Sprintf("after compaction (history_keep %d)", keep), name, func(s *nodeSpec) { s.historyKeep = &keep }, sample,
		func(nd *node.Node) error {
			st := nd.Store().Everyone()
			if got := st.Epoch(); got != cr.rep.Epoch {
				return fmt.Errorf("compact %s: the store is in epoch %s after a restart, want %s", name, got, cr.rep.Epoch)
			}
			var err error
			if cr.after, err = st.HistorySize(ctx); err != nil {
				return err
			}
			return checkState(ctx, st, want)
		})
	return cr, err
}

// logWatch is a slog handler that records when a message was logged (at
// Info or above) and passes on what its inner handler takes.
type logWatch struct {
	slog.Handler
	msg string
	at  *loggedAt
}

type loggedAt struct {
	mu sync.Mutex
	t  time.Time
}

func (l *loggedAt) get() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t
}

func (w *logWatch) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || w.Handler.Enabled(ctx, l)
}

func (w *logWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == w.msg {
		w.at.mu.Lock()
		w.at.t = r.Time
		w.at.mu.Unlock()
	}
	if w.Handler.Enabled(ctx, r.Level) {
		return w.Handler.Handle(ctx, r)
	}
	return nil
}

func (w *logWatch) WithAttrs(as []slog.Attr) slog.Handler {
	return &logWatch{Handler: w.Handler.WithAttrs(as), msg: w.msg, at: w.at}
}

func (w *logWatch) WithGroup(name string) slog.Handler {
	return &logWatch{Handler: w.Handler.WithGroup(name), msg: w.msg, at: w.at}
}

// took is the compaction's time: the store's compaction, the node's close
// (waiting for the Flatten its OnEpoch started), and the Reclaim of the
// stopped store.
//
// With node.Compact (nodeCompact) it is node.Compact's own time: the
// store's compaction and the node's Reclaim (what a caller of `POST
// /v1/compact` waits for); the second Reclaim that the node's OnEpoch hook
// runs in the background, which the Close waits for, is not counted.
func (cr compactRun) took(nodeCompact bool) time.Duration {
	if nodeCompact {
		return cr.compact
	}
	return cr.compact + cr.close + cr.point.reclaim
}

// tookCell renders the compaction time and its parts.
func (cr compactRun) tookCell(nodeCompact bool) string {
	if nodeCompact {
		return fmt.Sprintf("%s (node.Compact: store %s, then its flatten and value-log GC %s)", fmtDur(cr.compact), fmtDur(cr.rep.Took), fmtDur(cr.compact-cr.rep.Took))
	}
	return fmt.Sprintf("%s (Store.Compact %s, flatten and GC %s)", fmtDur(cr.took(false)), fmtDur(cr.compact), fmtDur(cr.close+cr.point.reclaim))
}

// catchUpRun is a fresh node catching up with an office.
type catchUpRun struct {
	// heads: from the fresh node's start until its heads first equal the
	// office's (and it is in the office's epoch); sync: until its contacts
	// also show the office's (digest), converged.
	heads, sync        time.Duration
	headsEq, converged bool
	bulk               int64 // blocks fetched in bulk
	// listed: contacts the fresh node lists at the end; ignored: the
	// operations it does not show, by reason (crdt.Store.Ignored).
	listed  int
	ignored map[string]int
}

// compactionCatchUpGrace is how long a fresh node whose heads equal the
// office's is given to show the office's contacts too before it is
// reported as not converged.
const compactionCatchUpGrace = 10 * time.Second

// compactionCatchUp starts the office dir name on the network and times a
// fresh node (bulk block sync, the office its only peer) until it is in
// epoch ep with the office's heads and contacts (digest) (as the catchup
// benchmark's syncFresh, polled every pollEvery), then checks its contacts
// against want. A fresh node whose heads equal the office's but whose
// contacts still differ after compactionCatchUpGrace is reported as not
// converged, with what it ignores. onEpoch is told of its epoch changes.
func (e *env) compactionCatchUp(ctx context.Context, name, freshName string, want map[string]map[string]any, ep crdt.Epoch, onEpoch func(crdt.EpochReport)) (r catchUpRun, err error) {
	office, err := e.startOffice(ctx, name)
	if err != nil {
		return r, err
	}
	defer closeNode(office, &err)
	stop := e.profile(freshName)
	defer stop()
	t0 := time.Now()
	b, err := e.startNode(ctx, nodeSpec{name: freshName, network: true, peers: office.Addrs()[:1], founder: compOffice, onEpoch: onEpoch})
	if err != nil {
		return r, err
	}
	defer closeNode(b, &err)
	wctx, cancel := context.WithTimeout(ctx, e.cfg.catchupTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	lastReport := time.Now()
	status := ""
	for {
		report := time.Since(lastReport) >= progressEvery
		ok, st, err := converged(ctx, office, b, report || r.headsEq)
		if err != nil {
			return r, err
		}
		status = st
		inEpoch := b.Store().Everyone().Epoch() == ep
		headsEq := inEpoch && slices.Equal(sortedHeads(office.Store().Everyone().Stats(ctx).Heads), sortedHeads(b.Store().Everyone().Stats(ctx).Heads))
		switch {
		case ok && inEpoch:
			r.sync, r.converged = time.Since(t0), true
			if !r.headsEq {
				r.heads, r.headsEq = r.sync, true
			}
		case headsEq && !r.headsEq:
			r.heads, r.headsEq = time.Since(t0), true
		case !headsEq:
			r.headsEq = false // the office's heads moved on (the fresh node's own writes)
		}
		if r.converged {
			stop()
			e.progress("%s: converged after %s (%s)", freshName, fmtDur(r.sync), status)
			break
		}
		if r.headsEq && time.Since(t0)-r.heads >= compactionCatchUpGrace {
			r.sync = time.Since(t0)
			stop()
			e.progress("%s: heads equal after %s, but the contacts still differ %s later: %s", freshName, fmtDur(r.heads), compactionCatchUpGrace, status)
			break
		}
		if report {
			lastReport = time.Now()
			e.progress("%s: %s, not converged: %s; fresh node in epoch %s", freshName, fmtDur(time.Since(t0)), status, b.Store().Everyone().Epoch())
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			r.sync = time.Since(t0)
			stop()
			e.progress("%s: gave up after %s: %s", freshName, fmtDur(r.sync), status)
			return r, e.describeFresh(ctx, b, &r)
		case <-tick.C:
		}
	}
	if err := e.describeFresh(ctx, b, &r); err != nil {
		return r, err
	}
	if !r.converged {
		return r, nil
	}
	if got := b.Store().Everyone().Epoch(); got != ep {
		return r, fmt.Errorf("%s: fresh node in epoch %s, want %s", freshName, got, ep)
	}
	return r, checkState(ctx, b.Store().Everyone(), want)
}

// describeFresh records what a fresh node shows: blocks fetched in bulk,
// contacts listed, operations ignored by reason.
func (e *env) describeFresh(ctx context.Context, b *node.Node, r *catchUpRun) error {
	r.bulk = b.Status(ctx).BlocksFetched
	if _, n, err := digestContacts(ctx, b.Store().Everyone()); err != nil {
		return err
	} else {
		r.listed = n
	}
	ig, err := b.Store().Everyone().Ignored(ctx)
	if err != nil {
		return err
	}
	r.ignored = map[string]int{}
	for _, op := range ig {
		r.ignored[op.Reason]++
	}
	return nil
}

// startOffice starts the office dir name on the network (loopback TCP) and
// waits for its first digest (it reads the whole store), so that it does
// not compete with a fresh node's catch-up.
func (e *env) startOffice(ctx context.Context, name string) (*node.Node, error) {
	office, err := e.startNode(ctx, nodeSpec{name: name, network: true, role: node.RoleOffice, founder: compOffice})
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 5*time.Minute, func() bool { return office.Status(ctx).Digest != "" }); err != nil {
		_ = office.Close()
		return nil, fmt.Errorf("%s digest: %w", name, err)
	}
	return office, nil
}

// cleanRun is a clean sync of a fresh node from an office.
type cleanRun struct {
	res  node.CleanSyncResult
	wall time.Duration
	// sent: bytes the office sent the new node (its per-peer counter).
	sent int64
	disk sizes // the new node's data dir afterwards
}

// compactionCleanSync starts the office dir name on the network and times
// node.CleanSync of a fresh node from it; the fresh node is then started
// (network off) and checked: epoch ep, same heads, the expected contacts.
func (e *env) compactionCleanSync(ctx context.Context, name, freshName string, want map[string]map[string]any, ep crdt.Epoch) (r cleanRun, err error) {
	office, err := e.startOffice(ctx, name)
	if err != nil {
		return r, err
	}
	defer closeNode(office, &err)
	cctx, cancel := context.WithTimeout(ctx, e.cfg.cleanTimeout)
	defer cancel()
	stop := e.profile(freshName)
	t0 := time.Now()
	r.res, err = e.cleanSync(cctx, nodeSpec{name: freshName, network: true, peers: office.Addrs()[:1], founder: compOffice}, nil)
	r.wall = time.Since(t0)
	stop()
	if err != nil {
		return r, err
	}
	freshID, err := e.peerID(freshName)
	if err != nil {
		return r, err
	}
	if r.sent, _, err = peerBytes(ctx, office, freshID); err != nil {
		return r, err
	}
	oh, err := office.Store().Everyone().Heads(ctx)
	if err != nil {
		return r, err
	}
	err = e.withNode(ctx, nodeSpec{name: freshName, founder: compOffice}, func(fresh *node.Node) error {
		if got := fresh.Store().Everyone().Epoch(); got != ep {
			return fmt.Errorf("%s: clean-synced node in epoch %s, want %s", freshName, got, ep)
		}
		fh, err := fresh.Store().Everyone().Heads(ctx)
		if err != nil {
			return err
		}
		if !slices.Equal(sortedHeads(fh), sortedHeads(oh)) {
			return fmt.Errorf("%s: after clean sync the heads %v differ from the office's %v", freshName, sortedHeads(fh), sortedHeads(oh))
		}
		return checkState(ctx, fresh.Store().Everyone(), want)
	})
	if err != nil {
		return r, err
	}
	if r.disk, err = dirSize(filepath.Join(e.root, freshName)); err != nil {
		return r, err
	}
	e.progress("compaction: %s: clean sync took %s (%d entries, %s; then %d blocks); %s sent",
		freshName, fmtDur(r.res.Took), r.res.Entries, fmtBytes(r.res.Bytes), r.res.Blocks, fmtBytes(r.sent))
	return r, nil
}

// keyBreakdown counts a store's keys and their bytes (key + value) by kind.
type keyBreakdown map[string]*keyAgg

type keyAgg struct {
	count       int
	keys, value int64
}

func (kb keyBreakdown) total() (count int, bytes int64) {
	for _, a := range kb {
		count += a.count
		bytes += a.keys + a.value
	}
	return count, bytes
}

// format renders the kinds by bytes per record, largest first.
func (kb keyBreakdown) format(n int) string {
	kinds := make([]string, 0, len(kb))
	for k := range kb {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		a, b := kb[kinds[i]], kb[kinds[j]]
		if x, y := a.keys+a.value, b.keys+b.value; x != y {
			return x > y
		}
		return kinds[i] < kinds[j]
	})
	count, bytes := kb.total()
	parts := []string{fmt.Sprintf("%s/record in %d keys (%.1f per record)", perRec(bytes, n), count, float64(count)/float64(n))}
	for _, k := range kinds {
		a := kb[k]
		parts = append(parts, fmt.Sprintf("%s %s (%.2f keys/record, %s key + %s value)", k, perRec(a.keys+a.value, n),
			float64(a.count)/float64(n), perRec(a.keys, n), perRec(a.value, n)))
	}
	return strings.Join(parts, "; ")
}

// countKeys reads every key and value of a store and adds them up by kind.
func countKeys(ctx context.Context, d interface {
	Query(context.Context, query.Query) (query.Results, error)
}) (keyBreakdown, error) {
	res, err := d.Query(ctx, query.Query{})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	kb := keyBreakdown{}
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		kind := keyKind(r.Key)
		a := kb[kind]
		if a == nil {
			a = &keyAgg{}
			kb[kind] = a
		}
		a.count++
		a.keys += int64(len(r.Key))
		a.value += int64(len(r.Value))
	}
	return kb, nil
}

// keyKind names the kind of a store key (see crdt/engine.go for
// go-ds-crdt's layout): the epoch's namespace, /ferry/crdt or
// /ferry/crdt-<epoch>, is left out.
func keyKind(k string) string {
	switch {
	case strings.HasPrefix(k, crdt.HistoryRoot):
		return "history archive"
	case strings.HasPrefix(k, crdt.EpochRoot):
		return "epoch markers"
	case strings.HasPrefix(k, datadir.BlockNamespace.String()+"/"):
		return "blocks"
	}
	ns := crdt.DefaultOptions().Namespace.String()
	if rest, ok := strings.CutPrefix(k, ns); ok && (strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, "-")) {
		if strings.HasPrefix(rest, "-") {
			i := strings.Index(rest, "/")
			if i < 0 {
				return "crdt other"
			}
			rest = rest[i:]
		}
		switch {
		case strings.HasPrefix(rest, "/s/k/") && strings.HasSuffix(rest, "/v"):
			return "value (s/k/…/v)"
		case strings.HasPrefix(rest, "/s/k/"):
			return "priority (s/k/…/p)"
		case strings.HasPrefix(rest, "/s/s/"):
			return "element (s/s)"
		case strings.HasPrefix(rest, "/s/t/"):
			return "tombstone (s/t)"
		case strings.HasPrefix(rest, "/b/"):
			return "processed mark (b)"
		case strings.HasPrefix(rest, "/h/"):
			return "head (h)"
		}
		return "crdt other"
	}
	parts := strings.SplitN(strings.TrimPrefix(k, "/"), "/", 3)
	return "/" + strings.Join(parts[:min(2, len(parts))], "/")
}

// compactionOutcome is everything benchCompaction measured.
type compactionOutcome struct {
	n, k, sample              int
	mode                      string
	importTook, editsTook     time.Duration
	importDeltas, editDeltas  int
	history                   crdt.HistorySize
	imported, edited          storePoint
	keep10, keep0             compactRun
	baseRun, compRun, histRun catchUpRun
	histDone, nodeCompact     bool
	baseClean, compClean      cleanRun
	adopted                   []crdt.EpochReport
	// gets: the interleaved Store.Get timings of the import-only copy,
	// the office compacted with history_keep 10 and the copy with 0.
	gets []timings
	// getImportLive, getEditedLive: Store.Get on the node that just
	// imported or edited, before it was stopped (badger not flattened).
	getImportLive, getEditedLive timings
}

func (e *env) compactionResult(o compactionOutcome) result {
	n, k := o.n, o.k
	base := o.imported.disk.total().bytes
	what := fmt.Sprintf("%d contacts, %d single-field edits each", n, k)
	diskCell := func(s storeSizes) string {
		return fmt.Sprintf("%s (%s/record)", fmtBytes(s.total().bytes), perRec(s.total().bytes, n))
	}
	importCell := diskCell(o.imported.disk) + " right after the import"
	getCell := func(p storePoint) string { return fmtDur(p.get.p(50)) }
	importGet := fmtDur(o.imported.get.p(50)) + " right after the import"
	ratioBytes := func(s storeSizes) string { return fmtRatio(float64(s.total().bytes), float64(base)) }
	ratioGet := func(p storePoint) string {
		return fmtRatio(float64(p.get.p(50)), float64(o.imported.get.p(50)))
	}
	runCell := func(r catchUpRun) string {
		switch {
		case r.converged:
			return fmt.Sprintf("%s (%d blocks fetched in bulk)", fmtDur(r.sync), r.bulk)
		case r.headsEq:
			return fmt.Sprintf("NOT CONVERGED: heads equal after %s, but it lists %d of %d contacts (%s) (%d blocks fetched in bulk)", fmtDur(r.heads), r.listed, n, ignoredNote(r.ignored), r.bulk)
		}
		return fmt.Sprintf("> %s (not converged; it lists %d of %d contacts)", fmtDur(r.sync), r.listed, n)
	}
	runRatio := func(a, b catchUpRun) string {
		switch {
		case a.converged && b.converged:
			return fmtRatio(float64(a.sync), float64(b.sync))
		case a.headsEq && b.converged:
			return fmtRatio(float64(a.heads), float64(b.sync)) + " (heads only: not converged)"
		}
		return "n/a (not converged)"
	}
	rows := []row{
		{fmt.Sprintf("compaction: store on disk after compaction, history_keep 10 (%s; reclaimed as node.Compact does, node stopped)", what),
			diskCell(o.keep10.point.disk), importCell, ratioBytes(o.keep10.point.disk)},
		{"compaction: store on disk after compaction, history_keep 0",
			diskCell(o.keep0.point.disk), importCell, ratioBytes(o.keep0.point.disk)},
		{"compaction: store on disk after the edits, before compaction (info)",
			diskCell(o.edited.disk), importCell, ratioBytes(o.edited.disk)},
		{fmt.Sprintf("compaction: Store.Get median after compaction, history_keep 10 (%d contacts × %d rounds, interleaved with the baseline)", o.sample, compGetRounds),
			fmtDur(o.gets[1].p(50)), fmtDur(o.gets[0].p(50)) + " (the import-only copy)", fmtRatio(float64(o.gets[1].p(50)), float64(o.gets[0].p(50)))},
		{"compaction: Store.Get median after compaction, history_keep 0 (the same)",
			fmtDur(o.gets[2].p(50)), fmtDur(o.gets[0].p(50)) + " (the import-only copy)", fmtRatio(float64(o.gets[2].p(50)), float64(o.gets[0].p(50)))},
		{fmt.Sprintf("compaction: Store.Get median after the edits, before compaction (info; %d contacts × %d passes, vs right after the import)", o.sample, compGetPasses),
			getCell(o.edited), importGet, ratioGet(o.edited)},
		{"compaction: Store.Get median right after the edits on the node that made them, before it stops (info; badger not flattened), vs right after the import (the same)",
			fmtDur(o.getEditedLive.p(50)), fmtDur(o.getImportLive.p(50)) + " right after the import, before the node stopped", fmtRatio(float64(o.getEditedLive.p(50)), float64(o.getImportLive.p(50)))},
		{"compaction: time to compact, history_keep 10 (the store: cut, seed, switch, carry, archive, drop; then badger flatten and value-log GC)",
			o.keep10.tookCell(o.nodeCompact),
			fmtDur(o.importTook) + " (Store.Import of the same contacts)", fmtRatio(float64(o.keep10.took(o.nodeCompact)), float64(o.importTook))},
		{"compaction: time to compact, history_keep 0",
			o.keep0.tookCell(o.nodeCompact),
			fmtDur(o.importTook) + " (Store.Import of the same contacts)", fmtRatio(float64(o.keep0.took(o.nodeCompact)), float64(o.importTook))},
		{"compaction: fresh node catch-up (bulk block sync) from the compacted office vs from an office that only imported the contacts",
			runCell(o.compRun), runCell(o.baseRun) + " (import-only office)", runRatio(o.compRun, o.baseRun)},
		{"compaction: clean sync of a fresh node from the compacted office vs from the import-only office",
			fmt.Sprintf("%s (%d entries, %s sent)", fmtDur(o.compClean.res.Took), o.compClean.res.Entries, fmtBytes(o.compClean.sent)),
			fmt.Sprintf("%s (%d entries, %s sent)", fmtDur(o.baseClean.res.Took), o.baseClean.res.Entries, fmtBytes(o.baseClean.sent)),
			fmtRatio(float64(o.compClean.res.Took), float64(o.baseClean.res.Took))},
	}
	if o.histDone {
		rows = append(rows, row{"compaction: fresh node catch-up on the uncompacted history (info) vs from the import-only office",
			runCell(o.histRun), runCell(o.baseRun), runRatio(o.histRun, o.baseRun)})
	}

	adopt := "no epoch change reported"
	if len(o.adopted) > 0 {
		a := o.adopted[len(o.adopted)-1]
		adopt = fmt.Sprintf("%d epoch change(s); the last to %s took %s (%d writes carried, %d facts, %d keys and %d blocks of its epoch 0 dropped)",
			len(o.adopted), a.Epoch, fmtDur(a.Took), a.Carried, a.Facts, a.DroppedKeys, a.DroppedBlocks)
	}
	compactNote := func(cr compactRun) string {
		how := fmt.Sprintf("crdt.Store.Compact took %s (its EpochReport.Took %s)", fmtDur(cr.compact), fmtDur(cr.rep.Took))
		if o.nodeCompact {
			how = fmt.Sprintf("node.Compact took %s (took_ms %d; its store part, until the store's OnEpoch hook ran, %s; store_bytes_before %s and store_bytes_after %s as it measured them, store open, after its Reclaim)",
				fmtDur(cr.compact), cr.res.TookMS, fmtDur(cr.rep.Took), fmtBytes(cr.res.StoreBefore), fmtBytes(cr.res.StoreAfter))
		}
		return fmt.Sprintf("history_keep %d: %s (%s), the node's Close right after it %s (it waits for the Reclaim the node's OnEpoch hook started), the stopped store's Reclaim %s (GC: %d rounds, value log %s -> %s); the time counted: %s. "+
			"Epoch %s: %d writes seeded (%d records), %d carried, %d facts, %d records archived, %d keys and %d blocks of epoch 0 dropped; the current epoch held %d writes for %d visible before, %d for %d after. "+
			"Store after: %s; keys: %s",
			cr.keep, how, phases(cr), fmtDur(cr.close), fmtDur(cr.point.reclaim), cr.point.gc.Rounds, fmtBytes(cr.point.gc.Before), fmtBytes(cr.point.gc.After), fmtDur(cr.took(o.nodeCompact)),
			cr.rep.Epoch, cr.rep.Seeded, cr.rep.Records, cr.rep.Carried, cr.rep.Facts, cr.rep.Archived, cr.rep.DroppedKeys, cr.rep.DroppedBlocks,
			cr.before.Writes, cr.before.Visible, cr.after.Writes, cr.after.Visible,
			cr.point.disk, cr.point.keys.format(n))
	}
	notes := []string{
		fmt.Sprintf("Compaction (issue 13): an office node (role office, network off, secured: it founds the network and signs every write) applies the crm schema, enrols the fresh nodes used below, and imports %d contacts with Store.Import (%s, %d deltas). "+
			"Then %d single-field edits per contact, %d in all, in %d rounds each editing every contact once (random field among first_name, phone, stage, amount, active; a value different from the current one), written with %s: %s, %s, %d deltas; afterwards the current epoch holds %d writes for %d visible ones. "+
			"Then the office compacts with history_keep 10 (the default), and a copy of its data dir taken after the edits with history_keep 0: %s. After every step the contacts are checked against the expected state.",
			n, fmtDur(o.importTook), o.importDeltas, k, n*k, k, editModeNote(o.mode), fmtDur(o.editsTook), fmtRate(rate(n*k, o.editsTook), "edits/s"), o.editDeltas, o.history.Writes, o.history.Visible,
			compactHow(o.nodeCompact)),
		fmt.Sprintf("Compaction, how disk and Get are measured, the same at every point: the node is stopped (closed cleanly), its store opened alone (datadir.OpenStore), given datadir.GC.Reclaim (badger's LSM tree flattened into one level, then value-log GC rounds until none rewrites: what node.Compact runs after compacting), its keys counted by kind (key + value bytes), closed, and every file under DIR/store summed (apparent size). "+
			"Then the node is started again on it (network off) and Store.Get is called on %d contacts (seeded sample): one pass untimed (warm-up), then %d timed passes; the median of those %d reads. "+
			"Right after the import: %s (GC %d rounds); Get p50 %s, p90 %s, p99 %s; keys: %s. "+
			"After the edits: %s (GC %d rounds, value log %s -> %s); Get p50 %s, p90 %s, p99 %s; keys: %s.",
			o.sample, compGetPasses, compGetPasses*o.sample,
			o.imported.disk, o.imported.gc.Rounds, fmtDur(o.imported.get.p(50)), fmtDur(o.imported.get.p(90)), fmtDur(o.imported.get.p(99)), o.imported.keys.format(n),
			o.edited.disk, o.edited.gc.Rounds, fmtBytes(o.edited.gc.Before), fmtBytes(o.edited.gc.After), fmtDur(o.edited.get.p(50)), fmtDur(o.edited.get.p(90)), fmtDur(o.edited.get.p(99)), o.edited.keys.format(n)),
		"Compaction, " + compactNote(o.keep10) + fmt.Sprintf("; Get p50 %s, p90 %s, p99 %s.", fmtDur(o.keep10.point.get.p(50)), fmtDur(o.keep10.point.get.p(90)), fmtDur(o.keep10.point.get.p(99))),
		"Compaction, " + compactNote(o.keep0) + fmt.Sprintf("; Get p50 %s, p90 %s, p99 %s.", fmtDur(o.keep0.point.get.p(50)), fmtDur(o.keep0.point.get.p(90)), fmtDur(o.keep0.point.get.p(99))),
		fmt.Sprintf("Compaction, fresh nodes: the baseline office is a copy of the office's data dir taken right after the import (same identity, contacts and membership; it never runs beside the office). Each office in turn is started on loopback TCP (role office) and left to build its first digest, then a fresh laptop (enrolled before the import) with that office as its only peer is started and timed until its heads equal the office's and a digest of its contacts equals the office's (polled every %s; as the catchup benchmark), then checked: its epoch (0 for the baseline, the office's new epoch after compaction) and its contacts. "+
			"The fresh node starts in epoch 0; from the compacted office it hears heads of the later epoch, fetches that epoch's blocks in bulk (/ferry/blocks) and moves to it (crdt.Store.Adopt: merge the epoch's DAG in its own namespace, check the manifest, carry over its own node-info write, drop epoch 0): %s. Then, on the same office, another fresh node runs node.CleanSync (snapshot copy, then heads); Took until its heads equal the office's. "+
			"Clean sync from the import-only office: %s (CleanSync returned after %s), %d entries (%s), then %d blocks, %s sent by the office, fresh data dir %s; from the compacted office: %s (returned after %s), %d entries (%s), then %d blocks, %s sent, fresh data dir %s.",
			pollEvery, adopt,
			fmtDur(o.baseClean.res.Took), fmtDur(o.baseClean.wall), o.baseClean.res.Entries, fmtBytes(o.baseClean.res.Bytes), o.baseClean.res.Blocks, fmtBytes(o.baseClean.sent), fmtBytes(o.baseClean.disk.bytes),
			fmtDur(o.compClean.res.Took), fmtDur(o.compClean.wall), o.compClean.res.Entries, fmtBytes(o.compClean.res.Bytes), o.compClean.res.Blocks, fmtBytes(o.compClean.sent), fmtBytes(o.compClean.disk.bytes)),
	}
	notes = append(notes, fmt.Sprintf("Compaction, Store.Get rows: after both compactions, the import-only copy (the baseline office below), the office compacted with history_keep 10 and the copy compacted with history_keep 0 are each started (network off) in turn, %d rounds, each time one untimed and one timed pass over the %d sampled contacts; the median of each node's %d timed reads. Import-only copy p50 %s, p90 %s, p99 %s; history_keep 10 p50 %s, p90 %s, p99 %s; history_keep 0 p50 %s, p90 %s, p99 %s.",
		compGetRounds, o.sample, compGetRounds*o.sample,
		fmtDur(o.gets[0].p(50)), fmtDur(o.gets[0].p(90)), fmtDur(o.gets[0].p(99)),
		fmtDur(o.gets[1].p(50)), fmtDur(o.gets[1].p(90)), fmtDur(o.gets[1].p(99)),
		fmtDur(o.gets[2].p(50)), fmtDur(o.gets[2].p(90)), fmtDur(o.gets[2].p(99))))
	if o.histDone {
		notes = append(notes, fmt.Sprintf("Compaction, catch-up on the history (info): before the history_keep 0 copy compacts, it is started on the network and a fresh laptop catches up with it the same way (it walks the whole history: %d deltas): %s.",
			o.importDeltas+o.editDeltas, runCell(o.histRun)))
	}
	return result{rows: rows, notes: notes}
}
