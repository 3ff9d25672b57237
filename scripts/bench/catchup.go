package main

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
)

const (
	pollEvery     = 100 * time.Millisecond
	progressEvery = 10 * time.Second
)

// writeFunc writes the benchmark's edits on the source node and returns the
// number of deltas it committed.
type writeFunc func(ctx context.Context, st *crdt.Store) (deltas int, err error)

// catchupRun is one source node + fresh node measurement.
type catchupRun struct {
	write     time.Duration // source: writing the edits
	deltas    int           // source: deltas the edits made
	height    uint64        // source: DAG height after writing
	sync      time.Duration // fresh node: start to converged (or to the timeout)
	converged bool
	digest    string // contacts digest on the source
	// getBefore and getAfter are the median Store.Get latency of a contact
	// on the source before and after the edits.
	getBefore, getAfter time.Duration
}

// getLatency reads every contact once and returns the median latency.
func getLatency(ctx context.Context, st *crdt.Store, recs []crdt.ImportRecord) (time.Duration, error) {
	lat := make([]time.Duration, len(recs))
	for i, r := range recs {
		t := time.Now()
		if _, err := st.Get(ctx, contactsCollection, r.ID); err != nil {
			return 0, err
		}
		lat[i] = time.Since(t)
	}
	slices.Sort(lat)
	return percentile(lat, 50), nil
}

// benchCatchup: a fresh node catching up on a source node that made its
// edits as single-field Puts (one delta each), against the same edits
// written as a few batched deltas (Store.Import).
func (e *env) benchCatchup(ctx context.Context) (result, error) {
	c := e.cfg
	base := contacts(c.catchupContacts, c.seed)
	eds, want := edits(c.catchupEdits, base, c.seed)

	single := func(ctx context.Context, st *crdt.Store) (int, error) {
		window := max(1, len(eds)/10)
		t0 := time.Now()
		for i, ed := range eds {
			if i > 0 && i%window == 0 {
				e.progress("catchup-single: %d edits written, last %d at %s", i, window, fmtRate(rate(window, time.Since(t0)), "edits/s"))
				t0 = time.Now()
			}
			res, err := st.Put(ctx, contactsCollection, ed.ID, map[string]any{ed.Field: ed.Value})
			if err != nil {
				return i, fmt.Errorf("edit %d: %w", i, err)
			}
			if len(res.Fields) != 1 {
				return i, fmt.Errorf("edit %d wrote fields %v, want exactly one", i, res.Fields)
			}
		}
		return len(eds), nil
	}
	// Store.Import commits a pending delta before writing a record a second
	// time (pending writes are invisible to reads), so the edits of one
	// batch are coalesced per contact: the delta holds what the batch leaves
	// behind, and the final state is the same.
	batched := func(ctx context.Context, st *crdt.Store) (int, error) {
		deltas := 0
		for i := 0; i < len(eds); i += c.catchupBatch {
			recs := coalesce(eds[i:min(i+c.catchupBatch, len(eds))], i+1)
			res, err := st.Import(ctx, contactsCollection, recs, nil)
			if err != nil {
				return deltas, fmt.Errorf("import edits %d..: %w", i, err)
			}
			deltas += res.Deltas
		}
		return deltas, nil
	}

	e.progress("catchup: source node makes %d single-field edits of %d contacts, one delta each", len(eds), len(base))
	fr, err := e.catchup(ctx, "catchup-single", base, want, single)
	if err != nil {
		return result{}, err
	}
	e.progress("catchup: baseline, the same edits in batches of %d", c.catchupBatch)
	br, err := e.catchup(ctx, "catchup-batched", base, want, batched)
	if err != nil {
		return result{}, err
	}

	syncCell := func(r catchupRun) string {
		s := fmtDur(r.sync)
		if !r.converged {
			s = "> " + s + " (not converged)"
		}
		return fmt.Sprintf("%s (%d deltas)", s, r.deltas)
	}
	ratio := fmtRatio(float64(fr.sync), float64(br.sync))
	if !fr.converged || !br.converged {
		ratio = "n/a (timeout)"
		if !fr.converged && br.converged {
			ratio = "> " + fmtRatio(float64(fr.sync), float64(br.sync))
		}
	}
	notes := []string{
		fmt.Sprintf("Catch-up: source node (network on, loopback TCP) with the crm schema and %d contacts (one import delta) writes %d single-field edits; a fresh node configured with the source as its peer is started and timed until its heads equal the source's and a digest of its visible contacts equals the source's (polled every %s, contacts compared once heads are equal); it fetches the DAG over bitswap. Baseline: the same edits, %d per Store.Import call (coalesced per contact within a call, same final state), on another source and fresh node pair.", len(base), len(eds), pollEvery, c.catchupBatch),
		fmt.Sprintf("Catch-up speed: %s on the single-edit DAG (height %d, one block per level, fetched one level at a time); the batched DAG has height %d, so its time is mostly connection set-up and the heads exchange.",
			fmtRate(rate(fr.deltas, fr.sync), "deltas/s"), fr.height, br.height),
	}
	notes = append(notes, fmt.Sprintf("Reading a contact (Store.Get, median) on the single-edit source took %s before the edits and %s after (each contact has about %d superseded ops by then); on the batched source %s and %s.",
		fmtDur(fr.getBefore), fmtDur(fr.getAfter), len(eds)/len(base), fmtDur(br.getBefore), fmtDur(br.getAfter)))
	if fr.digest == br.digest {
		notes = append(notes, "The single-edit and batched sources ended with identical contacts (digest "+fr.digest+"), checked against the expected state.")
	} else {
		notes = append(notes, fmt.Sprintf("WARNING: the single-edit and batched sources ended with different contacts (digests %s, %s).", fr.digest, br.digest))
	}
	return result{
		rows: []row{
			{fmt.Sprintf("fresh node catch-up on %d single edits (%d contacts)", len(eds), len(base)), syncCell(fr), syncCell(br), ratio},
			{"catch-up source: writing the edits (info)", fmt.Sprintf("%s (%s, Put)", fmtDur(fr.write), fmtRate(rate(len(eds), fr.write), "edits/s")),
				fmt.Sprintf("%s (Import, %d per call)", fmtDur(br.write), c.catchupBatch), fmtRatio(float64(fr.write), float64(br.write))},
		},
		notes: notes,
	}, nil
}

