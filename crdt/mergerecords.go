package crdt

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-crm/ferry/schema"
)

// MergeResult is what MergeRecords wrote.
type MergeResult struct {
	// Fields are the fields of the kept record given the other's value.
	Fields []string
	// Refs are the records ("collection/id") whose ref fields pointed to
	// the other record and now point to the kept one.
	Refs []string
	// Deleted is the delete of the other record.
	Deleted OpID
}

// MergeRecords merges record other into record keep of a collection, field
// by field: each field takes the newest non-empty value of the two (with
// preferKeep, keep's value whenever it has one). Then every ref field of
// any collection that points to other is rewritten to keep, and other is
// deleted; its history stays (History of other), and keep's history shows
// the merge write. These are ordinary writes, so every node converges on
// them. They are written one record at a time, the delete last: a merge
// cut short (a crash) is finished by running it again.
func (s *Store) MergeRecords(ctx context.Context, collection, keep, other string, preferKeep bool) (MergeResult, error) {
	var res MergeResult
	if keep == other {
		return res, fmt.Errorf("merge %s/%s: a record cannot be merged into itself", collection, keep)
	}
	sc, err := s.Schema(ctx)
	if err != nil {
		return res, err
	}
	c, err := collectionOf(sc, collection)
	if err != nil {
		return res, err
	}
	keepRec, err := s.Get(ctx, collection, keep)
	if err != nil {
		return res, fmt.Errorf("merge: %w", err)
	}
	otherRec, err := s.Get(ctx, collection, other)
	if err != nil {
		return res, fmt.Errorf("merge: %w", err)
	}
	// A merge writes values over both records: it would settle an open
	// conflict without anyone choosing, and drop the other's candidates.
	for _, rec := range []*Record{keepRec, otherRec} {
		if f := openConflict(rec); f != "" {
			return res, fmt.Errorf("merge %s/%s: %w: %s has an open conflict (%s): resolve it first (ferry conflicts)", collection, rec.ID, ErrConflictOpen, rec.ID, f)
		}
	}
	for _, name := range []string{keep, other} {
		eid, err := EscapeID(name)
		if err != nil {
			return res, err
		}
		if err := s.checkWritable(ctx, collection, eid); err != nil {
			return res, fmt.Errorf("merge %s/%s: %w", collection, name, err)
		}
	}
	fields := map[string]any{}
	for _, name := range c.FieldNames() {
		k, o := keepRec.Fields[name], otherRec.Fields[name]
		if o.Value == nil {
			continue
		}
		if k.Value == nil || !preferKeep && o.Op.Newer(k.Op) && o.Value != k.Value {
			fields[name] = o.Value
			res.Fields = append(res.Fields, name)
		}
	}
	// Referrers first: reading them needs no lock.
	type ref struct {
		coll, id, field string
	}
	var refs []ref
	for _, cname := range sc.Names() {
		rc := sc.Collections[cname]
		var refFields []string
		for _, f := range rc.FieldNames() {
			if fd := rc.Fields[f]; fd.Type == schema.TypeRef && fd.To == collection {
				refFields = append(refFields, f)
			}
		}
		if len(refFields) == 0 {
			continue
		}
		err := s.List(ctx, cname, func(r *Record) error {
			for _, f := range refFields {
				if r.Fields[f].Value == other {
					refs = append(refs, ref{cname, r.ID, f})
				}
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("merge: find refs to %s/%s: %w", collection, other, err)
		}
	}
	// Every referrer must be writable here before anything is written: a
	// repoint every peer ignored would leave refs to the deleted record.
	for _, r := range refs {
		eid, err := EscapeID(r.id)
		if err != nil {
			return res, err
		}
		if err := s.checkWritable(ctx, r.coll, eid); err != nil {
			return res, fmt.Errorf("merge: %s/%s.%s points to %s/%s and cannot be repointed from this node: %w", r.coll, r.id, r.field, collection, other, err)
		}
	}
	if len(fields) > 0 {
		if err := s.writeUnchecked(ctx, collection, keep, fields); err != nil {
			return res, fmt.Errorf("merge into %s/%s: %w", collection, keep, err)
		}
	}
	for _, r := range refs {
		if err := s.writeUnchecked(ctx, r.coll, r.id, map[string]any{r.field: keep}); err != nil {
			return res, fmt.Errorf("merge: repoint %s/%s.%s: %w", r.coll, r.id, r.field, err)
		}
		res.Refs = append(res.Refs, r.coll+"/"+r.id)
	}
	if res.Deleted, err = s.Delete(ctx, collection, other); err != nil && !errors.Is(err, ErrNotFound) {
		return res, fmt.Errorf("merge: %w", err)
	}
	return res, nil
}

// writeUnchecked writes fields of an existing record without the unique
// check (a merge moves values from the record it deletes next).
func (s *Store) writeUnchecked(ctx context.Context, collection, id string, fields map[string]any) error {
	eid, err := EscapeID(id)
	if err != nil {
		return err
	}
	coll, err := s.Collection(ctx, collection)
	if err != nil {
		return err
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return err
	}
	norm, err := coll.ValidateWrite(id, fields, false)
	if err != nil {
		return err
	}
	_, err = s.writeRecord(ctx, collection, eid, cur, norm, ru)
	return err
}

// ErrConflictOpen: the records to merge have an open conflict.
var ErrConflictOpen = errors.New("open conflict")

// openConflict names an open conflict of rec ("" if none): a field's, or
// the record's ("_record").
func openConflict(rec *Record) string {
	if rec.Conflict != nil && rec.Conflict.Open {
		return RecordField
	}
	for name, f := range rec.Fields {
		if f.Open {
			return name
		}
	}
	return ""
}
