package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

// recordField is the field name of deletes and record conflicts in the
// JSON output.
const recordField = "_record"

// histEntry is one entry of `ferry history COLLECTION ID --json`.
type histEntry struct {
	Field      string   `json:"field"`
	Op         string   `json:"op"`
	Value      any      `json:"value"`
	Deleted    bool     `json:"deleted"`
	Writer     string   `json:"writer"`
	Supersedes []string `json:"supersedes"`
	Seen       []string `json:"seen"`
	Visible    bool     `json:"visible"`
	Origin     string   `json:"origin"`
	Block      string   `json:"block"`
	Compacted  bool     `json:"compacted"`
}

func (e histEntry) ref() string { return e.Field + "/" + e.Op }

// history runs `ferry history contacts ID --json` on n.
func (c *cluster) history(ctx context.Context, n *node, id string) ([]histEntry, error) {
	res := c.ferry(ctx, n, "history", collection, id, "--json")
	if !res.ok() {
		return nil, fmt.Errorf("history %s/%s on %s: %s", collection, id, n.name, res.brief())
	}
	var h []histEntry
	if err := json.Unmarshal([]byte(res.stdout), &h); err != nil {
		return nil, fmt.Errorf("history --json on %s: %w", n.name, err)
	}
	return h, nil
}

// recordJSON is one line of `ferry list contacts --json`.
type recordJSON struct {
	ID        string         `json:"id"`
	Fields    map[string]any `json:"fields"`
	Conflicts map[string]struct {
		Candidates []candJSON `json:"candidates"`
	} `json:"conflicts"`
}

// nodeView is what the checks read from one node.
type nodeView struct {
	n         *node
	records   map[string]*recordJSON // visible records by id
	conflicts []conflictJSON
	hist      map[string][]histEntry
	// Channels (channels_check.go): what `ferry channels --json` says,
	// the channels held, each record's normalised line, the normalised
	// conflicts one by one, and the ids listed more than once.
	chans     apijson.Channels
	held      map[string]bool
	lines     map[string]string
	confLines []string
	dups      map[string]int
}

// normalise re-encodes JSON with sorted keys and no spacing.
func normalise(data []byte) (string, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v)
	return string(out), err
}

// readView reads a node's records and conflicts.
func (c *cluster) readView(ctx context.Context, n *node) (*nodeView, error) {
	v := &nodeView{n: n, records: map[string]*recordJSON{}, hist: map[string][]histEntry{}, lines: map[string]string{}, dups: map[string]int{}}
	res := c.ferry(ctx, n, "list", collection, "--json")
	if !res.ok() {
		return nil, fmt.Errorf("list on %s: %s", n.name, res.brief())
	}
	for _, line := range strings.Split(res.stdout, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var rec recordJSON
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("list --json on %s: %w", n.name, err)
		}
		s, err := normalise([]byte(line))
		if err != nil {
			return nil, err
		}
		if v.records[rec.ID] != nil {
			v.dups[rec.ID] = max(2, v.dups[rec.ID]+1)
		}
		v.records[rec.ID] = &rec
		v.lines[rec.ID] = s
	}
	res = c.ferry(ctx, n, "conflicts", "--json")
	if !res.ok() {
		return nil, fmt.Errorf("conflicts on %s: %s", n.name, res.brief())
	}
	if err := json.Unmarshal([]byte(res.stdout), &v.conflicts); err != nil {
		return nil, fmt.Errorf("conflicts --json on %s: %w", n.name, err)
	}
	if err := c.readChannels(ctx, v, res.stdout); err != nil {
		return nil, err
	}
	return v, nil
}

