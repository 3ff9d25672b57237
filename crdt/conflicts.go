package crdt

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// RecordField names a record-level conflict (a delete concurrent with edits)
// where a field name is expected.
const RecordField = "_record"

// Errors of Resolve.
var (
	// ErrNoConflict: there is nothing to resolve.
	ErrNoConflict = errors.New("no conflict")
	// ErrConflictChanged: the candidates are not the ones the caller saw.
	ErrConflictChanged = errors.New("the conflict changed since it was read")
	// ErrBadResolution: the resolution does not fit the conflict.
	ErrBadResolution = errors.New("bad resolution")
)

// Conflict is one conflicted field of a record, or the record itself
// (Field == RecordField).
type Conflict struct {
	Collection string
	ID         string
	Field      string
	Policy     string
	// Open: a manual conflict waiting for a person or the conflict hook.
	Open bool
	// Candidates, the one shown first, then newest first. For a record
	// conflict, deletes have Deleted set and edits carry their field.
	Candidates []ConflictCandidate
}

// ConflictCandidate is one of the concurrent operations of a conflict.
type ConflictCandidate struct {
	Op      OpID
	Field   string
	Value   any
	Deleted bool
}

// ConflictsOf lists the conflicts of a record: its record conflict first,
// then its conflicted fields by name.
func ConflictsOf(rec *Record) []Conflict {
	var out []Conflict
	if c := rec.Conflict; c != nil {
		rc := Conflict{Collection: rec.Collection, ID: rec.ID, Field: RecordField, Policy: c.Policy, Open: c.Open}
		dels := make([]ConflictCandidate, 0, len(c.Deletes))
		for _, d := range c.Deletes {
			dels = append(dels, ConflictCandidate{Op: d.ID, Field: DeleteField, Deleted: true})
		}
		edits := make([]ConflictCandidate, 0, len(c.Edits))
		for _, e := range c.Edits {
			edits = append(edits, ConflictCandidate{Op: e.ID, Field: e.Field, Value: e.Value})
		}
		if c.Deleted {
			rc.Candidates = append(dels, edits...)
		} else {
			rc.Candidates = append(edits, dels...)
		}
		out = append(out, rc)
	}
	names := make([]string, 0, len(rec.Fields))
	for name, f := range rec.Fields {
		if f.Conflicted() {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		f := rec.Fields[name]
		c := Conflict{Collection: rec.Collection, ID: rec.ID, Field: name, Policy: f.Policy, Open: f.Open}
		for _, cand := range f.Candidates {
			c.Candidates = append(c.Candidates, ConflictCandidate{Op: cand.Op, Field: name, Value: cand.Value})
		}
		out = append(out, c)
	}
	return out
}

// Conflicts calls fn for every conflict in the given collections (all
// collections of the schema when none is given), in collection, record and
// field order.
func (s *Store) Conflicts(ctx context.Context, collections []string, fn func(Conflict) error) error {
	if len(collections) == 0 {
		sc, err := s.Schema(ctx)
		if err != nil {
			return err
		}
		collections = sc.Names()
	} else {
		for _, c := range collections {
			if _, err := s.Collection(ctx, c); err != nil {
				return err
			}
		}
	}
	for _, coll := range collections {
		err := s.listFolded(ctx, coll, func(rec *Record, _ bool) error {
			for _, c := range ConflictsOf(rec) {
				if err := fn(c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("conflicts of %s: %w", coll, err)
		}
	}
	return nil
}

// RecordConflicts returns the conflicts of one record.
func (s *Store) RecordConflicts(ctx context.Context, collection, id string) ([]Conflict, error) {
	cur, ru, _, err := s.readForResolve(ctx, collection, id)
	if err != nil {
		return nil, err
	}
	rec, _ := cur.fold(collection, id, ru)
	if rec == nil {
		return nil, nil
	}
	return ConflictsOf(rec), nil
}

func (s *Store) readForResolve(ctx context.Context, collection, id string) (*recordOps, rules, string, error) {
	eid, err := EscapeID(id)
	if err != nil {
		return nil, rules{}, "", err
	}
	if err := s.checkWritable(ctx, collection, eid); err != nil {
		return nil, rules{}, "", fmt.Errorf("resolve %s/%s: %w", collection, id, err)
	}
	if _, err := s.Collection(ctx, collection); err != nil {
		return nil, rules{}, "", err
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return nil, rules{}, "", err
	}
	cur, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return nil, rules{}, "", fmt.Errorf("read %s/%s: %w", collection, id, err)
	}
	return cur, ru, eid, nil
}

// Resolution says how to end a conflict: Pick is a 1-based index into the
// conflict's candidates (as Conflicts lists them); otherwise Value (or
// Text) is the new value (fields only). Expect, if set, must list the candidates' op ids
// in order: the resolution is refused when the conflict changed since it
// was looked at.
type Resolution struct {
	Pick  int
	Value any
	// Text, if set instead of Value, is the new value as typed on a command
	// line, parsed by the field's type in the same pass that validates it.
	Text   *string
	Expect []OpID
}

// Resolve ends a conflict. For a field, it writes the chosen value as an
// ordinary operation that supersedes every candidate, so the conflict
// disappears on every node. For the record (RecordField), picking a delete
// deletes the record after seeing every edit; picking an edit keeps the
// record by tombstoning the deletes.
func (s *Store) Resolve(ctx context.Context, collection, id, field string, res Resolution) (OpID, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, ru, eid, err := s.readForResolve(ctx, collection, id)
	if err != nil {
		return OpID{}, err
	}
	rec, exists := cur.fold(collection, id, ru)
	var conflict *Conflict
	if rec != nil {
		for _, c := range ConflictsOf(rec) {
			if c.Field == field {
				conflict = &c
				break
			}
		}
	}
	if conflict == nil {
		return OpID{}, fmt.Errorf("%s/%s field %q: %w", collection, id, field, ErrNoConflict)
	}
	if len(res.Expect) > 0 {
		same := len(res.Expect) == len(conflict.Candidates)
		for i := 0; same && i < len(res.Expect); i++ {
			same = res.Expect[i] == conflict.Candidates[i].Op
		}
		if !same {
			return OpID{}, fmt.Errorf("%s/%s field %q: %w", collection, id, field, ErrConflictChanged)
		}
	}
	var chosen *ConflictCandidate
	if res.Pick != 0 {
		if res.Pick < 1 || res.Pick > len(conflict.Candidates) {
			return OpID{}, fmt.Errorf("%s/%s field %q: %w: --pick %d: there are %d candidates", collection, id, field, ErrBadResolution, res.Pick, len(conflict.Candidates))
		}
		chosen = &conflict.Candidates[res.Pick-1]
	}

	if field == RecordField {
		if chosen == nil {
			return OpID{}, fmt.Errorf("%s/%s: %w: a record conflict is resolved with --pick", collection, id, ErrBadResolution)
		}
		if chosen.Deleted {
			return s.deleteRecord(ctx, collection, eid, cur)
		}
		return s.keepRecord(ctx, collection, eid, cur)
	}
	if !exists {
		return OpID{}, fmt.Errorf("%s/%s is deleted: %w: resolve its record conflict (%s) first", collection, id, ErrBadResolution, RecordField)
	}
	value := res.Value
	if chosen != nil {
		value = chosen.Value
	}
	coll, err := s.Collection(ctx, collection)
	if err != nil {
		return OpID{}, err
	}
	typed, text := map[string]any{field: value}, map[string]string(nil)
	if chosen == nil && res.Text != nil {
		typed, text = nil, map[string]string{field: *res.Text}
	}
	norm, err := coll.ValidateWriteText(id, typed, text, false)
	if err != nil {
		return OpID{}, err
	}
	if err := s.checkUnique(ctx, coll, id, norm); err != nil {
		return OpID{}, err
	}
	p, err := s.writeRecord(ctx, collection, eid, cur, norm, ru)
	if err != nil {
		return OpID{}, err
	}
	return p.Op, nil
}

// keepRecord ends a record conflict in favour of the edits: one operation
// on KeepField supersedes (tombstones) every visible delete. It is never
// shown; it records who kept the record and what it replaced.
func (s *Store) keepRecord(ctx context.Context, collection, eid string, cur *recordOps) (OpID, error) {
	s.clock.Observe(cur.maxTime())
	keep := Op{ID: OpID{Time: s.clock.Now(), Writer: s.opts.Writer}, Field: KeepField, Value: true}
	for _, d := range cur.deletes {
		keep.Supersedes = append(keep.Supersedes, d.Ref())
	}
	p, err := s.planElement(ctx, collection, eid, cur, &write{ID: keep.ID, Ops: []Op{keep}})
	if err != nil {
		return OpID{}, err
	}
	if err := s.writePlanned(ctx, collection, eid, p); err != nil {
		return OpID{}, fmt.Errorf("keep: %w", err)
	}
	return keep.ID, nil
}
