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

// catchupSource is a running source node holding the history fresh nodes
// catch up on.
type catchupSource struct {
	n      *node.Node
	write  time.Duration // writing the edits
	deltas int           // deltas the edits made
	height uint64        // DAG height after writing
	digest string        // contacts digest
	// getBefore and getAfter are the median Store.Get latency of a contact
	// before and after the edits.
	getBefore, getAfter time.Duration
}

// freshRun is one fresh node catching up on a source.
type freshRun struct {
	sync      time.Duration // start to converged (or to the timeout)
	converged bool
	hooks     int64 // go-ds-crdt merge-hook events on the fresh node
	bulk      int64 // blocks the fresh node fetched in bulk (Status().BlocksFetched)
}

// storeGetLatency reads every record of recs passes times from st and
// returns the median latency.
func storeGetLatency(ctx context.Context, st *crdt.Store, recs []crdt.ImportRecord, passes int) (time.Duration, error) {
	return getMedian(recs, passes, func(id string) error {
		_, err := st.Get(ctx, contactsCollection, id)
		return err
	})
}

// getMedian times get on every record of recs, passes times, and returns
// the median.
func getMedian(recs []crdt.ImportRecord, passes int, get func(id string) error) (time.Duration, error) {
	lat := make([]time.Duration, 0, passes*len(recs))
	for range passes {
		for _, rec := range recs {
			t := time.Now()
			if err := get(rec.ID); err != nil {
				return 0, err
			}
			lat = append(lat, time.Since(t))
		}
	}
	slices.Sort(lat)
	return percentile(lat, 50), nil
}

