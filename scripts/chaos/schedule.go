package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const collection = "contacts"

// ackedWrite is a write whose command exited 0: it must survive.
type ackedWrite struct {
	// kind: put, conflict, delete, import, resolve, and put-during-kill,
	// import-during-kill for commands that exited 0 although their node
	// was killed while they ran (they fell back to opening the store
	// themselves, or had their answer before the kill); import-before-full
	// for an import that completed before its node's disk filled; a
	// -on-full-disk suffix for a command that exited 0 although its
	// node's disk was full (already a problem; it must survive too).
	kind string
	step int
	node *node
	id   string
	// op is the operation id when known (put --json prints it; deletes and
	// resolutions are looked up in the writer's history right after).
	op string
	// fields are the values the operation wrote (nil: cleared); for a
	// delete, the field is "_record" with value true.
	fields map[string]any
	// same are values checked without an op id: the fields a put skipped
	// because they already showed them (no operation written) and every
	// field of an imported record. Some operation holding the value must
	// be accounted for.
	same map[string]any
	// sameOps: for values of same of an import line, the op found holding
	// the value before a compaction could drop it (compact.go).
	sameOps map[string]string
	// ch: the record's channel when the write was made (the harness's
	// model, channels.go); afterUngrant: its laptop was no longer granted
	// ch (the office had ended the grant; the laptop had not heard).
	ch           string
	afterUngrant bool
}

// scheduleResult is what one schedule prints.
type scheduleResult struct {
	index       int
	seed        uint64
	nodes       int
	ops         int
	stats       stats
	problems    []string
	root        string
	logs        []string
	opsLog      string
	interrupted bool
}

func (r scheduleResult) failed() bool { return len(r.problems) > 0 }

func (r scheduleResult) line() string {
	s := r.stats
	out := fmt.Sprintf("schedule %d seed=0x%x nodes=%d ops=%d kills=%d partitions=%d skewed=%d diskfull=%d %s %s %s acked=%d refused=%d converged=%.1fs",
		r.index, r.seed, r.nodes, s.ops, s.kills, s.partitions, s.skewed, s.diskFull, s.comp.line(), s.wf.line(), s.ch.line(), s.acked, s.refused, s.converged.Seconds())
	switch {
	case r.interrupted:
		return out + " INTERRUPTED"
	case r.failed():
		reason := oneLine(r.problems[0])
		if len(r.problems) > 1 {
			reason += fmt.Sprintf(" (+%d more)", len(r.problems)-1)
		}
		return out + " FAIL: " + reason
	}
	return out + " PASS"
}

// printDetails prints every problem and where the data is.
func (r scheduleResult) printDetails(w io.Writer) {
	for i, p := range r.problems {
		if i == 20 {
			fmt.Fprintf(w, "  ... %d more problems in %s\n", len(r.problems)-i, filepath.Join(r.root, "problems.txt"))
			break
		}
		fmt.Fprintf(w, "  problem: %s\n", strings.ReplaceAll(p, "\n", "\n    "))
	}
	fmt.Fprintf(w, "  data dir kept: %s\n", r.root)
	fmt.Fprintf(w, "  ops log: %s\n", r.opsLog)
	for _, l := range r.logs {
		fmt.Fprintf(w, "  node log: %s\n", l)
	}
	fmt.Fprintf(w, "  rerun: go run ./scripts/chaos --seed 0x%x --schedules 1 --nodes %d --ops %d -v\n", r.seed, r.nodes, r.ops)
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// stepRand is the random source of one step: a function of the seed and
// the step only, so that a step draws the same numbers whatever earlier
// steps observed.
func stepRand(seed uint64, step int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15^uint64(step)))
}

