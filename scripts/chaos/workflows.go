package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

// Workflows (issue 16, docs/workflows.md): the office has one rule,
// wfRule, on contacts: `score > 79`. Its action is this harness binary run
// again in a helper mode (wfActionArg): it appends "start KEY" to the
// schedule's workflow-actions.log, reads the payload, then fails (exit 1,
// a "fail" line) for about 10% of (key, attempt) pairs, drawn from a hash
// of both, so that a rerun fails the same attempts; otherwise it appends
// "done KEY" and exits 0. Every line is appended in one write and synced;
// each carries the office process that started the action (its parent
// pid, read first: an action whose office is killed goes on as an
// orphan; one whose office died as it started shows its new parent, no
// office) and the time. An action whose office was killed while it wrote
// the payload reads a cut payload and appends "orphan KEY": accepted only
// if the harness killed that office.
//
// The rule reads the value after the change, and a change's after is the
// record as of the write with the write applied (crdt.ChangeOf): a write
// that gives score a value has exactly that value after it, whatever came
// before or concurrently. So for every acknowledged write with a known op
// id that wrote score (puts, conflict bursts, resolutions), the harness
// knows whether the rule matches: score > 79 must be delivered (a "done"
// line with its op id as key, its record id and its score) unless the
// office never merged the write (neverMerged), a lower score or a cleared
// one never. Other changes (imports, puts of other fields of
// a record whose score is high) fire too and are delivered, but are only
// checked by the rules that hold for every key: the delivered payload
// matches the rule, no key is done twice unless explained, nothing failed
// that did not fail every attempt, and the office's done count equals the
// keys done in the log.
//
// A key done twice is explained when the office process that ran the
// first successful attempt was killed (SIGKILL by the harness) between
// that attempt's start and wfRecordGrace after its "done", without
// starting another action in between (the engine runs one action at a
// time: a later start means it had recorded the success): the documented
// at-least-once gap. A first success while the office's disk was full
// (the engine cannot record it) is counted apart; both are reported, not
// failures.

const (
	// wfActionArg as argv[1] makes the harness binary a workflow action.
	wfActionArg = "__chaos-workflow-action"
	wfRule      = "chaos-high-score"
	// wfThreshold: the rule is "score > wfThreshold".
	wfThreshold = 79
	// wfAttempts: tries before a run is listed as failed.
	wfAttempts = 8
	// wfFailOneIn: an attempt fails for one (key, attempt) pair in this
	// many.
	wfFailOneIn = 10
	// wfWithin bounds the wait for no pending run and an empty journal.
	wfWithin = 2 * time.Minute
	// wfStuckAfter: with nothing pending, journal entries none of which
	// was consumed for this long after the convergence are stuck: the
	// engine defers a change at most a minute (waiting for the writes it
	// replaced), then delivers it or skips it as unreadable. A failure.
	wfStuckAfter = 70 * time.Second
	// wfRecordGrace: how long after its action exits the engine may take
	// to record a success.
	wfRecordGrace = 2 * time.Second
	wfLogName     = "workflow-actions.log"
)

// wfStats are the workflow counters of a schedule.
type wfStats struct {
	// delivered: keys with a "done" line; retried: those that took more
	// than one attempt; twiceKill, twiceFull: keys done twice after an
	// office kill during the action, or a success on a full disk.
	delivered, retried, twiceKill, twiceFull int
	// checked: acknowledged writes of score > 79 found delivered;
	// notFired: acknowledged writes of a lower or no score found not
	// delivered; attempts: actions started; failed: runs given up.
	checked, notFired, attempts, failed int
	// stuck: journal entries the office never consumed (see wfStuckAfter);
	// unmerged: acknowledged writes of a high score the office never
	// merged (see neverMerged).
	stuck, unmerged int
}

func (s *wfStats) add(o wfStats) {
	s.delivered += o.delivered
	s.retried += o.retried
	s.twiceKill += o.twiceKill
	s.twiceFull += o.twiceFull
	s.checked += o.checked
	s.notFired += o.notFired
	s.attempts += o.attempts
	s.failed += o.failed
	s.stuck += o.stuck
	s.unmerged += o.unmerged
}

