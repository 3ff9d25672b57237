package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	ds "github.com/ipfs/go-datastore"
	badger "github.com/ipfs/go-ds-badger"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/datadir"
)

// benchEdit: durable single-field edits through Store.Put on a node store,
// against raw go-ds-badger puts with the same durability (SyncWrites=false
// and one Sync per put, as datadir.OpenStore + crdt's commit do), and, for
// information, badger's default SyncWrites=true.
func (e *env) benchEdit(ctx context.Context) (result, error) {
	c := e.cfg
	base := e.contacts(c.editContacts)
	eds, want := edits(c.edits, base, c.seed)

	e.progress("edit: %d Store.Put on a node store holding %d contacts", len(eds), len(base))
	ferry, err := e.ferryEdits(ctx, base, eds, want)
	if err != nil {
		return result{}, err
	}
	e.progress("edit: Ferry %s", ferry)
	e.progress("edit: baseline, badger SyncWrites=false + Sync per put")
	sync, err := e.badgerPuts(ctx, "edit-badger-sync", base, eds, false)
	if err != nil {
		return result{}, err
	}
	e.progress("edit: baseline %s", sync)
	e.progress("edit: badger SyncWrites=true single puts")
	sw, err := e.badgerPuts(ctx, "edit-badger-syncwrites", base, eds, true)
	if err != nil {
		return result{}, err
	}
	e.progress("edit: SyncWrites=true %s", sw)

	n := len(eds)
	fr, br, wr := ferry.rate(), sync.rate(), sw.rate()
	what := fmt.Sprintf("%d on %d contacts", n, len(base))
	return result{
		rows: []row{
			{"durable single-field edit, rate (" + what + ")", fmtRate(fr, "edits/s"), fmtRate(br, "puts/s") + " (badger, Sync per put)", fmtRatio(fr, br)},
			{"durable single-field edit, latency p50", fmtDur(ferry.p(50)), fmtDur(sync.p(50)), fmtRatio(float64(ferry.p(50)), float64(sync.p(50)))},
			{"durable single-field edit, latency p99", fmtDur(ferry.p(99)), fmtDur(sync.p(99)), fmtRatio(float64(ferry.p(99)), float64(sync.p(99)))},
			{"durable single-field edit, rate vs badger SyncWrites=true (info)", fmtRate(fr, "edits/s"), fmtRate(wr, "puts/s") + " (badger default: O_DSYNC write per put)", fmtRatio(fr, wr)},
		},
		notes: []string{
			fmt.Sprintf("Edit: each Store.Put changes one field of an existing contact (node.Start without network, crm schema, %d contacts imported first) and returns after its single fsync; every edit changes the value, so each is one delta. Baseline: the same %d keys /contacts/<id>/<field> (JSON values) put into a go-ds-badger store opened by datadir.OpenStore (SyncWrites=false) and preloaded with the same contacts, each Put followed by Sync. Final Ferry state checked against the expected one.", len(base), n),
		},
	}, nil
}

// timings are the latencies of a run of operations and its total time.
type timings struct {
	lat   []time.Duration // sorted
	total time.Duration
}

func (t timings) rate() float64               { return rate(len(t.lat), t.total) }
func (t timings) p(pct float64) time.Duration { return percentile(t.lat, pct) }
func (t timings) String() string {
	return fmt.Sprintf("%d ops in %s: %s, p50 %s, p99 %s, max %s", len(t.lat), fmtDur(t.total),
		fmtRate(t.rate(), "ops/s"), fmtDur(t.p(50)), fmtDur(t.p(99)), fmtDur(t.p(100)))
}

func (e *env) ferryEdits(ctx context.Context, base []crdt.ImportRecord, eds []edit, want map[string]map[string]any) (t timings, err error) {
	n, err := e.startNode(ctx, nodeSpec{name: "edit-ferry"})
	if err != nil {
		return t, err
	}
	defer closeNode(n, &err)
	st := n.Store().Everyone()
	if err := e.applySchema(ctx, st); err != nil {
		return t, err
	}
	if _, err := importAll(ctx, st, base); err != nil {
		return t, err
	}
	t.lat = make([]time.Duration, len(eds))
	stop := e.profile("edit-ferry")
	t0 := time.Now()
	for i, ed := range eds {
		s := time.Now()
		res, err := st.Put(ctx, contactsCollection, ed.ID, map[string]any{ed.Field: ed.Value})
		t.lat[i] = time.Since(s)
		if err != nil {
			return t, fmt.Errorf("edit %d (%s.%s): %w", i, ed.ID, ed.Field, err)
		}
		if len(res.Fields) != 1 {
			return t, fmt.Errorf("edit %d (%s.%s=%v) wrote fields %v, want exactly one", i, ed.ID, ed.Field, ed.Value, res.Fields)
		}
	}
	t.total = time.Since(t0)
	stop()
	slices.Sort(t.lat)
	return t, checkState(ctx, st, want)
}

