package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/apijson"
)

// The compaction benchmark (compaction.go): compacting an office.

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
	switchedAt := &loggedAt{msg: "moved to a new epoch"}
	spec := nodeSpec{name: name, role: node.RoleOffice, historyKeep: &keep, logger: slog.New(switchedAt.wrap(e.log.Handler())), onEpoch: func(r crdt.EpochReport) {
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
	if sw := switchedAt.get(); !sw.IsZero() {
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

// phases renders the two parts of a store's compaction.
func phases(cr compactRun) string {
	if cr.switched == 0 {
		return "no phase times: the store's log line was not seen"
	}
	return fmt.Sprintf("from the call until the store logged \"moved to a new epoch\", i.e. DAG walk for the cut, seed, manifest, carry, archive and switch: %s; from then until its OnEpoch hook ran, i.e. dropping epoch 0's keys and blocks: %s",
		fmtDur(cr.switched), fmtDur(cr.dropped))
}