// line is the workflow part of a schedule's line.
func (s wfStats) line() string {
	return fmt.Sprintf("wf-delivered=%d wf-retried=%d wf-twice=%d wf-stuck=%d", s.delivered, s.retried, s.twiceKill+s.twiceFull, s.stuck)
}

// summary is the workflow part of the totals.
func (s wfStats) summary() string {
	return fmt.Sprintf("workflow deliveries: %d changes delivered, %d retried, %d delivered twice after an office kill (%d after a success on a full disk; %d actions started, %d runs failed; %d acknowledged writes of a high score checked delivered, %d of a low one checked not, %d never merged on the office; %d journal entries never consumed)",
		s.delivered, s.retried, s.twiceKill, s.twiceFull, s.attempts, s.failed, s.checked, s.notFired, s.unmerged, s.stuck)
}

// wfState is what the schedule knows for the workflow checks.
type wfState struct {
	// pids: the office's processes; kills: those the harness killed, and
	// when they were gone; full: the office's disk-full periods (end zero:
	// full).
	pids  map[int]bool
	kills map[int]time.Time
	full  [][2]time.Time
}

// noteStart records the pid of n's process (offices only).
func (w *wfState) noteStart(n *node, pid int) {
	if !n.office {
		return
	}
	if w.pids == nil {
		w.pids = map[int]bool{}
	}
	w.pids[pid] = true
}

// killedAround: some office process was killed in [from, to].
func (w *wfState) killedAround(from, to time.Time) bool {
	for _, t := range w.kills {
		if !t.Before(from) && !t.After(to) {
			return true
		}
	}
	return false
}

// noteKill records a SIGKILL of n's process pid (offices only).
func (w *wfState) noteKill(n *node, pid int) {
	if !n.office {
		return
	}
	if w.kills == nil {
		w.kills = map[int]time.Time{}
	}
	w.kills[pid] = time.Now()
}

// noteFull records the office's disk filling up (full) or freed.
func (w *wfState) noteFull(n *node, full bool) {
	switch {
	case !n.office:
	case full:
		w.full = append(w.full, [2]time.Time{time.Now()})
	case len(w.full) > 0 && w.full[len(w.full)-1][1].IsZero():
		w.full[len(w.full)-1][1] = time.Now()
	}
}

// fullDuring: the office's disk was full at some time in [from, to].
func (w *wfState) fullDuring(from, to time.Time) bool {
	for _, p := range w.full {
		if !p[0].After(to) && (p[1].IsZero() || !p[1].Before(from)) {
			return true
		}
	}
	return false
}

// wfLine is one line of the action log.
type wfLine struct {
	verb, key string
	ppid      int
	t         time.Time
	attrs     map[string]string
	no        int // line number
}

func parseWfLine(s string, no int) (wfLine, bool) {
	f := strings.Fields(s)
	if len(f) < 4 {
		return wfLine{}, false
	}
	l := wfLine{verb: f[0], key: f[1], attrs: map[string]string{}, no: no}
	for _, kv := range f[2:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return wfLine{}, false
		}
		l.attrs[k] = v
	}
	ppid, err1 := strconv.Atoi(l.attrs["ppid"])
	ns, err2 := strconv.ParseInt(l.attrs["t"], 10, 64)
	if err1 != nil || err2 != nil {
		return wfLine{}, false
	}
	l.ppid, l.t = ppid, time.Unix(0, ns)
	return l, true
}

// wfKey is what the log says of one key.
type wfKey struct {
	starts, dones, fails []wfLine
}