// openBadger opens a go-ds-badger store in dir/store: exactly like the node
// (datadir.OpenStore, SyncWrites=false) or with badger's default options
// (SyncWrites=true, an fsync in every write).
func openBadger(dir string, syncWrites bool) (*badger.Datastore, error) {
	if !syncWrites {
		return datadir.OpenStore(dir)
	}
	path := filepath.Join(dir, "store")
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, err
	}
	opts := badger.DefaultOptions
	if !opts.SyncWrites {
		return nil, fmt.Errorf("go-ds-badger default options do not sync writes")
	}
	return badger.NewDatastore(path, &opts)
}

func closeDatastore(d *badger.Datastore, errp *error) {
	if err := d.Close(); err != nil && *errp == nil {
		*errp = fmt.Errorf("close datastore: %w", err)
	}
}

func fieldKey(id, field string) ds.Key { return ds.NewKey("/contacts/" + id + "/" + field) }

// writeRecords writes every field of recs as /contacts/<id>/<field> =
// JSON(value), in batches of batchSize keys, each committed then synced. It
// returns the number of values and batches written.
func writeRecords(ctx context.Context, d *badger.Datastore, recs []crdt.ImportRecord, batchSize int) (values, batches int, err error) {
	w := &syncedBatches{d: d, size: batchSize}
	for _, r := range recs {
		names := make([]string, 0, len(r.Fields))
		for name := range r.Fields {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			v, err := json.Marshal(r.Fields[name])
			if err != nil {
				return values, w.batches, err
			}
			if err := w.put(ctx, fieldKey(r.ID, name), v); err != nil {
				return values, w.batches, err
			}
			values++
		}
	}
	err = w.flush(ctx)
	return values, w.batches, err
}

// syncedBatches writes keys into a datastore in batches of size keys, each
// committed and then synced: the baselines' way of writing.
type syncedBatches struct {
	d       ds.Batching
	size    int
	b       ds.Batch
	n       int // keys in b
	batches int // batches committed
}

func (w *syncedBatches) put(ctx context.Context, k ds.Key, v []byte) error {
	if w.b == nil {
		b, err := w.d.Batch(ctx)
		if err != nil {
			return fmt.Errorf("open batch: %w", err)
		}
		w.b = b
	}
	if err := w.b.Put(ctx, k, v); err != nil {
		return fmt.Errorf("batch put: %w", err)
	}
	if w.n++; w.n == w.size {
		return w.flush(ctx)
	}
	return nil
}

func (w *syncedBatches) flush(ctx context.Context) error {
	if w.n == 0 {
		return nil
	}
	if err := w.b.Commit(ctx); err != nil {
		return fmt.Errorf("commit batch: %w", err)
	}
	if err := w.d.Sync(ctx, ds.NewKey("/")); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	w.b, w.n = nil, 0
	w.batches++
	return nil
}

// badgerPuts is the baseline of benchEdit: a badger store preloaded with the
// contacts (one key per field), then one Put per edit, each made durable.
func (e *env) badgerPuts(ctx context.Context, name string, base []crdt.ImportRecord, eds []edit, syncWrites bool) (t timings, err error) {
	d, err := openBadger(filepath.Join(e.root, name), syncWrites)
	if err != nil {
		return t, err
	}
	defer closeDatastore(d, &err)
	if _, _, err := writeRecords(ctx, d, base, 1000); err != nil {
		return t, err
	}
	root := ds.NewKey("/")
	t.lat = make([]time.Duration, len(eds))
	stop := e.profile(name)
	defer stop()
	t0 := time.Now()
	for i, ed := range eds {
		s := time.Now()
		v, err := json.Marshal(ed.Value)
		if err != nil {
			return t, err
		}
		if err := d.Put(ctx, fieldKey(ed.ID, ed.Field), v); err != nil {
			return t, fmt.Errorf("put: %w", err)
		}
		if !syncWrites {
			if err := d.Sync(ctx, root); err != nil {
				return t, fmt.Errorf("sync: %w", err)
			}
		}
		t.lat[i] = time.Since(s)
	}
	t.total = time.Since(t0)
	slices.Sort(t.lat)
	return t, nil
}
