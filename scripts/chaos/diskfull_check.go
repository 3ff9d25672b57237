package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// checkFailed says where a failed write shows on the node of view v (""
// when nowhere): as a value or conflict candidate, or in the history.
func (c *cluster) checkFailed(ctx context.Context, v *nodeView, w *failedWrite, readHistory bool) string {
	var where []string
	if rec := v.records[w.id]; rec != nil && shows(rec, w.field, w.value) {
		where = append(where, "VISIBLE in "+w.field)
	}
	if !readHistory {
		return strings.Join(where, "; ")
	}
	hist, err := c.cachedHistory(ctx, v, w.id)
	if err != nil {
		if strings.Contains(err.Error(), "record not found") {
			return strings.Join(where, "; ")
		}
		return err.Error()
	}
	for _, e := range hist {
		if e.Field == w.field && sameValue(e.Value, w.value) {
			where = append(where, fmt.Sprintf("IN THE HISTORY: op %s by %s (origin %s, visible %t)", e.Op, e.Writer, e.Origin, e.Visible))
		}
	}
	return strings.Join(where, "; ")
}

// checkCut says why a record of a cut import is not whole on the node of
// view v ("" when it is whole, or not there at all).
func (c *cluster) checkCut(ctx context.Context, v *nodeView, w *cutRecord, readHistory bool) (string, bool) {
	if !readHistory {
		// Only this import wrote the id: the record shows every imported
		// value, or is not there.
		rec := v.records[w.id]
		if rec == nil {
			return "", false
		}
		var missing []string
		for _, f := range sortedKeys(w.fields) {
			if !shows(rec, f, w.fields[f]) {
				missing = append(missing, fmt.Sprintf("%s=%v (shows %v)", f, w.fields[f], rec.Fields[f]))
			}
		}
		if len(missing) > 0 {
			return "PARTLY WRITTEN: the record shows without " + strings.Join(missing, ", "), true
		}
		return "", true
	}
	hist, err := c.cachedHistory(ctx, v, w.id)
	if err != nil {
		if strings.Contains(err.Error(), "record not found") {
			return "", false
		}
		return err.Error(), false
	}
	m := w.fields[markerField]
	i := slices.IndexFunc(hist, func(e histEntry) bool { return e.Field == markerField && sameValue(e.Value, m) })
	if i < 0 {
		return "", false
	}
	op := hist[i].Op
	var missing []string
	for _, f := range sortedKeys(w.fields) {
		if !slices.ContainsFunc(hist, func(e histEntry) bool { return e.Op == op && e.Field == f && sameValue(e.Value, w.fields[f]) }) {
			missing = append(missing, fmt.Sprintf("%s=%v", f, w.fields[f]))
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("PARTLY WRITTEN: op %s holds %s=%v but not %s", op, markerField, m, strings.Join(missing, ", ")), true
	}
	return "", true
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// failedNeedsHistory: see verifyFailed.
func (c *cluster) failedNeedsHistory(views []*nodeView, id string, sample bool) bool {
	if sample || c.touched[id] > 1 {
		return true
	}
	for _, v := range views {
		if v.records[id] != nil {
			return true
		}
	}
	return false
}

// cachedHistory is the history of a record on v's node, read once per view.
func (c *cluster) cachedHistory(ctx context.Context, v *nodeView, id string) ([]histEntry, error) {
	if h, ok := v.hist[id]; ok {
		return h, nil
	}
	h, err := c.history(ctx, v.n, id)
	if err != nil {
		return nil, err
	}
	v.hist[id] = h
	return h, nil
}

// verifyFailed checks the failed writes and the cut imports on every view.
//
// Reading every history of a refused import of 200 records on every node
// would take minutes, so the history of a record is read when the write
// was a put, for the first historySample records of an import, when some
// other command wrote the same id, or when a node shows the record. The
// other records were written by that import only: had it been written,
// nothing could hide it, so the listed records suffice.
func (c *cluster) verifyFailed(ctx context.Context, views []*nodeView, add func(string, ...any)) {
	checked, shown, read := 0, 0, 0
	for _, w := range c.failed {
		rh := c.failedNeedsHistory(views, w.id, w.sample)
		if rh {
			read++
		}
		for _, v := range views {
			checked++
			if msg := c.checkFailed(ctx, v, w, rh); msg != "" {
				shown++
				if shown <= 25 {
					why := w.why
					if why == "" {
						why = "refused on a full disk"
					}
					add("failed %s (step %d, on %s, %s, %s/%s %s=%v) shows on %s: %s", w.kind, w.step, w.node.name, why, collection, w.id, w.field, w.value, v.n.name, msg)
				}
			}
		}
	}
	if shown > 25 {
		add("%d more failed writes show somewhere", shown-25)
	}
	whole, partial := 0, 0
	for _, w := range c.cut {
		rh := w.sample || c.touched[w.id] > 1
		for _, v := range views {
			msg, there := c.checkCut(ctx, v, w, rh)
			if msg != "" {
				partial++
				if partial <= 10 {
					add("record of an import cut by a full disk (step %d, on %s, %s/%s) on %s: %s", w.step, w.node.name, collection, w.id, v.n.name, msg)
				}
			} else if there {
				whole++
			}
		}
	}
	if len(c.failed)+len(c.cut) > 0 {
		c.logf("checked %d failed writes on %d nodes (%d write×node checks, histories read for %d, %d show); %d records of cut imports (%d record×node whole, %d partial)",
			len(c.failed), len(views), checked, read, shown, len(c.cut), whole, partial)
	}
}

// checkStores runs `ferry check --json` on every node (after a schedule
// with a disk-full episode): exit 0, the store is whole. A binary without
// the command is noted once and the check skipped.
func (c *cluster) checkStores(ctx context.Context, until time.Time) {
	for _, n := range c.nodes {
		var res result
		for {
			res = c.ferry(ctx, n, "check", "--json")
			if res.ok() || ctx.Err() != nil || time.Now().After(until) || c.noCheckCommand(res) {
				break
			}
			sleep(ctx, time.Second)
		}
		switch {
		case res.ok():
			c.stats.checks++
		case c.noCheckCommand(res):
			c.h.noCheck = true
			c.logf("ferry check: the binary has no check command (%s): skipped", res.brief())
			return
		case ctx.Err() != nil:
			return
		default:
			var rep struct {
				Problems []string `json:"problems"`
				Dirty    bool     `json:"dirty"`
			}
			detail := res.brief()
			if json.Unmarshal([]byte(res.stdout), &rep) == nil && len(rep.Problems) > 0 {
				detail = fmt.Sprintf("exit %d, dirty=%t, problems: %s", res.code, rep.Dirty, strings.Join(rep.Problems, "; "))
			}
			c.problem("ferry check --json on %s: %s (log %s)", n.name, detail, n.logPath)
		}
	}
}

func (c *cluster) noCheckCommand(res result) bool {
	return res.code != 0 && strings.Contains(res.stderr, `unknown command "check"`)
}
