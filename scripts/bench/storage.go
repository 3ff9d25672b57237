package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	ds "github.com/ipfs/go-datastore"
	badger "github.com/ipfs/go-ds-badger"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/datadir"
)

// storeSizes are the files of a badger store dir by kind: apparent bytes
// (file sizes) and allocated bytes (st_blocks × 512, what du counts).
type storeSizes struct {
	vlog, sst, other sizes
}

func (s storeSizes) total() sizes {
	return sizes{files: s.vlog.files + s.sst.files + s.other.files,
		bytes: s.vlog.bytes + s.sst.bytes + s.other.bytes,
		alloc: s.vlog.alloc + s.sst.alloc + s.other.alloc}
}

func (s storeSizes) String() string {
	t := s.total()
	return fmt.Sprintf("%s in %d files (%s allocated): *.vlog %s in %d, *.sst %s in %d, other %s in %d",
		fmtBytes(t.bytes), t.files, fmtBytes(t.alloc), fmtBytes(s.vlog.bytes), s.vlog.files, fmtBytes(s.sst.bytes), s.sst.files, fmtBytes(s.other.bytes), s.other.files)
}

// storeSize walks a badger store dir and sums its regular files by kind:
// value-log files (*.vlog), tables (*.sst) and the rest (MANIFEST,
// KEYREGISTRY, ...).
func storeSize(dir string) (storeSizes, error) {
	var s storeSizes
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		p := &s.other
		switch {
		case strings.HasSuffix(path, ".vlog"):
			p = &s.vlog
		case strings.HasSuffix(path, ".sst"):
			p = &s.sst
		}
		p.files++
		p.bytes += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			p.alloc += st.Blocks * 512
		}
		return nil
	})
	return s, err
}

// perRec formats bytes per record (or per edit).
func perRec(b int64, n int) string {
	x := float64(b) / float64(n)
	switch {
	case x >= 100 || x <= -100:
		return fmt.Sprintf("%.0f B", x)
	case x >= 10 || x <= -10:
		return fmt.Sprintf("%.1f B", x)
	}
	return fmt.Sprintf("%.2f B", x)
}