// verify runs the checks on the converged cluster: every node lists the
// same records and the same conflicts, every acknowledged write is
// accounted for on every node, no write refused on a full disk shows on
// any node, and every record of an import cut by a full disk is whole or
// absent. It returns what it found wrong.
func (c *cluster) verify(ctx context.Context) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	var views []*nodeView
	for _, n := range c.nodes {
		v, err := c.readView(ctx, n)
		if err != nil {
			add("%v", err)
			return probs
		}
		views = append(views, v)
	}
	// Each node lists, of the channels it holds, the office's records and
	// conflicts, and nothing of the others (channels_check.go).
	c.ch.pendingCuts, c.ch.cutSeen = nil, map[string]bool{}
	c.ch.final = c.finalChannels(ctx, views[0])
	c.verifyChannels(ctx, views, add)
	exempt := c.exemptWrites(ctx, add)
	c.ch.exempt = exempt
	c.prefetchHistories(ctx, views)
	// ferry diff compares digests over the sync protocol: from the office
	// to every other node.
	for _, n := range c.nodes[1:] {
		res := c.ferry(ctx, c.nodes[0], "diff", n.name)
		if !res.ok() {
			add("ferry diff %s on %s: %s", n.name, c.nodes[0].name, res.brief())
		}
	}
	checked, lost := 0, 0
	for _, w := range c.acked {
		if why, ok := exempt[w]; ok {
			c.logf("not checked: acknowledged %s (step %d, on %s, %s/%s%s): %s", w.kind, w.step, w.node.name, collection, w.id, opSuffix(w.op), why)
			continue
		}
		for _, v := range views {
			if !c.holdsFinal(v, w) {
				continue
			}
			checked++
			if msg := c.checkWrite(ctx, v, w); msg != "" {
				lost++
				if lost <= 25 {
					add("acknowledged %s (step %d, on %s, %s/%s%s, channel %s then, %s at the end) on %s: %s%s%s", w.kind, w.step, w.node.name, collection, w.id, opSuffix(w.op), w.ch, c.ch.final[w.id], v.n.name, msg, c.movedNote(w.id), stuckNote(views, w))
				}
			}
		}
	}
	if lost > 25 {
		add("%d more acknowledged writes not accounted for", lost-25)
	}
	c.verifyFailed(ctx, views, add)
	c.verifyCompaction(ctx, views, add)
	open := 0
	for _, cf := range views[0].conflicts {
		if cf.Open {
			open++
		}
	}
	c.logf("checked %d acknowledged writes on %d nodes (%d write×node checks, %d failed); %d conflicts (%d open), %d records",
		len(c.acked), len(views), checked, lost, len(views[0].conflicts), open, len(views[0].records))
	return probs
}

// prefetchHistories reads, on every node at once (one command at a time
// per node), the histories the checks below will need, so that they find
// them in each view's cache: the checks themselves run one after the
// other. A history that fails here is read again (and its error reported)
// by the check that needs it.
func (c *cluster) prefetchHistories(ctx context.Context, views []*nodeView) {
	var wg sync.WaitGroup
	for _, v := range views {
		var ids []string
		want := map[string]bool{}
		need := func(id string) {
			if !want[id] {
				want[id] = true
				ids = append(ids, id)
			}
		}
		for _, w := range c.acked {
			if c.holdsFinal(v, w) && needsHistory(v, w) {
				need(w.id)
			}
		}
		for _, w := range c.failed {
			if c.failedNeedsHistory(views, w.id, w.sample) {
				need(w.id)
			}
		}
		for _, w := range c.cut {
			if w.sample || c.touched[w.id] > 1 {
				need(w.id)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hist := map[string][]histEntry{}
			for _, id := range ids {
				if ctx.Err() != nil {
					break
				}
				if h, err := c.history(ctx, v.n, id); err == nil {
					hist[id] = h
				}
			}
			v.hist = hist
		}()
	}
	wg.Wait()
}

// needsHistory reports whether checkWrite reads the history of w's record
// on v's node: for an operation it wrote, or a value without an op id that
// the record does not show.
func needsHistory(v *nodeView, w *ackedWrite) bool {
	if len(w.fields) > 0 {
		return true
	}
	rec := v.records[w.id]
	for f, val := range w.same {
		if rec == nil || !shows(rec, f, val) {
			return true
		}
	}
	return false
}

// verifyUntil runs verify until it finds nothing wrong or until the end of
// the deadline (blocks that change nothing visible may still be on their
// way when the digests are equal).
func (c *cluster) verifyUntil(ctx context.Context, until time.Time) {
	for {
		probs := c.verify(ctx)
		if len(probs) == 0 {
			return
		}
		if ctx.Err() != nil || time.Now().After(until) {
			for _, p := range probs {
				c.problem("%s", p)
			}
			return
		}
		c.logf("the checks found %d problems (first: %s); checking again", len(probs), oneLine(probs[0]))
		sleep(ctx, time.Second)
	}
}

func opSuffix(op string) string {
	if op == "" {
		return ""
	}
	return " op " + op
}

// firstDiff shows where two normalised outputs start to differ.
func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(0, i-120)
	clip := func(s string) string {
		end := min(len(s), i+200)
		if from >= end {
			return "(end)"
		}
		return s[from:end]
	}
	return fmt.Sprintf("at byte %d:\n  one:   %s\n  other: %s", i, clip(a), clip(b))
}

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
