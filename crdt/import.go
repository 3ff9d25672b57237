package crdt

import (
	"context"
	"fmt"

	"github.com/ferry-crm/ferry/schema"
)

// ImportRecord is one record of an import, with the line it came from.
type ImportRecord struct {
	Line   int
	ID     string
	Fields map[string]any
}

// ImportResult counts what an import did (or, in a dry run, would do).
type ImportResult struct {
	Records   int // records in the input
	Written   int // records with at least one field written
	Created   int // of those, records that did not exist
	Unchanged int // records already holding every value
	Deltas    int // replicated deltas committed
	// Rejected are the records left out (ImportOptions.SkipInvalid).
	Rejected []ImportRejection `json:",omitempty"`
}

// ImportRejection is a record an import left out, and why.
type ImportRejection struct {
	Line   int
	ID     string
	Reason string
}

// ImportOptions change what Import does with the records it is given.
type ImportOptions struct {
	// DryRun validates and plans every record and counts what would be
	// written, created and left unchanged, writing nothing. A record given
	// twice is planned against the store as it is, not as the first line
	// would leave it.
	DryRun bool
	// SkipInvalid leaves out the records that fail validation (listed in
	// ImportResult.Rejected) and imports the others; by default one bad
	// record fails the whole import.
	SkipInvalid bool
}

// Import writes many records of one collection. Every record is validated
// first (schema, required fields of new records, unique fields), so a bad
// record fails the import with its line number and nothing is written. Then
// records are written in deltas of up to BatchOps operations / BatchBytes
// bytes; a record is never split across deltas, and each delta is durable
// before the next starts (a crash mid-import leaves whole records of the
// deltas committed so far). progress, if set, is called after each delta
// with the number of records done.
func (s *Store) Import(ctx context.Context, collection string, recs []ImportRecord, progress func(done int)) (ImportResult, error) {
	return s.ImportWith(ctx, collection, recs, ImportOptions{}, progress)
}

// ImportWith is Import with options: a dry run, or leaving out the records
// that fail validation instead of failing.
func (s *Store) ImportWith(ctx context.Context, collection string, recs []ImportRecord, opts ImportOptions, progress func(done int)) (ImportResult, error) {
	res := ImportResult{Records: len(recs)}
	coll, err := s.Collection(ctx, collection)
	if err != nil {
		return res, err
	}
	if err := s.checkWritable(ctx, collection, ""); err != nil {
		return res, fmt.Errorf("import %s: %w", collection, err)
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return res, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	// One scan tells which records exist; unique values are checked
	// against the store's unique index, with the claims of earlier records
	// of the import on top.
	unique := uniqueFields(coll)
	ix, err := s.scanExistence(ctx, collection)
	if err != nil {
		return res, fmt.Errorf("import %s: %w", collection, err)
	}
	claims := s.newClaims(coll)

	// Validation pass: nothing is written unless every record is good (or,
	// with SkipInvalid, the bad ones are left out).
	eids := make([]string, 0, len(recs))
	good := recs[:0:0]
	seen := map[string]bool{}
	for i := range recs {
		r := recs[i]
		eid, norm, err := s.validateImport(ctx, coll, unique, claims, r, !ix.exists[r.ID] && !seen[r.ID])
		if err != nil {
			if !opts.SkipInvalid {
				return res, fmt.Errorf("line %d: %w", r.Line, err)
			}
			res.Rejected = append(res.Rejected, ImportRejection{Line: r.Line, ID: r.ID, Reason: err.Error()})
			continue
		}
		r.Fields = norm
		seen[r.ID] = true
		eids = append(eids, eid)
		good = append(good, r)
	}
	recs = good
	if opts.DryRun {
		return s.planImport(ctx, collection, recs, eids, ix, ru, res)
	}

	// Write pass.
	b, err := s.openBatch(ctx)
	if err != nil {
		return res, fmt.Errorf("import %s: %w", collection, err)
	}
	defer b.end(ctx)
	inBatch := map[string]bool{}
	ops, bytes := 0, 0
	queued := 0              // records in pending: Written once committed
	var pending []*writePlan // planned, signed and staged at flush
	flush := func() error {
		if ops == 0 {
			return nil
		}
		if err := s.signAll(pending); err != nil {
			return fmt.Errorf("import %s: %w", collection, err)
		}
		if err := s.checkRoom(ctx); err != nil {
			return fmt.Errorf("import %s: %w", collection, err)
		}
		for _, p := range pending {
			if err := p.stage(ctx, b); err != nil {
				return fmt.Errorf("import %s: %w", collection, err)
			}
		}
		pending = pending[:0]
		if err := s.commit(ctx, b); err != nil {
			return fmt.Errorf("import %s: %w", collection, err)
		}
		res.Deltas++
		res.Written += queued
		ops, bytes, queued = 0, 0, 0
		clear(inBatch)
		if progress != nil {
			progress(res.Written + res.Unchanged)
		}
		return nil
	}
	written := map[string]bool{}
	for i, r := range recs {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("import %s: %w", collection, err)
		}
		eid := eids[i]
		if inBatch[eid] {
			// A pending write is invisible to reads: commit it before
			// writing the same record again.
			if err := flush(); err != nil {
				return res, err
			}
		}
		cur := newRecordOps(eid)
		if ix.known[r.ID] || written[eid] {
			if cur, err = s.readRecord(ctx, collection, eid); err != nil {
				return res, fmt.Errorf("line %d: %w", r.Line, err)
			}
		}
		p, err := s.planWrite(ctx, collection, eid, cur, r.Fields, ru)
		if err != nil {
			return res, fmt.Errorf("line %d: %w", r.Line, err)
		}
		if len(p.result.Fields) == 0 {
			res.Unchanged++
			continue
		}
		if p.result.Created {
			res.Created++
		}
		if p.size > s.opts.BatchBytes {
			return res, fmt.Errorf("line %d: %d bytes in one record: %w", r.Line, p.size, ErrTooLarge)
		}
		n := len(p.keys) + len(p.tombs)
		if ops > 0 && (ops+n > s.opts.BatchOps || bytes+p.size > s.opts.BatchBytes) {
			if err := flush(); err != nil {
				return res, err
			}
		}
		pending = append(pending, p)
		ops += n
		bytes += p.size
		inBatch[eid] = true
		written[eid] = true
		queued++
	}
	if err := flush(); err != nil {
		return res, err
	}
	if progress != nil {
		progress(res.Written + res.Unchanged)
	}
	return res, nil
}