// catchup starts a source node, writes the contacts then the edits with
// write, then starts a fresh node with the source as its peer and waits
// until both show the same state.
func (e *env) catchup(ctx context.Context, label string, base []crdt.ImportRecord, want map[string]map[string]any, write writeFunc) (r catchupRun, err error) {
	var hooksB atomic.Int64
	a, err := e.startNode(ctx, nodeSpec{name: label + "-source", network: true})
	if err != nil {
		return r, err
	}
	defer closeNode(a, &err)
	sa := a.Store()
	if err := e.applySchema(ctx, sa); err != nil {
		return r, err
	}
	if _, err := importAll(ctx, sa, base); err != nil {
		return r, err
	}
	if r.getBefore, err = getLatency(ctx, sa, base); err != nil {
		return r, err
	}
	stop := e.profile(label + "-write")
	t0 := time.Now()
	r.deltas, err = write(ctx, sa)
	r.write = time.Since(t0)
	stop()
	if err != nil {
		return r, err
	}
	if r.getAfter, err = getLatency(ctx, sa, base); err != nil {
		return r, err
	}
	e.progress("%s: source Store.Get p50 %s before the edits, %s after", label, fmtDur(r.getBefore), fmtDur(r.getAfter))
	if err := checkState(ctx, sa, want); err != nil {
		return r, fmt.Errorf("source: %w", err)
	}
	if r.digest, _, err = digestContacts(ctx, sa); err != nil {
		return r, err
	}
	r.height = sa.Stats(ctx).MaxHeight
	e.progress("%s: source wrote %d deltas in %s; DAG height %d; starting a fresh node", label, r.deltas, fmtDur(r.write), r.height)

	stop = e.profile(label + "-sync")
	defer stop()
	t0 = time.Now()
	b, err := e.startNode(ctx, nodeSpec{name: label + "-fresh", network: true, peers: a.Addrs()[:1], hooks: &hooksB})
	if err != nil {
		return r, err
	}
	defer closeNode(b, &err)

	wctx, cancel := context.WithTimeout(ctx, e.cfg.catchupTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	lastReport := time.Now()
	for {
		report := time.Since(lastReport) >= progressEvery
		ok, status, err := converged(ctx, a, b, report)
		if err != nil {
			return r, err
		}
		if ok {
			r.sync, r.converged = time.Since(t0), true
			stop()
			e.progress("%s: converged after %s (%s)", label, fmtDur(r.sync), status)
			break
		}
		if report {
			lastReport = time.Now()
			e.progress("%s: %s, not converged: %s; fresh node merge-hook events %d (about one per block walked, of %d deltas written)",
				label, fmtDur(time.Since(t0)), status, hooksB.Load(), r.deltas)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			r.sync = time.Since(t0)
			stop()
			e.progress("%s: gave up after %s: %s", label, fmtDur(r.sync), status)
			return r, nil
		case <-tick.C:
		}
	}
	return r, checkState(ctx, b.Store(), want)
}

// converged reports whether b shows a's state: same heads and the same
// visible contacts. The contacts are only compared once the heads are equal
// (or when detail is asked for, for a progress line), so that polling costs
// little CPU while the fresh node walks the DAG.
func converged(ctx context.Context, a, b *node.Node, detail bool) (bool, string, error) {
	sa, sb := a.Store().Stats(ctx), b.Store().Stats(ctx)
	ha, hb := sortedHeads(sa.Heads), sortedHeads(sb.Heads)
	headsEq := slices.Equal(ha, hb)
	status := fmt.Sprintf("heads source %d fresh %d equal %v; height source %d fresh %d; fresh queued jobs %d",
		len(ha), len(hb), headsEq, sa.MaxHeight, sb.MaxHeight, sb.QueuedJobs)
	if !headsEq && !detail {
		return false, status, nil
	}
	da, _, err := digestContacts(ctx, a.Store())
	if err != nil {
		return false, "", err
	}
	db, nb, err := digestContacts(ctx, b.Store())
	if err != nil {
		return false, "", err
	}
	status += fmt.Sprintf("; fresh lists %d contacts, digest equal %v", nb, da == db)
	return headsEq && da == db, status, nil
}