// benchStorage runs the storage and edit-bytes benchmarks (one import
// serves both; the rows of those selected are reported). An office node
// run as the real binary gets the crm schema and N contacts by `ferry
// import`; stopped cleanly, its store is measured (storage). It is started
// again and stopped without edits (the store before the edits), then
// started, given K single-field edits through its local API (what `ferry
// put` sends) and stopped: the growth of its store ÷ K (edit-bytes).
// Baselines in the same run: the same records as one JSON value per record
// in raw go-ds-badger opened like the node's store (datadir.OpenStore), and
// the same K edits as read-modify-write puts of the record's JSON there.
func (e *env) benchStorage(ctx context.Context) (res result, err error) {
	c := e.cfg
	n, k := c.storageRecords, c.editBytesEdits
	doStorage, doEdits := c.only["storage"], c.only["edit-bytes"]
	base := e.contacts(n)
	eds, want := edits(k, base, c.seed)

	bin, err := e.ferryBinary(ctx)
	if err != nil {
		return res, err
	}
	jsonlPath := filepath.Join(e.root, "storage-contacts.jsonl")
	if err := os.WriteFile(jsonlPath, e.jsonl(n), 0o600); err != nil {
		return res, err
	}
	jsonlSize, err := fileSize(jsonlPath)
	if err != nil {
		return res, err
	}
	schemaPath := filepath.Join(e.root, "storage-schema.yaml")
	if err := os.WriteFile(schemaPath, e.schema, 0o600); err != nil {
		return res, err
	}
	dir := filepath.Join(e.root, "storage-office")
	storeDir := filepath.Join(dir, datadir.StoreDir)
	logPath := filepath.Join(e.root, "storage-office.log")
	ferry := ferryCLI(ctx, bin, dir)
	// run starts the node, waits for its digest, calls fn (if any) and
	// stops the node cleanly (SIGINT), then measures its store.
	run := func(what string, fn func(p *ferryProc) error) (storeSizes, error) {
		p, err := startFerryNode(ctx, bin, dir, logPath)
		if err != nil {
			return storeSizes{}, err
		}
		defer p.kill()
		if err := waitFor(ctx, 5*time.Minute, func() bool { st, err := p.status(ctx); return err == nil && st.Digest != "" }); err != nil {
			return storeSizes{}, fmt.Errorf("%s: node digest: %w", what, err)
		}
		if fn != nil {
			if err := fn(p); err != nil {
				return storeSizes{}, fmt.Errorf("%s: %w", what, err)
			}
			if err := waitFor(ctx, 5*time.Minute, func() bool { st, err := p.status(ctx); return err == nil && st.Digest != "" }); err != nil {
				return storeSizes{}, fmt.Errorf("%s: node digest: %w", what, err)
			}
		}
		if _, err := p.stop(2 * time.Minute); err != nil {
			return storeSizes{}, fmt.Errorf("%s: %w", what, err)
		}
		s, err := storeSize(storeDir)
		if err != nil {
			return s, err
		}
		e.progress("storage: %s: node stopped, store %s", what, s)
		return s, nil
	}

	e.progress("storage: ferry init --office, ferry node, ferry schema apply, ferry import of %d contacts (%s JSONL)", n, fmtBytes(jsonlSize))
	if _, err := ferry("init", "--office", "--listen", "/ip4/127.0.0.1/tcp/0", "--topic", e.topic, "--name", "storage-office"); err != nil {
		return res, err
	}
	empty, err := run("schema applied", func(*ferryProc) error {
		_, err := ferry("schema", "apply", schemaPath)
		return err
	})
	if err != nil {
		return res, err
	}
	var importTook time.Duration
	imported, err := run("import", func(*ferryProc) error {
		t0 := time.Now()
		out, err := ferry("import", "--quiet", "contacts", jsonlPath)
		importTook = time.Since(t0)
		if err == nil {
			e.progress("storage: %s in %s", strings.TrimSpace(out), fmtDur(importTook))
		}
		return err
	})
	if err != nil {
		return res, err
	}

	var beforeEdits, afterEdits storeSizes
	var editsTook time.Duration
	if doEdits {
		e.progress("storage: restart without edits, then %d single-field edits through the local API", k)
		if beforeEdits, err = run("restart without edits", nil); err != nil {
			return res, err
		}
		afterEdits, err = run("edits", func(p *ferryProc) error {
			cl, err := api.Dial(dir)
			if err != nil {
				return err
			}
			t0 := time.Now()
			for i, ed := range eds {
				r, err := cl.Put(ctx, contactsCollection, ed.ID, map[string]any{ed.Field: ed.Value}, nil)
				if err != nil {
					return fmt.Errorf("edit %d (%s.%s): %w", i, ed.ID, ed.Field, err)
				}
				if len(r.Fields) != 1 {
					return fmt.Errorf("edit %d (%s.%s=%v) wrote fields %v, want exactly one", i, ed.ID, ed.Field, ed.Value, r.Fields)
				}
			}
			editsTook = time.Since(t0)
			return checkEdited(ctx, cl, eds, want)
		})
		if err != nil {
			return res, err
		}
	}

	// Baseline: raw go-ds-badger, one key per record.
	e.progress("storage: baseline, the same %d records as JSON values in raw go-ds-badger (datadir.OpenStore), batches of %d", n, c.baselineBatch)
	bdir := filepath.Join(e.root, "storage-badger")
	bstore := filepath.Join(bdir, datadir.StoreDir)
	if err := badgerRecords(ctx, bdir, e.data.lines[:n], c.baselineBatch); err != nil {
		return res, err
	}
	bImported, err := storeSize(bstore)
	if err != nil {
		return res, err
	}
	e.progress("storage: baseline store %s", bImported)
	var bBefore, bAfter storeSizes
	if doEdits {
		if err := badgerEditRecords(ctx, bdir, nil); err != nil { // opened and closed: the store before the edits
			return res, err
		}
		if bBefore, err = storeSize(bstore); err != nil {
			return res, err
		}
		if err := badgerEditRecords(ctx, bdir, eds); err != nil {
			return res, err
		}
		if bAfter, err = storeSize(bstore); err != nil {
			return res, err
		}
		e.progress("storage: baseline after %d edits: store %s", k, bAfter)
	}

	what := fmt.Sprintf("%d contacts", n)
	ft, bt := imported.total(), bImported.total()
	if doStorage {
		jsonlPer := float64(jsonlSize) / float64(n)
		res.rows = append(res.rows,
			row{"storage: store bytes per contact after `ferry import` of " + what + " (node stopped, apparent size ÷ N)",
				fmt.Sprintf("%s/record (%s in all)", perRec(ft.bytes, n), fmtBytes(ft.bytes)),
				fmt.Sprintf("%s/record (%s; raw go-ds-badger, one JSON value per record)", perRec(bt.bytes, n), fmtBytes(bt.bytes)),
				fmtRatio(float64(ft.bytes), float64(bt.bytes))},
			row{"storage: of which value log (*.vlog), per contact",
				perRec(imported.vlog.bytes, n) + "/record", perRec(bImported.vlog.bytes, n) + "/record",
				fmtRatio(float64(imported.vlog.bytes), float64(bImported.vlog.bytes))},
			row{"storage: of which tables (*.sst), per contact",
				perRec(imported.sst.bytes, n) + "/record", perRec(bImported.sst.bytes, n) + "/record",
				fmtRatio(float64(imported.sst.bytes), float64(bImported.sst.bytes))},
			row{"storage: of which other files (MANIFEST, KEYREGISTRY, ...), per contact",
				perRec(imported.other.bytes, n) + "/record", perRec(bImported.other.bytes, n) + "/record",
				fmtRatio(float64(imported.other.bytes), float64(bImported.other.bytes))},
			row{"storage: store bytes per contact vs the JSONL input (reference)",
				perRec(ft.bytes, n) + "/record",
				fmt.Sprintf("%.0f B/record (JSONL, %s for %d lines)", jsonlPer, fmtBytes(jsonlSize), n),
				fmtRatio(float64(ft.bytes), float64(jsonlSize))},
		)
		res.notes = append(res.notes,
			fmt.Sprintf("Storage: the real binary, as a user runs it: `ferry --dir D init --office --listen /ip4/127.0.0.1/tcp/0`, `ferry --dir D node` in the background, `ferry schema apply crm.yaml`, `ferry import --quiet contacts FILE.jsonl` with %d contacts (%s, %s per line; the import took %s, %s), then once the node's digest is up to date the node is stopped with SIGINT and waited for (a clean close of badger). "+
				"Measured: every regular file under D/store, apparent size (st_size) summed, by kind; allocated size (st_blocks × 512, what du shows) beside it. Ferry's store: %s. Before the import (schema applied, node-info and membership deltas, node stopped the same way) it held %s, so the import added %s/record. "+
				"Baseline: the same %d JSONL lines, each verbatim as the value of one key /contacts/<id>, written into go-ds-badger opened by datadir.OpenStore (the node's own options: go-ds-badger v0.3.4 defaults, i.e. badger's LSM-only options with ValueThreshold 65500, SyncWrites=false, EventLogging off) in batches of %d keys, each committed then synced, then closed: %s.",
				n, fmtBytes(jsonlSize), perRec(jsonlSize, n), fmtDur(importTook), fmtRate(rate(n, importTook), "records/s"),
				imported, fmtBytes(empty.total().bytes), perRec(ft.bytes-empty.total().bytes, n),
				n, c.baselineBatch, bImported))
	}
	if doEdits {
		fd := afterEdits.total().bytes - beforeEdits.total().bytes
		bd := bAfter.total().bytes - bBefore.total().bytes
		res.rows = append(res.rows,
			row{fmt.Sprintf("edit-bytes: store bytes added per single-field edit (%d edits through the local API after the import of %s, node stopped)", k, what),
				fmt.Sprintf("%s/edit (%s in all)", perRec(fd, k), fmtBytes(fd)),
				fmt.Sprintf("%s/edit (%s; raw go-ds-badger, record JSON rewritten, Sync per put)", perRec(bd, k), fmtBytes(bd)),
				fmtRatio(float64(fd), float64(bd))},
		)
		delta := func(a, b sizes) string { return perRec(b.bytes-a.bytes, k) }
		res.notes = append(res.notes,
			fmt.Sprintf("Edit bytes: after the storage import above, the node is started (digest built) and stopped cleanly without edits: its store then is the size before the edits (%s). "+
				"It is started again and given %d single-field edits, one at a time, as PUT /v1/records/contacts/<id> on its API socket with one typed field (what `ferry put contacts ID FIELD=VALUE` sends; each returns after its write is synced; the edits are those of the edit benchmark: random contact, field among first_name, phone, stage, amount, active, a value different from the current one; %s, %s), the edited fields read back and checked, then stopped cleanly and measured (%s). "+
				"Per edit: *.vlog %s, *.sst %s, other %s. "+
				"Baseline: the raw store of the storage baseline, opened and closed once (the size before: %s), then opened again and given the same %d edits as read-modify-write of the record's JSON value (Get, change one field, Put, Sync), then closed (%s); per edit *.vlog %s, *.sst %s, other %s.",
				beforeEdits, k, fmtDur(editsTook), fmtRate(rate(k, editsTook), "edits/s"), afterEdits,
				delta(beforeEdits.vlog, afterEdits.vlog), delta(beforeEdits.sst, afterEdits.sst), delta(beforeEdits.other, afterEdits.other),
				bBefore, k, bAfter, delta(bBefore.vlog, bAfter.vlog), delta(bBefore.sst, bAfter.sst), delta(bBefore.other, bAfter.other)))
	}
	return res, nil
}