// benchCatchup: one source node writes the edits as single-field Puts (one
// delta each); a fresh Ferry node (bulk block sync) and then a fresh plain
// go-ds-crdt node (DisableBulkSync: DAG walk over bitswap only) catch up on
// that same history, one after the other. For information, the same final
// state written as a few batched deltas (Store.Import) on another source,
// caught up on by the same two kinds of fresh node.
func (e *env) benchCatchup(ctx context.Context) (res result, err error) {
	c := e.cfg
	base := e.contacts(c.catchupContacts)
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

	// The single-edit history: one source, two fresh nodes.
	e.progress("catchup: source node makes %d single-field edits of %d contacts, one delta each", len(eds), len(base))
	src, err := e.startSource(ctx, "catchup-single", base, want, single)
	if err != nil {
		return res, err
	}
	defer closeNode(src.n, &err)
	e.progress("catchup: fresh Ferry node (bulk block sync) catching up on %d deltas", src.deltas)
	fr, err := e.syncFresh(ctx, "catchup-single-ferry", src, false, want)
	if err != nil {
		return res, err
	}
	e.progress("catchup: fresh plain go-ds-crdt node (DAG walk over bitswap) catching up on the same %d deltas", src.deltas)
	pr, err := e.syncFresh(ctx, "catchup-single-plain", src, true, want)
	if err != nil {
		return res, err
	}
	if err := src.n.Close(); err != nil {
		return res, fmt.Errorf("close node %s: %w", src.n.Config().Name, err)
	}

	// For information: the same final state in a few batched deltas.
	e.progress("catchup (info): another source writes the same edits in batches of %d", c.catchupBatch)
	bsrc, err := e.startSource(ctx, "catchup-batched", base, want, batched)
	if err != nil {
		return res, err
	}
	defer closeNode(bsrc.n, &err)
	bfr, err := e.syncFresh(ctx, "catchup-batched-ferry", bsrc, false, want)
	if err != nil {
		return res, err
	}
	bpr, err := e.syncFresh(ctx, "catchup-batched-plain", bsrc, true, want)
	if err != nil {
		return res, err
	}

	syncCell := func(r freshRun) string {
		if !r.converged {
			return "> " + fmtDur(r.sync) + " (not converged)"
		}
		return fmtDur(r.sync)
	}
	speedup := func(f, p freshRun) string {
		switch {
		case !f.converged:
			return "n/a (Ferry node not converged)"
		case !p.converged:
			return fmt.Sprintf("< %s (> %.0f× faster)", fmtSmallRatio(float64(f.sync), float64(p.sync)), p.sync.Seconds()/f.sync.Seconds())
		}
		return fmt.Sprintf("%s (%s× faster)", fmtSmallRatio(float64(f.sync), float64(p.sync)), fmtTimes(p.sync.Seconds()/f.sync.Seconds()))
	}
	ferryCell := fmt.Sprintf("%s (%d blocks fetched in bulk)", syncCell(fr), fr.bulk)
	plainCell := syncCell(pr) + " (go-ds-crdt DAG walk over bitswap)"
	if !pr.converged {
		plainCell += fmt.Sprintf("; about %d of %d blocks merged by then", pr.hooks, src.height)
	}

	walkRate := func(r freshRun) string {
		if r.converged {
			return fmtRate(rate(int(src.height), r.sync), "blocks/s")
		}
		return "about " + fmtRate(rate(int(r.hooks), r.sync), "blocks/s") + " (merge-hook events until the timeout)"
	}
	notes := []string{
		fmt.Sprintf("Catch-up: one source node (network on, loopback TCP) with the crm schema and %d contacts (one import delta) writes %d single-field edits with Store.Put, one delta (DAG block) each: DAG height %d (the schema, import, membership and node-info deltas included). Then a fresh node configured with the source as its only peer is started and timed until its heads equal the source's and a digest of its visible contacts equals the source's (polled every %s, contacts compared once heads are equal); its final state is checked against the expected one. It is closed, and a second fresh node with node.Config.DisableBulkSync is timed the same way against the same source: it catches up only through go-ds-crdt's DAG walk, fetching blocks over bitswap one DAG level per round trip, i.e. plain go-ds-crdt. The Ferry node asks the source for every block it lacks over /ferry/blocks/2.0.0 before handing the heads to go-ds-crdt. Timeout per fresh node: %s.",
			len(base), len(eds), src.height, pollEvery, c.catchupTimeout),
		fmt.Sprintf("Catch-up speed on the single-edit history (blocks = DAG height, one block per level): Ferry %s (node status: %d blocks fetched in bulk), plain go-ds-crdt %s.",
			walkRate(fr), fr.bulk, walkRate(pr)),
		fmt.Sprintf("Batched history (info row, a different history with the same final state): another source writes the same edits with Store.Import, %d edits per call coalesced per contact, %d deltas, DAG height %d; its time is mostly connection set-up and the heads exchange. Ferry node: %d blocks fetched in bulk.",
			c.catchupBatch, bsrc.deltas, bsrc.height, bfr.bulk),
		fmt.Sprintf("Reading a contact (Store.Get, median) on the single-edit source took %s before the edits and %s after (each contact has about %d superseded ops by then); on the batched source %s and %s.",
			fmtDur(src.getBefore), fmtDur(src.getAfter), len(eds)/len(base), fmtDur(bsrc.getBefore), fmtDur(bsrc.getAfter)),
	}
	if src.digest == bsrc.digest {
		notes = append(notes, "The single-edit and batched sources ended with identical contacts (digest "+src.digest+"), checked against the expected state.")
	} else {
		notes = append(notes, fmt.Sprintf("WARNING: the single-edit and batched sources ended with different contacts (digests %s, %s).", src.digest, bsrc.digest))
	}
	return result{
		rows: []row{
			{fmt.Sprintf("fresh node catch-up on %d single edits (%d contacts): Ferry (bulk sync) vs plain go-ds-crdt (bitswap), same history", len(eds), len(base)),
				ferryCell, plainCell, speedup(fr, pr)},
			{fmt.Sprintf("fresh node catch-up on the same final state as %d batched deltas (info: a different history)", bsrc.deltas),
				fmt.Sprintf("%s (%d blocks fetched in bulk)", syncCell(bfr), bfr.bulk), syncCell(bpr) + " (plain go-ds-crdt)", speedup(bfr, bpr)},
			{"catch-up source: writing the edits (info)", fmt.Sprintf("%s (%s, Put, %d deltas)", fmtDur(src.write), fmtRate(rate(len(eds), src.write), "edits/s"), src.deltas),
				fmt.Sprintf("%s (Import, %d per call, %d deltas)", fmtDur(bsrc.write), c.catchupBatch, bsrc.deltas), fmtRatio(float64(src.write), float64(bsrc.write))},
		},
		notes: notes,
	}, nil
}

