package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"
)

// Compaction (issue 13): an office starts a new epoch of history with
// POST /v1/compact; every other node moves to the latest epoch it hears
// of and carries over its edits the office did not have. Three step kinds,
// drawn at compactShare % of the steps from a random stream of their own
// (so that the other steps of a seed draw what they drew before):
//
//   - compact: a compaction on the office, retried while it answers 409
//     (the store is still syncing), half of the time with a put on the
//     office running meanwhile;
//   - kill during a compaction: a compaction starts on the office, which
//     is killed with SIGKILL 0 to 1.2 compaction times later (with a put
//     in flight half of the time), restarted at once; it must serve again,
//     be in the old epoch (killed before its switch) or the new one
//     (after), never lose a compaction it acknowledged, and converge;
//   - away across two compactions: a laptop writes a value, the office
//     and another node see it, the laptop goes away (offline, or kill -9);
//     the value is superseded twice elsewhere; the office compacts twice
//     with writes in between while the laptop keeps writing; the laptop
//     rejoins. The superseded value must not come back (a "supersession
//     fact", checked on every node at the end), and everything the laptop
//     wrote while away must survive.
//
// The final checks add: every node in the same epoch (status epoch.epoch),
// none moving to another one, no acknowledged compaction lost, no
// supersession fact broken; and they account for history an epoch change
// drops (goneAccounted): an op no longer in a node's history is accounted
// for when an op still there names it (superseded, or seen by a delete),
// when the node's history archive holds it, or when the cut of an epoch
// covers it (the office held it when it compacted) and the record has a
// newer op. Import lines of records others write too (written without a
// known op id) are matched with their op before an epoch change can drop
// it (resolvePending); a value without an op id that is gone after a
// compaction (such a line not matched, a value a put found already shown)
// is counted as unverifiable.
// The manifests (and their cuts) are read from the office through
// GET /v1/records/_epochs/<epoch>.

const (
	// compactSalt picks the random stream that decides compaction steps.
	compactSalt = 0xc0de_c0ad_0000_0013
	// compactShare: percentage of the steps that are a compaction step.
	compactShare = 5
	// compactBusyWithin bounds the retries of a compaction answered 409.
	compactBusyWithin = 20 * time.Second
	// seeWithin bounds the wait for a node to have merged a given write.
	seeWithin = 15 * time.Second
	// adoptWithin bounds the wait for a rejoining laptop to reach the
	// latest epoch (only logged: the final checks decide).
	adoptWithin = 20 * time.Second
)

// isCompactStep: the compaction stream makes step a compaction step.
func isCompactStep(seed uint64, step int) (*rand.Rand, bool) {
	r := stepRand(seed^compactSalt, step)
	return r, r.IntN(100) < compactShare
}

// compactStep runs a compaction step instead of the step's usual draw
// when the compaction stream says so. It first matches the values of the
// writes acknowledged since the last step with their ops.
func (c *cluster) compactStep(ctx context.Context, seed uint64, step int) bool {
	if !c.comp.planned {
		c.comp.planned, c.comp.last = true, -1
		for s := 1; s <= c.h.opts.ops; s++ {
			if _, ok := isCompactStep(seed, s); ok {
				c.comp.last = s
			}
		}
		c.logf("compaction steps: the last one is step %d", c.comp.last)
	}
	c.resolvePending(ctx)
	r, ok := isCompactStep(seed, step)
	if c.h.noCompact || !ok {
		return false
	}
	c.stats.comp.steps++
	switch x := r.IntN(100); {
	case x < 45:
		c.opCompact(ctx, r)
	case x < 75:
		c.opCompactKill(ctx, r)
	default:
		c.opCompactAway(ctx, r)
	}
	return true
}

// opCompact compacts on the office, half of the time while a put on it
// runs.
func (c *cluster) opCompact(ctx context.Context, r *rand.Rand) {
	withPut := r.IntN(100) < 50
	id := c.pickID(r)
	args, values := putArgs(r, id, "")
	office, ok := c.officeUp(ctx)
	if !ok {
		return
	}
	if office.full {
		// Every write fails: the compaction must be refused, and the
		// office keep running.
		c.logf("compact: on %s with a full disk (expected to fail)", office.name)
		call := c.startCompact(ctx, office)
		if c.finishCompact(office, call) {
			c.problem("POST /v1/compact on %s succeeded although its disk is full", office.name)
		} else {
			c.stats.comp.failed++
		}
		return
	}
	c.logf("compact: on %s (a put meanwhile: %t)", office.name, withPut)
	if !withPut {
		c.compactRetry(ctx, office)
		return
	}
	call := c.startCompact(ctx, office)
	c.put(ctx, "put-during-compaction", office, id, args, values)
	if c.finishCompact(office, call) {
		return
	}
	if apiStatus(call.err) == http.StatusConflict {
		c.stats.comp.busy++
		c.compactRetry(ctx, office)
	}
}

