package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
)

// The compaction benchmark (compaction.go): measuring an office's store at
// one point (disk, keys, Store.Get).

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
