package crdt

import (
	"slices"
	"strings"
	"time"
)

// Conflict policies (docs/merge-rules.md). Each decides which of several
// visible operations of a field (writes that did not see each other) shows.
const (
	// PolicyNewest shows the newest operation by HLC, ties by writer id.
	PolicyNewest = "newest"
	// PolicyOffice shows the newest operation written by an office node,
	// or the newest of all when no office node wrote one ("server wins").
	PolicyOffice = "office"
	// PolicyLaptop is the reverse: the newest laptop write wins ("client wins").
	PolicyLaptop = "laptop"
	// PolicyManual shows the newest operation and keeps the conflict open
	// until a person (or the office's conflict hook) resolves it.
	PolicyManual = "manual"
)

// Node roles as recorded in the replicated _nodes collection.
const (
	RoleOffice = "office"
	RoleLaptop = "laptop"
)

// Candidate is one visible operation of a field.
type Candidate struct {
	Value any
	Op    OpID
}

// FieldValue is the visible state of one field: the value shown and, when
// several operations are visible, every candidate, the one shown first and
// then the others newest first.
type FieldValue struct {
	Value      any
	Op         OpID
	Candidates []Candidate
	// Policy is the policy that chose the value.
	Policy string
	// Open is true while a manual conflict waits for a person.
	Open bool
}

// Conflicted reports whether concurrent writes of this field are visible.
func (f FieldValue) Conflicted() bool { return len(f.Candidates) > 1 }

// RecordConflict is a delete concurrent with edits of the same record.
type RecordConflict struct {
	// Deletes are the visible deletes; Edits the visible field operations
	// that some delete did not see. Both newest first.
	Deletes []Op
	Edits   []Op
	// Deleted tells which side shows.
	Deleted bool
	Policy  string
	Open    bool
}

