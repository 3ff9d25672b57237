package main

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// checkWrite says why write w is not accounted for on the node of view v
// ("" when it is): its operation must be in the node's history, and either
// still visible (shown, or a candidate of a conflict), or superseded by an
// operation that lists it (so had seen it), or, on a deleted record, seen
// by a visible delete or a candidate of the record conflict. A write
// without a known op id (imports, fields a put skipped as unchanged) is
// matched by field and value.
func (c *cluster) checkWrite(ctx context.Context, v *nodeView, w *ackedWrite) string {
	rec := v.records[w.id]
	// Values without an op id: the visible value is enough.
	var unknown []string
	for f, val := range w.same {
		if rec != nil && shows(rec, f, val) {
			continue
		}
		unknown = append(unknown, f)
	}
	sort.Strings(unknown)
	if len(w.fields) == 0 && len(unknown) == 0 {
		return ""
	}
	hist, ok := v.hist[w.id]
	if !ok {
		h, err := c.history(ctx, v.n, w.id)
		if err != nil {
			if strings.Contains(err.Error(), "record not found") {
				return "LOST: the node has no operation of this record at all (history: record not found)"
			}
			return err.Error()
		}
		v.hist[w.id], hist = h, h
	}
	var problems []string
	fields := make([]string, 0, len(w.fields))
	for f := range w.fields {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for _, f := range fields {
		val := w.fields[f]
		if w.op == "" {
			unknown = append(unknown, f)
			continue
		}
		i := slices.IndexFunc(hist, func(e histEntry) bool { return e.Op == w.op && e.Field == f })
		if i < 0 {
			if ok, why := c.goneAccounted(ctx, w, v.n, hist, f, w.op); ok {
				continue
			} else if why != "" {
				problems = append(problems, fmt.Sprintf("%s: %s", f, why))
				continue
			}
			problems = append(problems, fmt.Sprintf("%s: LOST: operation not in the history", f))
			continue
		}
		e := hist[i]
		if f != recordField && !sameValue(e.Value, val) {
			problems = append(problems, fmt.Sprintf("%s: history has value %v, the write was %v", f, e.Value, val))
			continue
		}
		if ok, why := c.accountedAfter(ctx, w, v.n, e, hist, rec, v.conflicts); !ok {
			problems = append(problems, fmt.Sprintf("%s=%v: %s", f, val, why))
		}
	}
	for _, f := range unknown {
		val, ok := w.same[f]
		if !ok {
			val = w.fields[f]
		}
		var cands, own []histEntry
		for _, e := range hist {
			if e.Field != f {
				continue
			}
			if (f == recordField && e.Deleted) || (f != recordField && sameValue(e.Value, val)) {
				cands = append(cands, e)
				if e.Writer == w.node.peerID {
					own = append(own, e)
				}
			}
		}
		if len(own) > 0 {
			cands = own
		}
		if len(cands) == 0 {
			if op := w.sameOps[f]; op != "" {
				if ok, why := c.goneAccounted(ctx, w, v.n, hist, f, op); ok {
					continue
				} else if why != "" {
					problems = append(problems, fmt.Sprintf("%s=%v (op %s): %s", f, val, op, why))
					continue
				}
			}
			if ok, _ := c.goneValue(w, f, val); ok {
				continue
			}
			problems = append(problems, fmt.Sprintf("%s=%v: LOST: no operation with this value in the history", f, val))
			continue
		}
		var whys []string
		good := false
		for _, e := range cands {
			ok, why := c.accountedAfter(ctx, w, v.n, e, hist, rec, v.conflicts)
			if ok {
				good = true
				break
			}
			whys = append(whys, e.Op+": "+why)
		}
		if !good {
			problems = append(problems, fmt.Sprintf("%s=%v: %s", f, val, strings.Join(whys, "; ")))
		}
	}
	return strings.Join(problems, "; ")
}

// shows reports whether a visible record shows val in field f, as its
// value or as a conflict candidate.
func shows(rec *recordJSON, f string, val any) bool {
	if cf, ok := rec.Conflicts[f]; ok {
		for _, cand := range cf.Candidates {
			if sameValue(cand.Value, val) {
				return true
			}
		}
		return false
	}
	return sameValue(rec.Fields[f], val)
}

// accounted applies the rules of docs/merge-rules.md to one operation of
// the history of a record (rec: the record as listed, nil when it is not
// visible; conflicts: the node's whole conflict list).
func accounted(e histEntry, hist []histEntry, rec *recordJSON, conflicts []conflictJSON, id string) (bool, string) {
	ref := e.ref()
	if archived(e) {
		return true, "superseded before an epoch change (in this node's history archive)"
	}
	if !e.Visible {
		for _, s := range hist {
			if slices.Contains(s.Supersedes, ref) {
				return true, "superseded by " + s.ref()
			}
		}
		return false, "tombstoned, but no operation in the history supersedes it (lists it as seen and replaced)"
	}
	inRecordConflict := func() bool {
		for _, cf := range conflicts {
			if cf.Collection == collection && cf.ID == id && cf.Field == recordField {
				for _, cand := range cf.Candidates {
					if cand.Op == e.Op && (cand.Deleted == e.Deleted) && (e.Deleted || cand.Field == e.Field) {
						return true
					}
				}
			}
		}
		return false
	}
	if e.Deleted {
		if rec == nil {
			return true, "the record is deleted"
		}
		if inRecordConflict() {
			return true, "in the record conflict"
		}
		return false, "the delete is visible, but the record shows without a record conflict listing it"
	}
	if rec != nil {
		if cf, ok := rec.Conflicts[e.Field]; ok {
			for _, cand := range cf.Candidates {
				if cand.Op == e.Op {
					return true, "a candidate of the field's conflict"
				}
			}
			return false, "visible, but not among the candidates of the field's conflict"
		}
		if sameValue(rec.Fields[e.Field], e.Value) {
			return true, "visible"
		}
		return false, fmt.Sprintf("visible, but the record shows %v", rec.Fields[e.Field])
	}
	for _, d := range hist {
		if d.Deleted && d.Visible && slices.Contains(d.Seen, ref) {
			return true, "seen by the delete " + d.Op
		}
	}
	if inRecordConflict() {
		return true, "a candidate of the record conflict"
	}
	return false, "visible, on a record that is not shown, seen by no visible delete and not in a record conflict"
}

// sameValue compares JSON values (numbers as float64).
func sameValue(a, b any) bool {
	return reflect.DeepEqual(a, b)
}
