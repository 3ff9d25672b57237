package crdt

import (
	"sort"
	"time"
)

// Candidate is one visible operation of a field.
type Candidate struct {
	Value any
	Op    OpID
}

// FieldValue is the visible state of one field: the winning value and, when
// more than one operation is visible (writes that did not see each other),
// every candidate, the winner first.
type FieldValue struct {
	Value      any
	Op         OpID
	Candidates []Candidate
}

// Conflicted reports whether concurrent writes of this field are visible.
func (f FieldValue) Conflicted() bool { return len(f.Candidates) > 1 }

// Record is the visible state of one record.
type Record struct {
	Collection string
	ID         string
	// Fields holds every field with a visible operation; a cleared field has
	// a nil Value (and is omitted from output unless conflicted).
	Fields map[string]FieldValue
	// Updated is the newest operation that makes up the record.
	Updated OpID
}

// UpdatedAt is the wall-clock time of the newest operation.
func (r *Record) UpdatedAt() time.Time { return r.Updated.Time.Wall() }

// Values returns the non-nil field values.
func (r *Record) Values() map[string]any {
	out := make(map[string]any, len(r.Fields))
	for name, f := range r.Fields {
		if f.Value != nil {
			out[name] = f.Value
		}
	}
	return out
}

// recordOps is every visible operation of one record, as read from the store.
type recordOps struct {
	escapedID string
	fields    map[string][]Op // visible field ops, by field
	deletes   []Op            // visible record-delete ops
}

func newRecordOps(escapedID string) *recordOps {
	return &recordOps{escapedID: escapedID, fields: map[string][]Op{}}
}

func (r *recordOps) add(op Op) {
	if op.Field == DeleteField {
		r.deletes = append(r.deletes, op)
		return
	}
	r.fields[op.Field] = append(r.fields[op.Field], op)
}

// newest returns the newest op of ops (zero OpID when empty).
func newest(ops []Op) (OpID, bool) {
	var best OpID
	found := false
	for _, op := range ops {
		if !found || op.ID.Newer(best) {
			best, found = op.ID, true
		}
	}
	return best, found
}

// newestFieldOp is the newest operation over all fields.
func (r *recordOps) newestFieldOp() (OpID, bool) {
	var best OpID
	found := false
	for _, ops := range r.fields {
		if id, ok := newest(ops); ok && (!found || id.Newer(best)) {
			best, found = id, true
		}
	}
	return best, found
}

// exists applies the record rule: a record exists when it has a visible field
// operation newer than every visible delete of it.
func (r *recordOps) exists() bool {
	f, ok := r.newestFieldOp()
	if !ok {
		return false
	}
	d, deleted := newest(r.deletes)
	return !deleted || f.Newer(d)
}

// maxTime is the largest timestamp among the visible ops, to be observed by
// the clock before writing over them.
func (r *recordOps) maxTime() Timestamp {
	var t Timestamp
	for _, ops := range r.fields {
		for _, op := range ops {
			if op.ID.Time > t {
				t = op.ID.Time
			}
		}
	}
	for _, op := range r.deletes {
		if op.ID.Time > t {
			t = op.ID.Time
		}
	}
	return t
}

// fold computes the visible record. ok is false when the record does not
// exist (never written, or deleted by a delete newer than every edit).
func (r *recordOps) fold(collection, id string) (*Record, bool) {
	if !r.exists() {
		return nil, false
	}
	rec := &Record{Collection: collection, ID: id, Fields: make(map[string]FieldValue, len(r.fields))}
	for name, ops := range r.fields {
		rec.Fields[name] = foldField(ops)
		if w := rec.Fields[name].Op; w.Newer(rec.Updated) {
			rec.Updated = w
		}
	}
	return rec, true
}

// foldField picks the winner among a field's visible ops: the newest by
// hybrid logical clock, ties broken by writer id.
func foldField(ops []Op) FieldValue {
	sorted := append([]Op(nil), ops...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID.Newer(sorted[j].ID) })
	fv := FieldValue{Value: sorted[0].Value, Op: sorted[0].ID}
	if len(sorted) > 1 {
		fv.Candidates = make([]Candidate, len(sorted))
		for i, op := range sorted {
			fv.Candidates[i] = Candidate{Value: op.Value, Op: op.ID}
		}
	}
	return fv
}
