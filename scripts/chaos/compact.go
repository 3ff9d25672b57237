package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
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

// epochJSON is the "epoch" object of `ferry status --json`.
type epochJSON struct {
	Epoch     string `json:"epoch"`
	Number    uint64 `json:"number"`
	Later     string `json:"later"`
	Adopting  bool   `json:"adopting"`
	LastError string `json:"last_error"`
}

// epochOf is the epoch a status shows ("0" when the binary has none).
func epochOf(st statusJSON) string {
	if st.Epoch == nil || st.Epoch.Epoch == "" {
		return "0"
	}
	return st.Epoch.Epoch
}

// epochNumber is the number of an epoch string ("0", "<n>-<id>").
func epochNumber(e string) uint64 {
	num, _, _ := strings.Cut(e, "-")
	n, _ := strconv.ParseUint(num, 10, 64)
	return n
}

// compactStats are the compaction counters of a schedule.
type compactStats struct {
	// steps: compaction steps run; compactions: compactions acknowledged
	// (200); busy: 409 answers; gaveUp: compactions given up after
	// compactBusyWithin of 409s; failed: other refusals (a full disk).
	steps, compactions, busy, gaveUp, failed int
	// kills: SIGKILLs of the office during a compaction; before/after:
	// the office restarted in the old epoch / the new one.
	kills, killedBefore, killedAfter int
	// away: laptops away across two compactions; facts: superseded values
	// checked not to come back; adopted: rejoining laptops seen reaching
	// the latest epoch.
	away, facts, adopted int
	// compacted: acknowledged write×field pairs accounted for by a
	// compaction (superseded, and their operation dropped with the old
	// epoch, or kept in the archive); unverifiable: values written without
	// a known operation id whose value is gone after a compaction.
	compacted, unverifiable int
	// epochs: the epoch number every node ended in.
	epochs uint64
}

func (s *compactStats) add(o compactStats) {
	s.steps += o.steps
	s.compactions += o.compactions
	s.busy += o.busy
	s.gaveUp += o.gaveUp
	s.failed += o.failed
	s.kills += o.kills
	s.killedBefore += o.killedBefore
	s.killedAfter += o.killedAfter
	s.away += o.away
	s.facts += o.facts
	s.adopted += o.adopted
	s.compacted += o.compacted
	s.unverifiable += o.unverifiable
	s.epochs += o.epochs
}

// line is the compaction part of a schedule's line.
func (s compactStats) line() string {
	return fmt.Sprintf("compactions=%d killed-compacting=%d away=%d", s.compactions, s.kills, s.away)
}

// summary is the compaction part of the totals.
func (s compactStats) summary() string {
	return fmt.Sprintf("%d compaction steps: %d compactions acknowledged (%d answers 409, %d given up busy, %d refused), %d office kills during a compaction (restarted in the old epoch %d times, in the new one %d), %d laptops away across two compactions (%d superseded values checked not to come back, %d seen adopting the latest epoch), %d write fields accounted for as compacted away, %d unverifiable",
		s.steps, s.compactions, s.busy, s.gaveUp, s.failed, s.kills, s.killedBefore, s.killedAfter, s.away, s.facts, s.adopted, s.compacted, s.unverifiable)
}

// compactState is what the schedule knows of compactions.
type compactState struct {
	// acked: epochs of the compactions the office acknowledged, in order;
	// started: the steps at which a compaction was started.
	acked   []string
	started []int
	// took: the last compaction's duration (the kill's time scale).
	took time.Duration
	// facts: writes seen superseded, which must never show again.
	facts []*supersession
	// cuts: per epoch of the final chain, its manifest's cut (loaded by
	// the checks); loaded: tried.
	cuts   []epochCut
	loaded bool
	// counted: write fields already counted as compacted or unverifiable.
	counted map[string]bool
	// last: the last step that is a compaction step (-1: none; planned:
	// computed); pending:
	// acknowledged writes whose values without an op id are still to be
	// matched with the op holding them (resolvePending).
	last    int
	planned bool
	pending []*ackedWrite
}

// epochCut is an epoch's manifest cut: per writer, the time of the newest
// operation the office held when it compacted.
type epochCut struct {
	epoch string
	cut   map[string]uint64
}

// supersession: op (field of record id, written by node from) was seen
// superseded by op by, written at step on node on.
type supersession struct {
	step      int
	id, field string
	op, by    string
	value     any
	from, on  *node
}

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

// compactCall is a compaction running in the background.
type compactCall struct {
	res   apijson.CompactResult
	err   error
	start time.Time
	dur   time.Duration
	done  chan struct{}
}

// startCompact sends POST /v1/compact to n's node without waiting.
func (c *cluster) startCompact(ctx context.Context, n *node) *compactCall {
	c.resolvePending(ctx)
	c.comp.started = append(c.comp.started, c.step)
	call := &compactCall{start: time.Now(), done: make(chan struct{})}
	cl, err := api.Dial(n.dir)
	if err != nil {
		call.err = err
		close(call.done)
		return call
	}
	c.logf("%s: POST /v1/compact (in the background)", n.name)
	go func() {
		defer close(call.done)
		cctx, cancel := context.WithTimeout(ctx, cliTimeout)
		defer cancel()
		call.res, call.err = cl.Compact(cctx)
		call.dur = time.Since(call.start)
		if call.err != nil && cctx.Err() != nil && ctx.Err() == nil {
			call.err = fmt.Errorf("still running after %s: %w", cliTimeout, call.err)
		}
	}()
	return call
}