// ferryCLI returns a function running `bin --dir dir ARGS...` and
// returning its combined output.
func ferryCLI(ctx context.Context, bin, dir string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, bin, append([]string{"--dir", dir}, args...)...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("ferry %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return string(out), nil
	}
}

// checkEdited reads back every contact the edits touched and checks the
// fields they set.
func checkEdited(ctx context.Context, cl *api.Client, eds []edit, want map[string]map[string]any) error {
	touched := map[string]map[string]bool{}
	for _, ed := range eds {
		if touched[ed.ID] == nil {
			touched[ed.ID] = map[string]bool{}
		}
		touched[ed.ID][ed.Field] = true
	}
	for id, fields := range touched {
		rec, err := cl.Get(ctx, contactsCollection, id)
		if err != nil {
			return fmt.Errorf("read back %s: %w", id, err)
		}
		for f := range fields {
			got, _ := json.Marshal(rec.Fields[f])
			exp, _ := json.Marshal(want[id][f])
			if string(got) != string(exp) {
				return fmt.Errorf("read back %s.%s: %s, want %s", id, f, got, exp)
			}
		}
	}
	return nil
}

// badgerRecords writes lines (JSON objects with an "id") as
// /contacts/<id> = the line into a new go-ds-badger store in dir
// (datadir.OpenStore), batches of batchSize keys each committed then
// synced, and closes it.
func badgerRecords(ctx context.Context, dir string, lines [][]byte, batchSize int) (err error) {
	d, err := datadir.OpenStore(dir)
	if err != nil {
		return err
	}
	defer closeDatastore(d, &err)
	w := &syncedBatches{d: d, size: batchSize}
	for _, l := range lines {
		var rec struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(l, &rec); err != nil || rec.ID == "" {
			return fmt.Errorf("record line %.60q: no id (%v)", l, err)
		}
		if err := w.put(ctx, recordKey(rec.ID), l); err != nil {
			return err
		}
	}
	return w.flush(ctx)
}

