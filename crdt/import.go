package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"

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
	// RefuseDuplicates refuses a record that is a likely duplicate of
	// another one (of the store or of the import) by the collection's
	// duplicate rules (see CheckDuplicate); with SkipInvalid it is left out.
	RefuseDuplicates bool
}

// ImportSource yields the records of an import, in order, to yield. An
// import reads its source twice (a validation pass, then the write pass),
// so it must yield the same records both times. It stops at the first
// error yield returns and returns it; an error of its own (input it cannot
// read) fails the import, nothing written if it comes in the first pass.
type ImportSource func(yield func(ImportRecord) error) error

// ImportSlice is the source of records already in memory.
func ImportSlice(recs []ImportRecord) ImportSource {
	return func(yield func(ImportRecord) error) error {
		for _, r := range recs {
			if err := yield(r); err != nil {
				return err
			}
		}
		return nil
	}
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
	var p func(done, total int)
	if progress != nil {
		p = func(done, _ int) { progress(done) }
	}
	return s.ImportStream(ctx, collection, ImportSlice(recs), opts, p)
}

// ImportStream is ImportWith over records read from src, which it reads
// twice and never holds: what it keeps besides one delta's writes is which
// records of the collection exist, the unique values the import claims,
// the ids it imports and the records it rejects.
//
// The first pass validates every record (and counts them): a bad one fails
// the import with its line, nothing written, unless opts.SkipInvalid sets
// it aside. A dry run plans each good record as it goes and stops there.
// The second pass reads src again, validates each record again (a record
// that fails now, because the store changed meanwhile, stops the import
// with its line, the deltas before it committed) and writes them in
// deltas as Import does. progress, if set, is called after each delta with
// the records done and the total the first pass counted.
func (s *Store) ImportStream(ctx context.Context, collection string, src ImportSource, opts ImportOptions, progress func(done, total int)) (ImportResult, error) {
	var res ImportResult
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
	ix, err := s.scanExistence(ctx, collection)
	if err != nil {
		return res, fmt.Errorf("import %s: %w", collection, err)
	}
	v := s.newImportValidator(coll, ix)
	if opts.RefuseDuplicates {
		v.dups = s.newDupClaims(coll)
	}

	// Validation pass: nothing is written unless every record is good (or,
	// with SkipInvalid, the bad ones are left out). A dry run plans the
	// good ones against the store as it is.
	var rejected []int // ordinals of the records left out, ascending
	err = readSource(src, func(r ImportRecord) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("import %s: %w", collection, err)
		}
		n := res.Records
		res.Records++
		eid, norm, err := v.check(ctx, r)
		if err != nil {
			if !opts.SkipInvalid {
				return fmt.Errorf("line %d: %w", r.Line, err)
			}
			res.Rejected = append(res.Rejected, ImportRejection{Line: r.Line, ID: r.ID, Reason: err.Error()})
			rejected = append(rejected, n)
			return nil
		}
		if opts.DryRun {
			return s.planImport(ctx, collection, r.Line, eid, ix.known[r.ID], norm, ru, &res)
		}
		return nil
	})
	if err != nil {
		return res, sourceError(collection, err)
	}
	if opts.DryRun {
		return res, nil
	}
	total := res.Records

	// Write pass: the same records again, the good ones validated again
	// (the claims start afresh).
	v = s.newImportValidator(coll, ix)
	if opts.RefuseDuplicates {
		v.dups = s.newDupClaims(coll)
	}
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
		if err := s.signBatch(pending); err != nil {
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
			progress(res.Written+res.Unchanged, total)
		}
		return nil
	}
	// written holds the new records written so far: a later line of the
	// same record reads what the earlier one wrote.
	written := map[string]bool{}
	n := 0    // ordinal of the record
	next := 0 // of the rejected records, the next one
	err = readSource(src, func(r ImportRecord) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("import %s: %w", collection, err)
		}
		if n == total {
			return fmt.Errorf("import %s: %w: more than the %d records of the first pass", collection, ErrImportSourceChanged, total)
		}
		if next < len(rejected) && rejected[next] == n {
			// Left out in the first pass (where it claimed nothing).
			if want := res.Rejected[next]; r.Line != want.Line || r.ID != want.ID {
				return fmt.Errorf("import %s: line %d: %w: the record left out there was %q on line %d", collection, r.Line, ErrImportSourceChanged, want.ID, want.Line)
			}
			n++
			next++
			return nil
		}
		n++
		eid, norm, err := v.check(ctx, r)
		if err != nil {
			return fmt.Errorf("line %d: %w", r.Line, err)
		}
		if inBatch[eid] {
			// A pending write is invisible to reads: commit it before
			// writing the same record again.
			if err := flush(); err != nil {
				return err
			}
		}
		cur := newRecordOps(eid)
		if ix.known[r.ID] || written[eid] {
			if cur, err = s.readRecord(ctx, collection, eid); err != nil {
				return fmt.Errorf("line %d: %w", r.Line, err)
			}
		}
		p, err := s.planWrite(ctx, collection, eid, cur, norm, ru)
		if err != nil {
			return fmt.Errorf("line %d: %w", r.Line, err)
		}
		if len(p.result.Fields) == 0 {
			res.Unchanged++
			return nil
		}
		if p.result.Created {
			res.Created++
		}
		if p.size > s.opts.BatchBytes {
			return fmt.Errorf("line %d: %d bytes in one record: %w", r.Line, p.size, ErrTooLarge)
		}
		k := len(p.keys) + len(p.tombs)
		if ops > 0 && (ops+k > s.opts.BatchOps || bytes+p.size > s.opts.BatchBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		pending = append(pending, p)
		ops += k
		bytes += p.size
		inBatch[eid] = true
		if !ix.known[r.ID] {
			written[eid] = true
		}
		queued++
		return nil
	})
	if err == nil && n != total {
		err = fmt.Errorf("import %s: %w: %d records, %d in the first pass", collection, ErrImportSourceChanged, n, total)
	}
	if err != nil {
		return res, sourceError(collection, err)
	}
	if err := flush(); err != nil {
		return res, err
	}
	if progress != nil {
		progress(res.Written+res.Unchanged, total)
	}
	return res, nil
}

