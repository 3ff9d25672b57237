package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// benchImport: Store.Import of contacts into an empty node store, against
// raw go-ds-badger batches of the same field values, each batch committed
// and synced (Ferry makes each delta durable before the next).
func (e *env) benchImport(ctx context.Context) (result, error) {
	c := e.cfg
	recs := e.contacts(c.importN)
	values := 0
	for _, r := range recs {
		values += len(r.Fields)
	}

	e.progress("import: %d contacts (%d field values) through Store.Import", len(recs), values)
	fd, deltas, err := e.ferryImport(ctx, len(recs))
	if err != nil {
		return result{}, err
	}
	e.progress("import: Ferry %s in %d deltas", fmtDur(fd), deltas)

	e.progress("import: baseline, badger batches of %d keys", c.baselineBatch)
	bd, batches, err := e.badgerImport(ctx, values)
	if err != nil {
		return result{}, err
	}
	e.progress("import: baseline %s in %d batches", fmtDur(bd), batches)

	fRec, bRec := rate(len(recs), fd), rate(len(recs), bd)
	fVal, bVal := rate(values, fd), rate(values, bd)
	perRec := float64(values) / float64(len(recs))
	return result{
		rows: []row{
			{fmt.Sprintf("bulk import, records/s (%d contacts × %.0f fields)", len(recs), perRec), fmtRate(fRec, "records/s"), fmtRate(bRec, "records/s") + " (badger batches)", fmtRatio(fRec, bRec)},
			{"bulk import, field values/s", fmtRate(fVal, "values/s"), fmtRate(bVal, "values/s"), fmtRatio(fVal, bVal)},
			{"bulk import, total time", fmtDur(fd), fmtDur(bd), fmtRatio(float64(fd), float64(bd))},
		},
		notes: []string{
			fmt.Sprintf("Import: Store.Import of %d contacts into an empty node store (crm schema applied; validation and unique-email check included): %d deltas, each synced. Baseline: the same %d values as keys /contacts/<id>/<field> = JSON in go-ds-badger (datadir.OpenStore) batches of %d keys, %d batches, each committed then synced.", len(recs), deltas, values, c.baselineBatch, batches),
		},
	}, nil
}

func (e *env) ferryImport(ctx context.Context, n int) (d time.Duration, deltas int, err error) {
	nd, err := e.startNode(ctx, nodeSpec{name: "import-ferry"})
	if err != nil {
		return 0, 0, err
	}
	defer closeNode(nd, &err)
	st := nd.Store().Everyone()
	if err := e.applySchema(ctx, st); err != nil {
		return 0, 0, err
	}
	recs := e.contacts(n) // Import rewrites the records it is given
	stop := e.profile("import-ferry")
	t0 := time.Now()
	res, err := st.Import(ctx, contactsCollection, recs, nil)
	d = time.Since(t0)
	stop()
	if err != nil {
		return d, 0, fmt.Errorf("import: %w", err)
	}
	if res.Written != n {
		return d, res.Deltas, fmt.Errorf("import wrote %d of %d records", res.Written, n)
	}
	_, got, err := digestContacts(ctx, st)
	if err != nil {
		return d, res.Deltas, err
	}
	if got != n {
		return d, res.Deltas, fmt.Errorf("after import the store lists %d contacts, want %d", got, n)
	}
	return d, res.Deltas, nil
}

func (e *env) badgerImport(ctx context.Context, values int) (d time.Duration, batches int, err error) {
	db, err := openBadger(filepath.Join(e.root, "import-badger"), false)
	if err != nil {
		return 0, 0, err
	}
	defer closeDatastore(db, &err)
	recs := e.contacts(e.cfg.importN)
	stop := e.profile("import-badger")
	t0 := time.Now()
	n, batches, err := writeRecords(ctx, db, recs, e.cfg.baselineBatch)
	d = time.Since(t0)
	stop()
	if err != nil {
		return d, batches, err
	}
	if n != values {
		return d, batches, fmt.Errorf("baseline wrote %d values, want %d", n, values)
	}
	return d, batches, nil
}
