package main

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
)

// The compaction benchmark (issue 13): an office imports N contacts, gets
// K single-field edits per contact, and compacts (node.Compact: a new
// epoch seeded with the visible writes, the old one dropped, badger
// flattened and its value log collected). Measured at each point, the same
// way: the store's disk size and a Store.Get median. Then fresh laptops
// catch up with the compacted office, against fresh laptops catching up
// with an office that only imported the same contacts (a copy of the
// office's data dir taken right after the import).
//
// This file holds benchCompaction and the edits; a point is measured in
// compaction_point.go, an office compacted in compaction_compact.go, the
// fresh nodes run in compaction_fresh.go, and the rows and notes are made
// in compaction_report.go.

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
	want := fieldState(recs)

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