// ErrImportSourceChanged: the second pass of an import read other records
// than the first.
var ErrImportSourceChanged = errors.New("the import's input changed while it was read")

// importStop carries the error of an import's own callback out of its
// source, telling it from the source's own errors.
type importStop struct{ err error }

func (e *importStop) Error() string { return e.err.Error() }
func (e *importStop) Unwrap() error { return e.err }

// readSource runs src with fn; fn's error comes back as an *importStop
// (however src wrapped it).
func readSource(src ImportSource, fn func(ImportRecord) error) error {
	var stop *importStop
	err := src(func(r ImportRecord) error {
		if err := fn(r); err != nil {
			stop = &importStop{err}
			return stop
		}
		return nil
	})
	if stop != nil {
		return stop
	}
	return err
}

// sourceError is the error of an import's pass: its own as it is, an
// error of the source (its input) wrapped with the import.
func sourceError(collection string, err error) error {
	if stop, ok := err.(*importStop); ok {
		return stop.err
	}
	return fmt.Errorf("import %s: %w", collection, err)
}

// importValidator validates the records of one pass of an import, one
// after another.
type importValidator struct {
	s      *Store
	coll   *schema.Collection
	unique []string
	ix     *existence
	claims *uniqueClaims
	dups   *dupClaims      // nil: duplicates allowed
	seen   map[string]bool // ids of the good records so far
}

func (s *Store) newImportValidator(coll *schema.Collection, ix *existence) *importValidator {
	return &importValidator{s: s, coll: coll, unique: uniqueFields(coll), ix: ix, claims: s.newClaims(coll), seen: map[string]bool{}}
}

// check validates r, created unless it exists or an earlier good record of
// the import has its id.
func (v *importValidator) check(ctx context.Context, r ImportRecord) (string, map[string]any, error) {
	eid, norm, err := v.s.validateImport(ctx, v.coll, v.unique, v.claims, v.dups, r, !v.ix.exists[r.ID] && !v.seen[r.ID])
	if err == nil {
		v.seen[r.ID] = true
	}
	return eid, norm, err
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
func (s *Store) validateImport(ctx context.Context, coll *schema.Collection, unique []string, claims *uniqueClaims, dups *dupClaims, r ImportRecord, creating bool) (string, map[string]any, error) {
	eid, err := EscapeID(r.ID)
	if err != nil {
		return "", nil, err
	}
	norm, err := coll.ValidateWrite(r.ID, r.Fields, creating)
	if err != nil {
		return "", nil, err
	}
	if err := claimAll(ctx, claims, unique, r.ID, norm); err != nil {
		return "", nil, err
	}
	if dups != nil {
		// After the unique values: an exact repeat reads as such.
		if err := dups.claim(ctx, r.ID, norm); err != nil {
			return "", nil, err
		}
	}
	return eid, norm, nil
}

// claimAll claims the unique values of one record of an import, all or
// none: when one is refused, those claimed before it are given back, so
// that a record left out (ImportOptions.SkipInvalid) claims nothing and
// releases nothing.
func claimAll(ctx context.Context, claims *uniqueClaims, unique []string, id string, norm map[string]any) error {
	type undo struct {
		field      string
		v, old     any
		hadV       bool // v was claimed by id already
		hadOld     bool // id had claimed old
		releaseOld bool // claiming v gave old back
	}
	var done []undo
	for _, f := range unique {
		v, ok := norm[f]
		if !ok {
			continue
		}
		u := undo{field: f, v: v}
		if fc := claims.fields[f]; fc != nil {
			u.old, u.hadOld = fc.byOwner[id]
			_, u.hadV = fc.byValue[v]
			u.releaseOld = u.hadOld && u.old != nil && fc.byValue[u.old] == id
		}
		if err := claims.claim(ctx, f, id, v); err != nil {
			for _, u := range slices.Backward(done) {
				fc := claims.fields[u.field]
				if u.v != nil && !u.hadV {
					delete(fc.byValue, u.v)
				}
				if u.releaseOld {
					fc.byValue[u.old] = id
				}
				if u.hadOld {
					fc.byOwner[id] = u.old
				} else {
					delete(fc.byOwner, id)
				}
			}
			return err
		}
		done = append(done, u)
	}
	return nil
}

// planImport is the dry run of one good record of an import: planned
// against the store as it is, counted, nothing written.
func (s *Store) planImport(ctx context.Context, collection string, line int, eid string, known bool, norm map[string]any, ru rules, res *ImportResult) error {
	cur := newRecordOps(eid)
	if known {
		var err error
		if cur, err = s.readRecord(ctx, collection, eid); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
	p, err := s.planWrite(ctx, collection, eid, cur, norm, ru)
	if err != nil {
		return fmt.Errorf("line %d: %w", line, err)
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
	return nil
}