// opCompactKill starts a compaction on the office and kills it with
// SIGKILL while it runs, then restarts it.
func (c *cluster) opCompactKill(ctx context.Context, r *rand.Rand) {
	frac := r.Float64() * 1.2
	withPut := r.IntN(100) < 50
	id := c.pickID(r)
	args, values := putArgs(r, id, "")
	office, ok := c.officeUp(ctx)
	if !ok {
		return
	}
	if office.full || len(c.downNodes()) >= c.maxDown() {
		c.logf("kill during a compaction: not now (disk full: %t, %d down): a compaction instead", office.full, len(c.downNodes()))
		c.opCompact(ctx, r)
		return
	}
	before, _, err := c.status(ctx, office)
	if err != nil {
		c.problem("kill during a compaction: %v", err)
		return
	}
	est := c.comp.took
	if est <= 0 {
		est = 100 * time.Millisecond
	}
	delay := time.Duration(frac * float64(est))
	c.logf("kill during a compaction: %s in epoch %s, kill %s after the compaction starts (last one took %s; a put meanwhile: %t)",
		office.name, epochOf(before), delay.Round(time.Millisecond), est.Round(time.Millisecond), withPut)
	call := c.startCompact(ctx, office)
	var bg *bgCommand
	if withPut {
		id, args = c.routePut(office, id, args, values)
		c.touched[id]++
		if bg, err = c.ferryBackground(ctx, office, args...); err != nil {
			c.problem("start put: %v", err)
		}
	}
	sleep(ctx, delay)
	c.kill(office, fmt.Sprintf("during a compaction, %s after it started", delay.Round(time.Millisecond)))
	c.stats.comp.kills++
	acked := c.finishCompact(office, call)
	if bg != nil {
		if res := c.wait(bg); res.ok() {
			c.ackPut("put-during-compaction-kill", office, id, values, res)
		}
	}
	if err := c.startNode(ctx, office); err != nil {
		return // a problem already
	}
	c.stats.restarts++
	after, _, err := c.status(ctx, office)
	if err != nil {
		c.problem("after a kill during a compaction: %v", err)
		return
	}
	was, is := epochOf(before), epochOf(after)
	switch {
	case is == was:
		c.stats.comp.killedBefore++
		c.logf("%s restarted in epoch %s: killed before the switch", office.name, is)
	case epochNumber(is) == epochNumber(was)+1:
		c.stats.comp.killedAfter++
		c.logf("%s restarted in epoch %s (was %s): killed after the switch", office.name, is, was)
	default:
		c.problem("%s was in epoch %s, compacted once and killed, and restarted in epoch %s", office.name, was, is)
	}
	if acked && is != call.res.Epoch {
		c.problem("%s acknowledged the compaction into epoch %s and restarted after a kill in epoch %s", office.name, call.res.Epoch, is)
	}
	// It serves writes again.
	id2 := c.pickID(r)
	args2, values2 := putArgs(r, id2, "")
	c.put(ctx, "put", office, id2, args2, values2)
}

// putOne puts one field of a record on n and returns its op ("" when it
// was not acknowledged or wrote nothing).
func (c *cluster) putOne(ctx context.Context, r *rand.Rand, kind string, n *node, id, field string) string {
	args, values := putArgs(r, id, field)
	before := len(c.acked)
	c.put(ctx, kind, n, id, args, values)
	if len(c.acked) == before {
		return ""
	}
	w := c.acked[len(c.acked)-1]
	if _, wrote := w.fields[field]; !wrote {
		return ""
	}
	return w.op
}

