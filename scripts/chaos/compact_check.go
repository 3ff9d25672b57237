package main

// The checks of compactions (see compact.go for the steps): import lines
// matched with their ops before a compaction can drop them, the epoch
// condition of convergence, supersession facts, and the accounting of ops
// an epoch change removed from a node's history.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ferry-crm/ferry/node/api"
)

// notePending queues an acknowledged import line whose op may be needed
// after a compaction: the lines of records others write too (ids not made
// by the import; those are superseded, and then dropped by a compaction).
// Only in a schedule with compaction steps (a node that was away drops
// superseded ops when it moves to the latest epoch, which can be after the
// last compaction). Values a put or a resolution found already shown
// (they wrote no op for them) are not followed: gone after a compaction,
// they count as unverifiable.
func (c *cluster) notePending(w *ackedWrite) {
	imported := strings.HasPrefix(w.kind, "import")
	if len(w.same) == 0 || c.h.noCompact || c.comp.last < 1 || !imported || strings.HasPrefix(w.id, "i") {
		return
	}
	c.comp.pending = append(c.comp.pending, w)
}

// resolvePending finds, in the history of the importing node, the op that
// holds each value of the pending import lines: the newest op of that
// node with the value, or, for a field the import left unchanged (it
// showed the value already), the op that shows it. It runs at the start
// of every step and before every compaction, before an epoch change can
// drop superseded ops.
func (c *cluster) resolvePending(ctx context.Context) {
	if len(c.comp.pending) == 0 {
		return
	}
	pending := c.comp.pending
	c.comp.pending = nil
	type key struct {
		n  *node
		id string
	}
	hists := map[key][]histEntry{}
	found, missed := 0, 0
	for _, w := range pending {
		k := key{w.node, w.id}
		hist, ok := hists[k]
		if !ok {
			h, err := c.history(ctx, w.node, w.id)
			if err != nil {
				c.logf("resolve the ops of %s (step %d, %s/%s): %v", w.kind, w.step, collection, w.id, err)
			}
			hists[k], hist = h, h
		}
		// An import line's value is its own op, unless the record
		// already showed it (a field an import leaves unchanged is not
		// written): then, like a put's, the op that shows it.
		pick := func(f string, val any, own bool) int {
			best := -1
			for i, e := range hist {
				if e.Field != f || !sameValue(e.Value, val) || (own && e.Writer != w.node.peerID) {
					continue
				}
				if best < 0 {
					best = i
					continue
				}
				b := hist[best]
				if (!own && e.Visible != b.Visible && e.Visible) || ((own || e.Visible == b.Visible) && newerOp(e.Op, b.Op)) {
					best = i
				}
			}
			return best
		}
		imported := strings.HasPrefix(w.kind, "import")
		for f, val := range w.same {
			best := -1
			if imported {
				best = pick(f, val, true)
			}
			if best < 0 {
				best = pick(f, val, false)
			}
			if best < 0 {
				missed++
				continue
			}
			if w.sameOps == nil {
				w.sameOps = map[string]string{}
			}
			w.sameOps[f] = hist[best].Op
			found++
		}
	}
	c.logf("matched %d values written without an op id with their ops (%d not found) in %d histories", found, missed, len(hists))
}

// epochsAgree is the convergence's epoch condition: every node in the
// same epoch, none moving to another one. It adds each node's epoch to
// its status line.
func epochsAgree(sts []statusJSON, lines []string) bool {
	ok := true
	for i, st := range sts {
		e := epochOf(st)
		if st.Epoch != nil {
			lines[i] += fmt.Sprintf(" epoch=%s", e)
			if st.Epoch.Adopting {
				lines[i] += "(adopting)"
				ok = false
			}
			if st.Epoch.Later != "" {
				lines[i] += "(heard of " + st.Epoch.Later + ")"
				ok = false
			}
			if st.Epoch.LastError != "" {
				lines[i] += fmt.Sprintf("(last error: %s)", st.Epoch.LastError)
			}
		}
		if e != epochOf(sts[0]) {
			ok = false
		}
	}
	return ok
}