func recordKey(id string) ds.Key { return ds.NewKey("/contacts/" + id) }

// badgerEditRecords opens the store of badgerRecords, applies eds one at a
// time as read-modify-write of the record's JSON (Put then Sync), and
// closes it.
func badgerEditRecords(ctx context.Context, dir string, eds []edit) (err error) {
	d, err := datadir.OpenStore(dir)
	if err != nil {
		return err
	}
	defer closeDatastore(d, &err)
	return editRecords(ctx, d, eds)
}

func editRecords(ctx context.Context, d *badger.Datastore, eds []edit) error {
	root := ds.NewKey("/")
	for i, ed := range eds {
		v, err := d.Get(ctx, recordKey(ed.ID))
		if err != nil {
			return fmt.Errorf("baseline edit %d: get %s: %w", i, ed.ID, err)
		}
		var rec map[string]any
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("baseline edit %d: %s: %w", i, ed.ID, err)
		}
		rec[ed.Field] = ed.Value
		if v, err = json.Marshal(rec); err != nil {
			return err
		}
		if err := d.Put(ctx, recordKey(ed.ID), v); err != nil {
			return fmt.Errorf("baseline edit %d: put: %w", i, err)
		}
		if err := d.Sync(ctx, root); err != nil {
			return fmt.Errorf("baseline edit %d: sync: %w", i, err)
		}
	}
	return nil
}