// startSource starts a source node, writes the contacts then the edits with
// write, and checks the result. The caller closes the node.
func (e *env) startSource(ctx context.Context, label string, base []crdt.ImportRecord, want map[string]map[string]any, write writeFunc) (_ *catchupSource, err error) {
	a, err := e.startNode(ctx, nodeSpec{name: label + "-source", network: true})
	if err != nil {
		return nil, err
	}
	// The fresh nodes syncFresh starts, enrolled before the history.
	members := []string{label + "-ferry", label + "-plain"}
	defer func() {
		if err != nil {
			_ = a.Close()
		}
	}()
	r := &catchupSource{n: a}
	sa := a.Store().Everyone()
	if err := e.applySchema(ctx, sa); err != nil {
		return nil, err
	}
	if err := e.enrol(ctx, a, members...); err != nil {
		return nil, err
	}
	if _, err := importAll(ctx, sa, base); err != nil {
		return nil, err
	}
	if r.getBefore, err = storeGetLatency(ctx, sa, base, 1); err != nil {
		return nil, err
	}
	stop := e.profile(label + "-write")
	t0 := time.Now()
	r.deltas, err = write(ctx, sa)
	r.write = time.Since(t0)
	stop()
	if err != nil {
		return nil, err
	}
	if r.getAfter, err = storeGetLatency(ctx, sa, base, 1); err != nil {
		return nil, err
	}
	e.progress("%s: source Store.Get p50 %s before the edits, %s after", label, fmtDur(r.getBefore), fmtDur(r.getAfter))
	if err := checkState(ctx, sa, want); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if r.digest, _, err = digestContacts(ctx, sa); err != nil {
		return nil, err
	}
	r.height = sa.Stats(ctx).MaxHeight
	e.progress("%s: source wrote %d deltas in %s; DAG height %d", label, r.deltas, fmtDur(r.write), r.height)
	return r, nil
}

// syncFresh starts a fresh node with src as its only peer (plain go-ds-crdt
// with disableBulkSync), waits until both show the same state or the
// catch-up timeout passes, checks the state, and closes the fresh node.
func (e *env) syncFresh(ctx context.Context, label string, src *catchupSource, disableBulkSync bool, want map[string]map[string]any) (r freshRun, err error) {
	var hooks atomic.Int64
	stop := e.profile(label)
	defer stop()
	t0 := time.Now()
	b, err := e.startNode(ctx, nodeSpec{name: label, network: true, peers: src.n.Addrs()[:1], hooks: &hooks, disableBulkSync: disableBulkSync,
		founder: src.n.Config().Name})
	if err != nil {
		return r, err
	}
	defer closeNode(b, &err)

	wctx, cancel := context.WithTimeout(ctx, e.cfg.catchupTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	lastReport := time.Now()
wait:
	for {
		report := time.Since(lastReport) >= progressEvery
		ok, status, err := converged(ctx, src.n, b, report)
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
				label, fmtDur(time.Since(t0)), status, hooks.Load(), src.deltas)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			r.sync = time.Since(t0)
			stop()
			e.progress("%s: gave up after %s: %s", label, fmtDur(r.sync), status)
			break wait
		case <-tick.C:
		}
	}
	r.hooks = hooks.Load()
	r.bulk = b.Status(ctx).BlocksFetched
	if !r.converged {
		return r, nil
	}
	return r, checkState(ctx, b.Store().Everyone(), want)
}

// converged reports whether b shows a's state: same heads and the same
// visible contacts. The contacts are only compared once the heads are equal
// (or when detail is asked for, for a progress line), so that polling costs
// little CPU while the fresh node walks the DAG.
func converged(ctx context.Context, a, b *node.Node, detail bool) (bool, string, error) {
	sa, sb := a.Store().Everyone().Stats(ctx), b.Store().Everyone().Stats(ctx)
	ha, hb := sortedHeads(sa.Heads), sortedHeads(sb.Heads)
	headsEq := slices.Equal(ha, hb)
	status := fmt.Sprintf("heads source %d fresh %d equal %v; height source %d fresh %d; fresh queued jobs %d",
		len(ha), len(hb), headsEq, sa.MaxHeight, sb.MaxHeight, sb.QueuedJobs)
	if !headsEq && !detail {
		return false, status, nil
	}
	da, _, err := digestContacts(ctx, a.Store().Everyone())
	if err != nil {
		return false, "", err
	}
	db, nb, err := digestContacts(ctx, b.Store().Everyone())
	if err != nil {
		return false, "", err
	}
	status += fmt.Sprintf("; fresh lists %d contacts, digest equal %v", nb, da == db)
	return headsEq && da == db, status, nil
}