// existence is what one scan of a collection tells an import.
type existence struct {
	exists map[string]bool // records that exist
	known  map[string]bool // records with any visible operation (deleted ones too)
}

// scanExistence scans a collection once: which records exist or have
// operations.
func (s *Store) scanExistence(ctx context.Context, collection string) (*existence, error) {
	ix := &existence{exists: map[string]bool{}, known: map[string]bool{}}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return nil, err
	}
	err = s.scanRecords(ctx, collection, func(ops *recordOps) error {
		id, err := UnescapeID(ops.escapedID)
		if err != nil {
			return nil
		}
		ix.known[id] = true
		if exists, _ := ops.exists(ru); exists {
			ix.exists[id] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", collection, err)
	}
	return ix, nil
}

// validateImport checks one record of an import: its id, its fields by the
// schema (required ones when it is created) and its unique values, which it
// claims. It returns the escaped id and the normalised fields.
func (s *Store) validateImport(ctx context.Context, coll *schema.Collection, unique []string, claims *uniqueClaims, r ImportRecord, creating bool) (string, map[string]any, error) {
	eid, err := EscapeID(r.ID)
	if err != nil {
		return "", nil, err
	}
	norm, err := coll.ValidateWrite(r.ID, r.Fields, creating)
	if err != nil {
		return "", nil, err
	}
	for _, f := range unique {
		if v, ok := norm[f]; ok {
			if err := claims.claim(ctx, f, r.ID, v); err != nil {
				return "", nil, err
			}
		}
	}
	return eid, norm, nil
}

// planImport is the dry run of an import: every record planned against the
// store, nothing written.
func (s *Store) planImport(ctx context.Context, collection string, recs []ImportRecord, eids []string, ix *existence, ru rules, res ImportResult) (ImportResult, error) {
	for i, r := range recs {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("import %s: %w", collection, err)
		}
		cur := newRecordOps(eids[i])
		if ix.known[r.ID] {
			var err error
			if cur, err = s.readRecord(ctx, collection, eids[i]); err != nil {
				return res, fmt.Errorf("line %d: %w", r.Line, err)
			}
		}
		p, err := s.planWrite(ctx, collection, eids[i], cur, r.Fields, ru)
		if err != nil {
			return res, fmt.Errorf("line %d: %w", r.Line, err)
		}
		switch {
		case len(p.result.Fields) == 0:
			res.Unchanged++
		case p.result.Created:
			res.Written++
			res.Created++
		default:
			res.Written++
		}
	}
	return res, nil
}