// verifyCompaction is the compaction part of the checks: the epoch every
// node is in is no earlier than any acknowledged compaction, and no value
// seen superseded shows again.
func (c *cluster) verifyCompaction(ctx context.Context, views []*nodeView, add func(string, ...any)) {
	if len(c.comp.acked) == 0 && len(c.comp.facts) == 0 {
		return
	}
	st, _, err := c.status(ctx, c.nodes[0])
	if err != nil {
		add("%v", err)
		return
	}
	final := epochOf(st)
	c.stats.comp.epochs = epochNumber(final)
	for _, e := range c.comp.acked {
		if epochNumber(e) > epochNumber(final) || (epochNumber(e) == epochNumber(final) && e != final) {
			add("the office acknowledged a compaction into epoch %s, but the nodes ended in epoch %s", e, final)
		}
	}
	if err := c.loadCuts(ctx); err != nil {
		add("%v", err)
	}
	for _, f := range c.comp.facts {
		for _, v := range views {
			if msg := c.checkFact(ctx, v, f); msg != "" {
				add("superseded value (step %d: %s/%s %s=%v op %s by %s, superseded by op %s on %s) on %s: %s (cuts: %s)",
					f.step, collection, f.id, f.field, f.value, f.op, f.from.name, f.by, f.on.name, v.n.name, msg, c.coverage(f.op))
			}
		}
	}
	c.stats.comp.facts = len(c.comp.facts)
	c.logf("compaction checks: final epoch %s, %d acknowledged compactions, %d supersession facts, cuts of %d epochs", final, len(c.comp.acked), len(c.comp.facts), len(c.comp.cuts))
}

// checkFact says how a superseded value shows again on v's node ("" if
// it does not).
func (c *cluster) checkFact(ctx context.Context, v *nodeView, f *supersession) string {
	var where []string
	hist, err := c.cachedHistory(ctx, v, f.id)
	if err != nil && !strings.Contains(err.Error(), "record not found") {
		return err.Error()
	}
	for _, e := range hist {
		if e.Op == f.op && e.Field == f.field && e.Visible {
			where = append(where, "VISIBLE AGAIN in the history (visible=true)")
		}
	}
	if rec := v.records[f.id]; rec != nil {
		if cf, ok := rec.Conflicts[f.field]; ok {
			for _, cand := range cf.Candidates {
				if cand.Op == f.op {
					where = append(where, "a CANDIDATE of the field's conflict again")
				}
			}
		}
	}
	for _, cf := range v.conflicts {
		if cf.ID == f.id && cf.Field == recordField {
			for _, cand := range cf.Candidates {
				if cand.Op == f.op {
					where = append(where, "a candidate of the record conflict again")
				}
			}
		}
	}
	return strings.Join(where, "; ")
}

// loadCuts reads the manifests of the final epoch and of every epoch
// before it, from the office (GET /v1/records/_epochs/<epoch>).
func (c *cluster) loadCuts(ctx context.Context) error {
	if c.comp.loaded {
		return nil
	}
	c.comp.loaded = true
	office := c.nodes[0]
	st, _, err := c.status(ctx, office)
	if err != nil {
		return err
	}
	cl, err := api.Dial(office.dir)
	if err != nil {
		return fmt.Errorf("read the epochs' manifests: %w", err)
	}
	for e := epochOf(st); e != "0" && e != ""; {
		rec, err := cl.Get(ctx, "_epochs", e)
		if err != nil {
			return fmt.Errorf("read the manifest of epoch %s on %s: %w", e, office.name, err)
		}
		raw, _ := rec.Fields["info"].(string)
		var info struct {
			Prev string            `json:"prev"`
			Cut  map[string]string `json:"cut"`
		}
		if err := json.Unmarshal([]byte(raw), &info); err != nil {
			return fmt.Errorf("the manifest of epoch %s: %w: %q", e, err, raw)
		}
		ec := epochCut{epoch: e, cut: map[string]uint64{}}
		for w, t := range info.Cut {
			v, err := strconv.ParseUint(t, 16, 64)
			if err != nil {
				return fmt.Errorf("the manifest of epoch %s: cut of %s: %q", e, w, t)
			}
			ec.cut[w] = v
		}
		c.comp.cuts = append(c.comp.cuts, ec)
		c.logf("epoch %s: prev %s, cut: %s", e, info.Prev, c.cutString(ec))
		if info.Prev == e {
			break
		}
		e = info.Prev
	}
	return nil
}