// status of an API error (0: not an answer of the node).
func apiStatus(err error) int {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// finishCompact waits for a compaction call, logs it and records an
// acknowledged one. It returns whether the office acknowledged it.
func (c *cluster) finishCompact(n *node, call *compactCall) bool {
	<-call.done
	if call.err != nil {
		c.logf("%s: compact -> %v (%dms)", n.name, call.err, call.dur.Milliseconds())
		if strings.Contains(call.err.Error(), "still running after") {
			c.problem("POST /v1/compact on %s hung for %s", n.name, cliTimeout)
		}
		if st := apiStatus(call.err); st == http.StatusNotFound || st == http.StatusMethodNotAllowed {
			c.h.noCompact = true
			c.logf("this ferry has no POST /v1/compact: compaction steps are skipped")
		}
		return false
	}
	data, _ := json.Marshal(call.res)
	c.logf("%s: compact -> epoch %s (%dms)\n    %s", n.name, call.res.Epoch, call.dur.Milliseconds(), data)
	c.comp.acked = append(c.comp.acked, call.res.Epoch)
	c.noteCompactionAway()
	c.comp.took = call.dur
	c.stats.comp.compactions++
	return true
}

// compactRetry compacts on n, retrying while it answers 409, for at most
// compactBusyWithin. It returns whether a compaction was acknowledged.
func (c *cluster) compactRetry(ctx context.Context, n *node) bool {
	deadline := time.Now().Add(compactBusyWithin)
	for ctx.Err() == nil {
		call := c.startCompact(ctx, n)
		if c.finishCompact(n, call) {
			return true
		}
		switch st := apiStatus(call.err); {
		case st == http.StatusConflict:
			c.stats.comp.busy++
			if time.Now().After(deadline) {
				c.stats.comp.gaveUp++
				c.logf("%s: still syncing after %s of retries: compaction given up", n.name, compactBusyWithin)
				return false
			}
			sleep(ctx, 5*pollEvery)
		case st == http.StatusBadRequest:
			c.problem("POST /v1/compact on the office %s: 400: %v", n.name, call.err)
			return false
		case st != 0:
			c.stats.comp.failed++
			if !n.full {
				c.problem("POST /v1/compact on %s (disk free) failed: %v", n.name, call.err)
			}
			return false
		default:
			// Not an answer: the node is gone (checkProcs reports it).
			c.checkProcs()
			return false
		}
	}
	return false
}

// officeUp makes sure the office runs (a restart if it is down and the
// start works); false if it cannot.
func (c *cluster) officeUp(ctx context.Context) (*node, bool) {
	office := c.nodes[0]
	c.checkProcs()
	if office.running() {
		return office, true
	}
	if err := c.startNode(ctx, office); err != nil {
		return office, false
	}
	c.stats.restarts++
	return office, true
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

// hasOp polls n's history of id until it holds op (for field), for at
// most seeWithin.
func (c *cluster) hasOp(ctx context.Context, n *node, id, field, op string) bool {
	err := poll(ctx, seeWithin, func() (bool, string) {
		hist, err := c.history(ctx, n, id)
		if err != nil {
			return false, err.Error()
		}
		return slices.ContainsFunc(hist, func(e histEntry) bool { return e.Op == op && e.Field == field }), "op " + op + " not in the history"
	})
	if err != nil {
		c.logf("%s never merged %s/%s %s op %s: %v", n.name, collection, id, field, op, err)
		return false
	}
	return true
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

// waitAdopted polls until n is in the office's epoch (logged either way:
// the final checks decide).
func (c *cluster) waitAdopted(ctx context.Context, n, office *node) {
	if !office.running() || !n.running() || office.offline {
		return
	}
	st, _, err := c.status(ctx, office)
	if err != nil {
		return
	}
	want := epochOf(st)
	if want == "0" {
		return
	}
	start := time.Now()
	err = poll(ctx, adoptWithin, func() (bool, string) {
		st, _, err := c.status(ctx, n)
		if err != nil {
			return false, err.Error()
		}
		e := epochOf(st)
		last := ""
		if st.Epoch != nil {
			last = st.Epoch.LastError
		}
		return e == want || epochNumber(e) > epochNumber(want), fmt.Sprintf("%s is in epoch %s (adopting %t, last error %q), the office in %s", n.name, e, st.Epoch != nil && st.Epoch.Adopting, last, want)
	})
	if err != nil {
		c.logf("%s did not reach epoch %s within %s: %v", n.name, want, adoptWithin, err)
		return
	}
	c.stats.comp.adopted++
	c.logf("%s reached epoch %s %s after it came back", n.name, want, time.Since(start).Round(time.Millisecond))
}
