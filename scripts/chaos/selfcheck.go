package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// selfCheck makes sure the checks can fail: it adds writes that were never
// made (an unknown op id, a value nobody wrote, a real op with a changed
// value) and reports a problem unless verify flags each of them.
func (c *cluster) selfCheck(ctx context.Context) {
	var real *ackedWrite
	for _, w := range c.acked {
		if w.op != "" && w.kind != "delete" && len(w.fields) > 0 {
			real = w
			break
		}
	}
	writer := c.nodes[len(c.nodes)-1]
	fakes := []*ackedWrite{
		// Made after the last step: no compaction can account for them.
		{kind: "selfcheck-unknown-op", step: c.h.opts.ops + 1, node: writer, id: "c00", op: "0000000000000001-" + writer.peerID, fields: map[string]any{"name": "ghost"}},
		{kind: "selfcheck-unknown-value", step: c.h.opts.ops + 1, node: writer, id: "c00", same: map[string]any{"city": "Atlantis"}},
	}
	if real != nil {
		w := *real
		w.kind = "selfcheck-changed-value"
		w.fields = map[string]any{}
		for f := range real.fields {
			w.fields[f] = "never written"
		}
		fakes = append(fakes, &w)
	}
	failedFakes := c.fakeFailed(ctx, writer)
	// A record of a cut import written in part: a value that shows, with
	// a field never written in the same operation.
	var cutFakes []*cutRecord
	for _, f := range failedFakes {
		if f.kind == "selfcheck-visible" {
			cutFakes = append(cutFakes, &cutRecord{step: -1, node: writer, id: f.id, fields: map[string]any{f.field: f.value, "selfcheck": "never written"}, sample: true})
		}
	}
	saved, savedFailed, savedCut, savedCh, savedStats := c.acked, c.failed, c.cut, c.ch, c.stats.ch
	c.acked, c.failed, c.cut = fakes, failedFakes, cutFakes
	probs := c.verify(ctx)
	c.acked, c.failed, c.cut, c.ch, c.stats.ch = saved, savedFailed, savedCut, savedCh, savedStats
	flagged := func(prefix string) bool {
		for _, p := range probs {
			if strings.Contains(p, prefix) {
				return true
			}
		}
		return false
	}
	for _, f := range fakes {
		if !flagged("acknowledged " + f.kind + " ") {
			c.problem("self-check: the checks did not flag the fabricated write %s; they said: %v", f.kind, probs)
		}
	}
	for _, f := range failedFakes {
		if !flagged("failed " + f.kind + " ") {
			c.problem("self-check: the checks did not flag the fabricated failed write %s (%s/%s %s=%v, which shows); they said: %v", f.kind, collection, f.id, f.field, f.value, probs)
		}
	}
	for _, f := range cutFakes {
		if !flagged(fmt.Sprintf("record of an import cut by a full disk (step -1, on %s, %s/%s)", f.node.name, collection, f.id)) {
			c.problem("self-check: the checks did not flag the fabricated partly written record %s/%s; they said: %v", collection, f.id, probs)
		}
	}
	c.logf("self-check: %d fabricated writes, %d fabricated failed writes, %d fabricated partial records, %d problems reported", len(fakes), len(failedFakes), len(cutFakes), len(probs))
}

// fakeFailed fabricates failed writes whose value does show: a value
// visible on the office (the name of a record, else any field), and one
// that is only in a history (superseded), when there is one.
func (c *cluster) fakeFailed(ctx context.Context, writer *node) []*failedWrite {
	v, err := c.readView(ctx, c.nodes[0])
	if err != nil {
		c.problem("self-check: %v", err)
		return nil
	}
	ids := make([]string, 0, len(v.records))
	for id := range v.records {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []*failedWrite
	for _, pass := range []bool{true, false} {
		for _, id := range ids {
			rec := v.records[id]
			fields := make([]string, 0, len(rec.Fields))
			for f := range rec.Fields {
				fields = append(fields, f)
			}
			sort.Strings(fields)
			for _, f := range fields {
				if _, conflicted := rec.Conflicts[f]; conflicted || rec.Fields[f] == nil || (pass && f != markerField) {
					continue
				}
				out = append(out, &failedWrite{kind: "selfcheck-visible", node: writer, id: id, field: f, value: rec.Fields[f], sample: true})
				break
			}
			if len(out) > 0 {
				break
			}
		}
		if len(out) > 0 {
			break
		}
	}
	if len(out) == 0 {
		c.problem("self-check: the office shows no value to fabricate a failed write with")
	}
	for _, id := range ids[:min(len(ids), 10)] {
		hist, err := c.history(ctx, c.nodes[0], id)
		if err != nil {
			continue
		}
		i := slices.IndexFunc(hist, func(e histEntry) bool {
			return !e.Visible && !e.Deleted && e.Field != recordField && e.Value != nil && !shows(v.records[id], e.Field, e.Value)
		})
		if i >= 0 {
			e := hist[i]
			out = append(out, &failedWrite{kind: "selfcheck-in-history", node: writer, id: id, field: e.Field, value: e.Value, sample: true})
			break
		}
	}
	return out
}