// cutString renders a cut with node names.
func (c *cluster) cutString(ec epochCut) string {
	var parts []string
	for w, t := range ec.cut {
		parts = append(parts, fmt.Sprintf("%s<=%016x", c.writerName(w), t))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// writerName is the node name of a peer id (the id itself if unknown).
func (c *cluster) writerName(w string) string {
	for _, n := range c.nodes {
		if n.peerID == w {
			return n.name
		}
	}
	return w
}

// coverage says which epochs' cuts cover op, for messages.
func (c *cluster) coverage(op string) string {
	t, w, ok := parseOp(op)
	if !ok {
		return "op id does not parse"
	}
	var parts []string
	for _, ec := range c.comp.cuts {
		ct, has := ec.cut[w]
		switch {
		case !has:
			parts = append(parts, fmt.Sprintf("epoch %s: no cut for %s", ec.epoch, c.writerName(w)))
		case t <= ct:
			parts = append(parts, fmt.Sprintf("epoch %s: covered (%s<=%016x)", ec.epoch, c.writerName(w), ct))
		default:
			parts = append(parts, fmt.Sprintf("epoch %s: NOT covered (%s<=%016x)", ec.epoch, c.writerName(w), ct))
		}
	}
	return strings.Join(parts, ", ")
}

// parseOp splits an op id "<16 hex time>-<writer>".
func parseOp(op string) (uint64, string, bool) {
	t, w, ok := strings.Cut(op, "-")
	if !ok || len(t) != 16 {
		return 0, "", false
	}
	v, err := strconv.ParseUint(t, 16, 64)
	return v, w, err == nil
}

// newerOp reports whether op a is newer than op b (time, then writer).
func newerOp(a, b string) bool {
	ta, wa, _ := parseOp(a)
	tb, wb, _ := parseOp(b)
	if ta != tb {
		return ta > tb
	}
	return wa > wb
}

// coveredBy returns the first epoch whose cut covers op ("" if none):
// the office held op when it compacted.
func (c *cluster) coveredBy(op string) string {
	t, w, ok := parseOp(op)
	if !ok {
		return ""
	}
	for _, ec := range c.comp.cuts {
		if ct, ok := ec.cut[w]; ok && t <= ct {
			return ec.epoch
		}
	}
	return ""
}

// archived reports whether a history entry comes from the node's history
// archive: marked "compacted", or (binaries that do not mark it) an entry
// with a field but no block that is not visible (an op whose block is not
// here has no field either).
func archived(e histEntry) bool {
	return e.Compacted || (e.Block == "" && e.Field != "" && !e.Visible)
}

// accountedAfter is accounted, and for an op that is not visible and that
// no op of the history names, the compaction rule of goneAccounted: a
// compaction copies a batch of writes whole (its signature covers them
// all), superseded ones included, and tombstones those in the new epoch,
// where what superseded them may be gone.
func (c *cluster) accountedAfter(ctx context.Context, w *ackedWrite, on *node, e histEntry, hist []histEntry, rec *recordJSON, conflicts []conflictJSON) (bool, string) {
	ok, why := accounted(e, hist, rec, conflicts, w.id)
	if ok || e.Visible {
		return ok, why
	}
	if ok2, why2 := c.goneAccounted(ctx, w, on, hist, e.Field, e.Op); ok2 {
		return true, why2
	}
	return ok, why
}

// countCompacted counts a write field accounted for by a compaction once
// (it returns whether this is the first time).
func (c *cluster) countCompacted(w *ackedWrite, field string, unverifiable bool) bool {
	if c.comp.counted == nil {
		c.comp.counted = map[string]bool{}
	}
	k := fmt.Sprintf("%p/%s", w, field)
	if c.comp.counted[k] {
		return false
	}
	c.comp.counted[k] = true
	if unverifiable {
		c.stats.comp.unverifiable++
	} else {
		c.stats.comp.compacted++
	}
	return true
}

// goneAccounted says whether op (of field, on record id) that is not in
// the node's history is accounted for by a compaction: some operation
// still there names it (superseded, or seen by a delete: its own op went
// with the old epoch), or the cut of an epoch covers it (the office held
// it when it compacted: it showed there, and then it was seeded and would
// be in the history, or it was superseded there, and the record has an
// operation newer than it). Anything else is lost: an op no cut covers is
// carried over by whoever holds it, or named as superseded.
func (c *cluster) goneAccounted(ctx context.Context, w *ackedWrite, on *node, hist []histEntry, field, op string) (bool, string) {
	if !c.compactedSince(w.step) {
		return false, ""
	}
	if err := c.loadCuts(ctx); err != nil {
		c.logf("%v", err)
	}
	ref := field + "/" + op
	for _, e := range hist {
		if slices.Contains(e.Supersedes, ref) || slices.Contains(e.Seen, ref) {
			c.countCompacted(w, field, false)
			return true, "its op is gone with an old epoch, and " + e.ref() + " names it"
		}
	}
	if c.homeOf(w.id) != "" {
		return c.goneInChannel(w, on, hist, field, op)
	}
	ep := c.coveredBy(op)
	if ep == "" {
		return false, fmt.Sprintf("LOST: operation not in the history, named by no operation there, and not covered by the cut of any of the %d epochs (it should have been carried over)", len(c.comp.cuts))
	}
	for _, e := range hist {
		if e.Op != "" && newerOp(e.Op, op) {
			c.countCompacted(w, field, false)
			return true, fmt.Sprintf("covered by the cut of epoch %s, superseded before it (%s is newer)", ep, e.ref())
		}
	}
	return false, fmt.Sprintf("LOST: covered by the cut of epoch %s (the office held it), but not in the history, and the record has no newer operation", ep)
}

// compactedSince: an epoch change may have dropped what was written at
// step. Any compaction will do: a node moves to the latest epoch whenever
// it hears of it, possibly long after the compaction (a laptop offline
// since), and drops then the ops of its old epoch that it superseded and
// the cut does not cover (carrying the facts of what they superseded).
// Writes "made" after the last step (the self-check's fabrications) never
// are.
func (c *cluster) compactedSince(step int) bool {
	return len(c.comp.started) > 0 && step <= c.h.opts.ops
}

// goneValue accounts for a value written without a known op id that is
// nowhere in the node's history: after a compaction it may have been
// superseded and dropped with the old epoch; without an op id the cut
// cannot tell, so it is counted as unverifiable (and logged) instead of
// lost.
func (c *cluster) goneValue(w *ackedWrite, field string, val any) (bool, string) {
	if !c.compactedSince(w.step) {
		return false, ""
	}
	if c.countCompacted(w, field, true) {
		c.logf("unverifiable: acknowledged %s (step %d, on %s, %s/%s) %s=%v: no operation with this value in the history after a compaction, and no op id to check against the cuts", w.kind, w.step, w.node.name, collection, w.id, field, val)
	}
	return true, "gone after a compaction (no op id: unverifiable)"
}