// readWfLog reads the action log: per key, its lines in log order.
func (c *cluster) readWfLog() (map[string]*wfKey, []wfLine) {
	keys := map[string]*wfKey{}
	var starts []wfLine
	f, err := os.Open(filepath.Join(c.root, wfLogName))
	if os.IsNotExist(err) {
		return keys, nil
	}
	if err != nil {
		c.problem("workflows: %v", err)
		return keys, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for no := 1; sc.Scan(); no++ {
		l, ok := parseWfLine(sc.Text(), no)
		if !ok || l.verb == "bad" {
			c.problem("workflows: action log line %d: %q", no, sc.Text())
			continue
		}
		k := keys[l.key]
		if k == nil {
			k = &wfKey{}
			keys[l.key] = k
		}
		switch l.verb {
		case "start":
			k.starts = append(k.starts, l)
			starts = append(starts, l)
		case "done":
			k.dones = append(k.dones, l)
		case "fail":
			k.fails = append(k.fails, l)
		case "orphan":
			_, killed := c.wf.kills[l.ppid]
			if !c.wf.pids[l.ppid] {
				// Orphaned before it read its parent.
				killed = c.wf.killedAround(l.t.Add(-wfRecordGrace), l.t.Add(wfRecordGrace))
			}
			if !killed {
				c.problem("workflows: action log line %d: payload cut, but no office was killed then (pid %d): %q", no, l.ppid, sc.Text())
			}
		default:
			c.problem("workflows: action log line %d: %q", no, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		c.problem("workflows: read the action log: %v", err)
	}
	return keys, starts
}

// waitWorkflows polls `ferry workflows --json` on the office until no run
// is pending and the journal is empty (or stuck: wfStuckAfter), for at
// most wfWithin. ok is false when the binary has no workflows (the check
// is skipped).
func (c *cluster) waitWorkflows(ctx context.Context, office *node, convergedAt time.Time) (wf apijson.Workflows, ok bool) {
	start := time.Now()
	lastChange, lastPending, lastJournal := convergedAt, -1, -1
	for ctx.Err() == nil {
		res := c.ferry(ctx, office, "workflows", "--json")
		if !res.ok() && strings.Contains(res.stderr, "unknown command") {
			c.h.noWorkflows = true
			c.logf("this ferry has no `workflows` command: the workflow check is skipped")
			return wf, false
		}
		last := res.brief()
		if res.ok() {
			wf = apijson.Workflows{}
			if err := json.Unmarshal([]byte(res.stdout), &wf); err != nil {
				c.problem("workflows --json on %s: %v", office.name, err)
				return wf, true
			}
			if len(wf.Pending) == 0 && wf.Journal == 0 {
				c.logf("workflows: nothing pending after %s", time.Since(start).Round(time.Millisecond))
				return wf, true
			}
			if len(wf.Pending) != lastPending || wf.Journal != lastJournal {
				if lastJournal >= 0 {
					lastChange = time.Now()
				}
				lastPending, lastJournal = len(wf.Pending), wf.Journal
			}
			if len(wf.Pending) == 0 && time.Since(lastChange) >= wfStuckAfter {
				c.stats.wf.stuck = wf.Journal
				c.problem("workflows on %s: %d journal entries never consumed (nothing pending, %s after the convergence)", office.name, wf.Journal, time.Since(convergedAt).Round(time.Second))
				c.logf("workflows: nothing pending after %s, but %d journal entries not consumed %s after the convergence (the engine never will: see docs/chaos.md)",
					time.Since(start).Round(time.Millisecond), wf.Journal, time.Since(convergedAt).Round(time.Second))
				return wf, true
			}
			last = fmt.Sprintf("%d runs pending, %d changes in the journal", len(wf.Pending), wf.Journal)
			if len(wf.Pending) > 0 {
				p := wf.Pending[0]
				last += fmt.Sprintf(" (first: %s/%s key %s, %d attempts, last error %q)", p.Collection, p.ID, p.Key, p.Attempts, p.LastError)
			}
		}
		if time.Since(start) > wfWithin {
			c.problem("workflows on %s: not settled %s after the convergence: %s", office.name, wfWithin, last)
			return wf, true
		}
		sleep(ctx, 2*pollEvery)
	}
	return wf, false
}

// checkWorkflows is the workflow check (after the convergence, the office
// running): see the comment at the top of this file.
func (c *cluster) checkWorkflows(ctx context.Context, convergedAt time.Time) {
	office := c.nodes[0]
	wf, ok := c.waitWorkflows(ctx, office, convergedAt)
	if !ok {
		return
	}
	var rule *apijson.WorkflowRule
	for i := range wf.Rules {
		if wf.Rules[i].Name == wfRule {
			rule = &wf.Rules[i]
		}
	}
	if rule == nil || !rule.Here {
		c.problem("workflows on %s: rule %s missing or not run here: %+v", office.name, wfRule, wf.Rules)
		return
	}
	keys, starts := c.readWfLog()
	st := &c.stats.wf
	st.attempts = len(starts)
	// What the harness knows: acknowledged writes of score with an op id.
	for _, w := range c.acked {
		v, wrote := w.fields["score"]
		if w.op == "" || !wrote {
			continue
		}
		if why, exempt := c.ch.exempt[w]; exempt {
			// Not counted anywhere (channels_check.go): it may fire or not.
			c.logf("workflows: acknowledged %s (step %d, on %s, %s/%s score=%v op %s) not checked: %s", w.kind, w.step, w.node.name, collection, w.id, v, w.op, why)
			continue
		}
		k := keys[w.op]
		what := fmt.Sprintf("acknowledged %s (step %d, on %s, %s/%s score=%v op %s)", w.kind, w.step, w.node.name, collection, w.id, v, w.op)
		if n, num := v.(float64); num && n > wfThreshold {
			if k == nil || len(k.dones) == 0 {
				if why, ok := c.neverMerged(ctx, office, w); ok {
					st.unmerged++
					c.logf("workflows: %s not delivered: %s", what, why)
				} else {
					c.problem("workflows: %s matches %s but was never delivered (%s; %s)", what, wfRule, k.describe(), why)
				}
				continue
			}
			if d := k.dones[0]; d.attrs["id"] != w.id || d.attrs["score"] != strconv.FormatFloat(n, 'f', -1, 64) {
				c.problem("workflows: %s delivered with id=%s score=%s", what, d.attrs["id"], d.attrs["score"])
				continue
			}
			st.checked++
			continue
		}
		if k != nil {
			c.problem("workflows: %s does not match %s but was delivered (%s)", what, wfRule, k.describe())
			continue
		}
		st.notFired++
	}
	failed := map[string]apijson.WorkflowRun{}
	for _, f := range wf.Failed {
		failed[f.Key] = f
	}
	ids := make([]string, 0, len(keys))
	for key := range keys {
		ids = append(ids, key)
	}
	sort.Strings(ids)
	doneKeys := 0
	for _, key := range ids {
		k := keys[key]
		for _, l := range append(append([]wfLine(nil), k.dones...), k.fails...) {
			if s, err := strconv.ParseFloat(l.attrs["score"], 64); err != nil || !(s > wfThreshold) {
				c.problem("workflows: key %s delivered with score=%s: the rule does not match (line %d)", key, l.attrs["score"], l.no)
			}
		}
		if f, isFailed := failed[key]; isFailed {
			if len(k.dones) > 0 || len(k.fails) == 0 || f.Attempts < wfAttempts {
				c.problem("workflows: run %s/%s key %s listed as failed after %d attempts, but the action log says %s", f.Collection, f.ID, key, f.Attempts, k.describe())
			}
			continue
		}
		if len(k.dones) == 0 {
			continue
		}
		doneKeys++
		if len(k.starts) > 1 {
			st.retried++
		}
		if len(k.dones) > 1 {
			c.checkTwice(key, k, starts)
		}
	}
	st.delivered = doneKeys
	st.failed = len(wf.Failed)
	if rule.Done != doneKeys {
		c.problem("workflows: the office counts %d runs done, the action log %d keys done (failed: %d)", rule.Done, doneKeys, len(wf.Failed))
	}
	c.logf("workflows: %d keys done (%d retried, %d twice after a kill, %d after a full disk), %d actions started, %d failed; %d acknowledged high scores delivered, %d low ones not",
		st.delivered, st.retried, st.twiceKill, st.twiceFull, st.attempts, st.failed, st.checked, st.notFired)
}

// neverMerged says whether the office never merged acknowledged write w
// (so its change does not fire: docs/workflows.md, "merged change"): its
// op is not in the office's history, some op there names it as
// superseded, and no epoch's cut covers it (the office did not hold it
// when it compacted). That is a write its laptop superseded itself before
// it moved to a new epoch: a superseded write is not carried over, only
// named by a fact. Otherwise it says why not.
func (c *cluster) neverMerged(ctx context.Context, office *node, w *ackedWrite) (string, bool) {
	hist, err := c.history(ctx, office, w.id)
	if err != nil {
		return err.Error(), false
	}
	ref := "score/" + w.op
	named := ""
	for _, e := range hist {
		if e.Op == w.op {
			return "the office merged it: in its history", false
		}
		if slices.Contains(e.Supersedes, ref) || slices.Contains(e.Seen, ref) {
			named = e.ref()
		}
	}
	if !c.compactedSince(w.step) {
		return "not in the office's history, and no compaction", false
	}
	if err := c.loadCuts(ctx); err != nil {
		return err.Error(), false
	}
	if ep := c.coveredBy(w.op); ep != "" {
		return fmt.Sprintf("not in the office's history, but the cut of epoch %s covers it: the office merged it", ep), false
	}
	if named == "" {
		return "not in the office's history, and no op there names it", false
	}
	return fmt.Sprintf("never merged on the office: superseded (by %s) before it reached the office, and not carried into a new epoch (%s)", named, c.coverage(w.op)), true
}

// checkTwice judges a key done more than once: every success but one must
// be one the engine could not record (see the top of this file). Which one
// is not always the last to finish: the action of an office killed while
// it ran goes on, and may finish after the restarted office ran it again.
func (c *cluster) checkTwice(key string, k *wfKey, starts []wfLine) {
	kills, fulls := 0, 0
	var why []string
	for _, d := range k.dones {
		var begun time.Time
		for _, s := range k.starts {
			if s.ppid == d.ppid && s.no < d.no {
				begun = s.t
			}
		}
		killed, wasKilled := c.wf.kills[d.ppid]
		later := false
		for _, s := range starts {
			later = later || (s.ppid == d.ppid && s.no > d.no)
		}
		kill := wasKilled && !begun.IsZero() && !killed.Before(begun) && !killed.After(d.t.Add(wfRecordGrace)) && !later
		if !c.wf.pids[d.ppid] && !begun.IsZero() {
			// Orphaned before it read its parent: its office was killed
			// as it started.
			kill = c.wf.killedAround(begun.Add(-wfRecordGrace), d.t.Add(wfRecordGrace))
			wasKilled = kill
		}
		full := !begun.IsZero() && c.wf.fullDuring(begun, d.t.Add(wfRecordGrace))
		if kill {
			kills++
		}
		if kill || full {
			fulls++
		}
		why = append(why, fmt.Sprintf("line %d: office pid %d killed=%t (at %s, action started %s, done %s), a later action of it=%t, disk full=%t",
			d.no, d.ppid, wasKilled, killed.Format(time.StampMilli), begun.Format(time.StampMilli), d.t.Format(time.StampMilli), later, full))
	}
	byKill, byFull := kills >= len(k.dones)-1, fulls >= len(k.dones)-1
	switch {
	case byKill:
		c.stats.wf.twiceKill++
		c.logf("workflows: key %s delivered %d times after an office kill during its action: %s", key, len(k.dones), strings.Join(why, "; "))
	case byFull:
		c.stats.wf.twiceFull++
		c.logf("workflows: key %s delivered %d times, a success on a full disk: %s", key, len(k.dones), strings.Join(why, "; "))
	default:
		c.problem("workflows: key %s delivered %d times (done twice without an office kill during the action): %s", key, len(k.dones), strings.Join(why, "; "))
	}
}

// describe summarises a key's log lines for a message.
func (k *wfKey) describe() string {
	if k == nil {
		return "no line in the action log"
	}
	var parts []string
	for _, ls := range [][]wfLine{k.starts, k.dones, k.fails} {
		for _, l := range ls {
			parts = append(parts, fmt.Sprintf("%s (line %d, pid %d, attempt %s)", l.verb, l.no, l.ppid, l.attrs["attempt"]))
		}
	}
	return strings.Join(parts, ", ")
}