// opCompactAway: a laptop away across two compactions (see the top of
// the file).
func (c *cluster) opCompactAway(ctx context.Context, r *rand.Rand) {
	laptop := c.nodes[1+r.IntN(len(c.nodes)-1)]
	id := hotID(r, 10)
	field := fieldNames[r.IntN(len(fieldNames))]
	stop := r.IntN(100) < 40
	between := 1 + r.IntN(3)
	awayWrites := 1 + r.IntN(3)
	withImport := r.IntN(100) < 30
	lines := c.importLinesAs(r, 20+r.IntN(60), fmt.Sprintf("i%da", c.step))
	draws := rand.New(rand.NewPCG(r.Uint64(), r.Uint64()))
	// A record of a channel the laptop is granted (channels.go); y and z
	// below hold it too.
	id = c.routeID(laptop, id)
	c.stats.comp.away++
	how := "offline"
	if stop {
		how = "killed"
	}
	c.logf("away across two compactions: %s (%s), value %s/%s %s", laptop.name, how, collection, id, field)

	office, ok := c.officeUp(ctx)
	if !ok {
		return
	}
	// Both ends up and connected, so that the laptop's value reaches the
	// office before the laptop goes away.
	for _, n := range []*node{office, laptop} {
		if !n.running() {
			if err := c.startNode(ctx, n); err != nil {
				return
			}
			c.stats.restarts++
		}
		if n.offline {
			if res := c.ferry(ctx, n, "online"); res.ok() {
				n.offline = false
			}
		}
	}
	var others []*node
	for _, n := range c.nodes[1:] {
		if n != laptop && n.running() && !n.offline && !n.full && c.holds(n, c.homeOf(id)) {
			others = append(others, n)
		}
	}
	y, z := office, office
	if len(others) > 0 {
		y = others[draws.IntN(len(others))]
		z = others[draws.IntN(len(others))]
	}

	// The laptop's value, seen by the office and by y.
	w := ""
	if !laptop.full && laptop.running() && !laptop.offline {
		w = c.putOne(ctx, draws, "put", laptop, id, field)
	}
	seen := w != "" && c.hasOp(ctx, office, id, field, w) && (y == office || c.hasOp(ctx, y, id, field, w))

	// Away.
	if stop && laptop.running() && len(c.downNodes()) < c.maxDown() {
		c.kill(laptop, "away across two compactions")
	} else if !laptop.offline {
		if res := c.ferry(ctx, laptop, "offline"); res.ok() {
			laptop.offline = true
			c.stats.partitions++
		} else {
			c.problem("offline on %s: %s", laptop.name, res.brief())
		}
	}

	// Superseded twice elsewhere: y writes over the laptop's value (and
	// must say so in its history), then z writes over y's.
	if seen && !y.full && !office.full {
		if s := c.putOne(ctx, draws, "put", y, id, field); s != "" {
			if hist, err := c.history(ctx, y, id); err == nil {
				ref := field + "/" + w
				i := slices.IndexFunc(hist, func(e histEntry) bool { return e.Op == s && e.Field == field })
				if i >= 0 && slices.Contains(hist[i].Supersedes, ref) {
					var val any
					if j := slices.IndexFunc(hist, func(e histEntry) bool { return e.Op == w && e.Field == field }); j >= 0 {
						val = hist[j].Value
					}
					c.comp.facts = append(c.comp.facts, &supersession{step: c.step, id: id, field: field, op: w, by: s, value: val, from: laptop, on: y})
					c.logf("fact: %s/%s %s op %s (by %s) superseded by op %s (on %s): it must never show again", collection, id, field, w, laptop.name, s, y.name)
				} else {
					c.logf("%s's op %s on %s/%s %s does not list %s as superseded: no fact", y.name, s, collection, id, field, ref)
				}
			}
			if !z.full && (z == y || c.hasOp(ctx, z, id, field, s)) {
				c.putOne(ctx, draws, "put", z, id, field)
			}
		}
	}

	// Two compactions, writes everywhere in between, the laptop writing
	// all along.
	awayPut := func() {
		c.opPutOn(ctx, draws, laptop)
	}
	awayPut()
	c.compactRetry(ctx, office)
	for range between {
		c.opPutOn(ctx, draws, c.nodes[draws.IntN(len(c.nodes))])
	}
	if withImport {
		c.importOn(ctx, "import", laptop, lines)
	}
	for range awayWrites {
		awayPut()
	}
	if office.running() {
		c.compactRetry(ctx, office)
	}
	awayPut()

	// Back.
	if !laptop.running() {
		if err := c.startNode(ctx, laptop); err != nil {
			return
		}
		c.stats.restarts++
	}
	if laptop.offline {
		if res := c.ferry(ctx, laptop, "online"); res.ok() {
			laptop.offline = false
		} else {
			c.problem("online on %s: %s", laptop.name, res.brief())
		}
	}
	c.waitAdopted(ctx, laptop, office)
}

// opPutOn is a put of a random record on n.
func (c *cluster) opPutOn(ctx context.Context, r *rand.Rand, n *node) {
	id := c.pickID(r)
	args, values := putArgs(r, id, "")
	c.put(ctx, "put", n, id, args, values)
}