// runSchedule runs one schedule: set up, operations and faults, heal,
// converge, check, stop.
func (h *harness) runSchedule(ctx context.Context, index int, seed uint64) (res scheduleResult) {
	res = scheduleResult{index: index, seed: seed, nodes: h.opts.nodes, ops: h.opts.ops}
	root, err := os.MkdirTemp(h.opts.root, fmt.Sprintf("ferry-chaos-0x%x-", seed))
	if err != nil {
		res.problems = []string{err.Error()}
		return res
	}
	c := &cluster{h: h, index: index, seed: seed, root: root, started: time.Now(), touched: map[string]int{}}
	res.root = root
	res.opsLog = filepath.Join(root, "ops.log")
	c.opsLog, err = os.Create(res.opsLog)
	if err != nil {
		res.problems = []string{err.Error()}
		return res
	}
	defer c.opsLog.Close()
	for i := range h.opts.nodes {
		name := "office"
		if i > 0 {
			name = fmt.Sprintf("laptop%d", i)
		}
		n := &node{idx: i, name: name, dir: filepath.Join(root, name), office: i == 0}
		// Outside the data dir, so that its creation is no write there.
		n.fullPath = filepath.Join(root, name+".diskfull")
		n.logPath = filepath.Join(n.dir, "node.log")
		c.nodes = append(c.nodes, n)
		res.logs = append(res.logs, n.logPath)
	}
	defer func() {
		c.killAll()
		res.stats = c.stats
		res.problems = c.problems
		if ctx.Err() != nil {
			res.interrupted = true
		}
		if res.failed() || res.interrupted || h.opts.keep {
			_ = os.WriteFile(filepath.Join(root, "problems.txt"), []byte(strings.Join(c.problems, "\n\n")+"\n"), 0o600)
			return
		}
		_ = os.RemoveAll(root)
	}()

	// Setup: which nodes have a skewed clock, the ports.
	r := stepRand(seed, 0)
	c.logf("schedule %d seed=0x%x nodes=%d ops=%d root=%s", index, seed, h.opts.nodes, h.opts.ops, root)
	skewed := r.IntN(min(3, h.opts.nodes))
	for _, i := range r.Perm(h.opts.nodes)[:skewed] {
		c.nodes[i].skew = 10 * time.Minute
		if r.IntN(2) == 0 {
			c.nodes[i].skew = -10 * time.Minute
		}
		c.logf("%s: clock skewed by %s", c.nodes[i].name, c.nodes[i].skew)
	}
	c.stats.skewed = skewed
	for _, n := range c.nodes {
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			c.problem("%v", err)
			return res
		}
	}
	if err := c.setupCluster(ctx, r); err != nil {
		if ctx.Err() == nil {
			c.problem("setup: %v", err)
		}
		return res
	}

	// Operations and faults.
	for step := 1; step <= h.opts.ops && ctx.Err() == nil; step++ {
		c.step = step
		c.checkProcs()
		c.freeDue(ctx)
		if !c.compactStep(ctx, seed, step) && !c.chanStep(ctx, seed, step) {
			c.runStep(ctx, stepRand(seed, step))
		}
		c.stats.ops++
	}
	if ctx.Err() != nil {
		return res
	}

	// Heal, converge, check.
	c.step = -1
	c.logf("heal: free every full disk, restart every node that is down, every node online")
	if err := c.heal(ctx); err != nil {
		c.problem("heal: %v", err)
		return res
	}
	took, err := c.waitConverged(ctx)
	c.stats.converged = took
	convergedAt := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			c.problem("no convergence within --deadline %s: %v", h.opts.deadline, err)
		}
	} else {
		c.converged = true
		c.logf("converged in %s", took)
	}
	if ctx.Err() == nil {
		// Checks that fail are repeated until the end of the deadline, and
		// for at least 10 s.
		c.verifyUntil(ctx, time.Now().Add(max(10*time.Second, h.opts.deadline-took)))
		if c.converged {
			c.checkWorkflows(ctx, convergedAt)
		}
		if c.stats.diskFull > 0 {
			c.checkStores(ctx, time.Now().Add(10*time.Second))
		}
		if h.opts.selfCheck {
			c.selfCheck(ctx)
		}
	}
	c.stopAll()
	c.scanLogs()
	if ctx.Err() == nil {
		c.checkPurged(ctx)
		c.checkChannelCuts(ctx)
	}
	st := c.stats
	c.logf("done: %d ops, %d acknowledged writes (%d imports, %d deletes, %d resolutions, %d conflict bursts), %d kills, %d restarts, %d partitions, %d disk-full episodes (%d writes refused, %d failed values, %d imports cut, longest repair %s, %d ferry check), %s, %s, %s, %d problems",
		st.ops, st.acked, st.imports, st.deletes, st.resolves, st.conflicts, st.kills, st.restarts, st.partitions,
		st.diskFull, st.refused, st.failedValues, st.cutImports, st.repairMax.Round(time.Millisecond), st.checks, st.comp.summary(), st.wf.summary(), st.ch.summary(), len(c.problems))
	return res
}

// runStep draws and runs one operation or fault.
func (c *cluster) runStep(ctx context.Context, r *rand.Rand) {
	x := r.IntN(100)
	switch {
	case x < 28:
		c.opPut(ctx, r, "put")
	case x < 40:
		c.opConflict(ctx, r)
	case x < 46:
		c.opDelete(ctx, r)
	case x < 52:
		c.opImport(ctx, r)
	case x < 59:
		c.opResolve(ctx, r)
	case x < 62:
		c.opSync(ctx, r)
	case x < 72:
		c.opPartition(ctx, r)
	case x < 79:
		c.opKill(ctx, r)
	case x < 88:
		c.opRestart(ctx, r)
	case x < 96:
		c.opKillMidSync(ctx, r)
	default:
		c.opDiskFull(ctx, r)
	}
}