// Record is the visible state of one record.
type Record struct {
	Collection string
	ID         string
	// Fields holds every field with a visible operation; a cleared field has
	// a nil Value (and is omitted from output unless conflicted).
	Fields map[string]FieldValue
	// Updated is the newest operation that makes up the record.
	Updated OpID
	// Conflict is set when a delete and edits of this record were concurrent.
	Conflict *RecordConflict
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

// Conflicted reports whether any field or the record itself is in conflict.
func (r *Record) Conflicted() bool {
	if r.Conflict != nil {
		return true
	}
	for _, f := range r.Fields {
		if f.Conflicted() {
			return true
		}
	}
	return false
}

// rules is what decides between candidates: each field's policy and each
// writer's role, both read from the replicated state.
type rules struct {
	recordPolicy string
	fieldPolicy  map[string]string // empty: recordPolicy
	roleOf       func(writer string) string
}

// newestRules decides everything by PolicyNewest (system collections).
var newestRules = rules{recordPolicy: PolicyNewest, roleOf: func(string) string { return "" }}

func (ru rules) policyOf(field string) string {
	if p := ru.fieldPolicy[field]; p != "" {
		return p
	}
	if ru.recordPolicy != "" {
		return ru.recordPolicy
	}
	return PolicyNewest
}

// choose returns the index of the operation to show among ops sorted newest
// first, and whether the choice is an open (manual) conflict.
func (ru rules) choose(policy string, ops []Op) (int, bool) {
	prefer := ""
	switch policy {
	case PolicyOffice:
		prefer = RoleOffice
	case PolicyLaptop:
		prefer = RoleLaptop
	case PolicyManual:
		return 0, len(ops) > 1
	}
	if prefer != "" {
		for i, op := range ops {
			role := ru.roleOf(op.ID.Writer)
			if role == prefer || (prefer == RoleLaptop && role != RoleOffice) {
				return i, false
			}
		}
	}
	return 0, false
}

// recordOps is every visible operation of one record, as read from the store.
type recordOps struct {
	escapedID string
	fields    map[string][]Op // visible field ops, by field
	deletes   []Op            // visible record-delete ops
	moved     []Op            // visible MovedField ops (see move.go)
	// ignored are the operations go-ds-crdt shows that do not count (see
	// Trust); when there are any, fields and deletes were recomputed from
	// the record's whole history.
	ignored []IgnoredOp
	// writes are the writes go-ds-crdt shows (not tombstoned), counting or
	// not; killed are the ops ("field/opid") superseded by an op that
	// counts. An op of a visible write is visible unless killed: a write
	// is tombstoned only once every field it wrote is superseded.
	writes []visibleWrite
	killed map[string]bool
}

// visibleWrite is a write go-ds-crdt shows: what a new write needs to
// decide whether to tombstone it and which of its supersede facts to carry
// on (see Store.retire). Reads only collect them.
type visibleWrite struct {
	*write
	ignored bool // some op of it does not count
}

func newRecordOps(escapedID string) *recordOps {
	return &recordOps{escapedID: escapedID, fields: map[string][]Op{}, killed: map[string]bool{}}
}

func (r *recordOps) add(op Op) {
	for _, sup := range op.Supersedes {
		r.killed[sup] = true
	}
	if op.Field == KeepField {
		return // never shown: it only supersedes
	}
	if op.Field == DeleteField {
		r.deletes = append(r.deletes, op)
		return
	}
	if op.Field == MovedField {
		r.moved = append(r.moved, op)
		return
	}
	r.fields[op.Field] = append(r.fields[op.Field], op)
}

// noteWrite records a write go-ds-crdt shows.
func (r *recordOps) noteWrite(w *write, ignored bool) {
	r.writes = append(r.writes, visibleWrite{write: w, ignored: ignored})
}

// prune drops the ops some op that counts superseded: the dead fields of
// writes that still have live ones.
func (r *recordOps) prune() {
	if len(r.killed) == 0 {
		return
	}
	for name, ops := range r.fields {
		ops = slices.DeleteFunc(ops, func(op Op) bool { return r.killed[op.Ref()] })
		if len(ops) == 0 {
			delete(r.fields, name)
		} else {
			r.fields[name] = ops
		}
	}
	r.deletes = slices.DeleteFunc(r.deletes, func(op Op) bool { return r.killed[op.Ref()] })
	r.moved = slices.DeleteFunc(r.moved, func(op Op) bool { return r.killed[op.Ref()] })
}

func sortNewestFirst(ops []Op) []Op {
	out := slices.Clone(ops)
	slices.SortFunc(out, func(a, b Op) int {
		switch {
		case a.ID.Newer(b.ID):
			return -1
		case b.ID.Newer(a.ID):
			return 1
		}
		// One write shares its op id across its fields.
		return strings.Compare(a.Field, b.Field)
	})
	return out
}

// recordConflict finds the edits some visible delete did not see. A delete
// lists the field operations visible to its writer; any other visible field
// operation was written without knowledge of the delete (a writer that saw
// the delete tombstoned it). nil when no delete is visible.
func (r *recordOps) recordConflict() *RecordConflict {
	if len(r.deletes) == 0 {
		return nil
	}
	c := &RecordConflict{Deletes: sortNewestFirst(r.deletes)}
	for _, ops := range r.fields {
		for _, op := range ops {
			ref := op.Field + "/" + op.ID.String()
			for _, d := range r.deletes {
				if !slices.Contains(d.Seen, ref) {
					c.Edits = append(c.Edits, op)
					break
				}
			}
		}
	}
	c.Edits = sortNewestFirst(c.Edits)
	return c
}

// exists applies the record rule: with no visible delete, a record exists
// when it has a visible field operation; otherwise the deletes and the edits
// they did not see are candidates, and the record's policy picks one: the
// record is deleted when the pick is a delete.
func (r *recordOps) exists(ru rules) (bool, *RecordConflict) {
	if _, moved := r.movedTo(); moved {
		return false, nil // an office moved it to another channel
	}
	c := r.recordConflict()
	if c == nil {
		return len(r.fields) > 0, nil
	}
	if len(c.Edits) == 0 {
		return false, nil
	}
	all := sortNewestFirst(append(slices.Clone(c.Deletes), c.Edits...))
	c.Policy = ru.recordPolicy
	if c.Policy == "" {
		c.Policy = PolicyNewest
	}
	i, open := ru.choose(c.Policy, all)
	c.Deleted, c.Open = all[i].Field == DeleteField, open
	return !c.Deleted, c
}

// maxTime is the largest timestamp among the visible ops, to be observed by
// the clock before writing over them.
func (r *recordOps) maxTime() Timestamp {
	var t Timestamp
	for _, ops := range r.fields {
		for _, op := range ops {
			t = max(t, op.ID.Time)
		}
	}
	for _, op := range r.deletes {
		t = max(t, op.ID.Time)
	}
	for _, op := range r.moved {
		t = max(t, op.ID.Time)
	}
	return t
}

// fold computes the visible record. ok is false when the record does not
// exist (never written, or deleted); rec is still returned when a deleted
// record is in conflict, so the conflict can be listed.
func (r *recordOps) fold(collection, id string, ru rules) (rec *Record, ok bool) {
	exists, conflict := r.exists(ru)
	if !exists && conflict == nil {
		return nil, false
	}
	rec = &Record{Collection: collection, ID: id, Fields: make(map[string]FieldValue, len(r.fields)), Conflict: conflict}
	for name, ops := range r.fields {
		fv := foldField(ops, ru.policyOf(name), ru)
		rec.Fields[name] = fv
		if fv.Op.Newer(rec.Updated) {
			rec.Updated = fv.Op
		}
	}
	return rec, exists
}

// foldField picks the value shown among a field's visible ops.
func foldField(ops []Op, policy string, ru rules) FieldValue {
	sorted := sortNewestFirst(ops)
	i, open := ru.choose(policy, sorted)
	fv := FieldValue{Value: sorted[i].Value, Op: sorted[i].ID, Policy: policy, Open: open}
	if len(sorted) > 1 {
		fv.Candidates = make([]Candidate, 0, len(sorted))
		fv.Candidates = append(fv.Candidates, Candidate{Value: sorted[i].Value, Op: sorted[i].ID})
		for j, op := range sorted {
			if j != i {
				fv.Candidates = append(fv.Candidates, Candidate{Value: op.Value, Op: op.ID})
			}
		}
	}
	return fv
}
