package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

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
