package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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

// Values.

var fieldNames = []string{"name", "email", "city", "phone", "stage", "amount", "score", "active"}

var words = []string{"ada", "ben", "cleo", "dan", "eva", "finn", "gus", "hana", "ivo", "jo", "kai", "lea"}

var cities = []string{"Bern", "Basel", "Geneva", "Zurich", "Lugano", "Chur", "Sion", "Thun"}

var stages = []string{"lead", "qualified", "won", "lost"}

// randomValue returns a value of field f, as typed JSON and as CLI text.
func randomValue(r *rand.Rand, f string) (any, string) {
	switch f {
	case "name":
		s := fmt.Sprintf("%s %s-%d", words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(100))
		return s, s
	case "email":
		s := fmt.Sprintf("%s%d@example.com", words[r.IntN(len(words))], r.IntN(1000))
		return s, s
	case "city":
		s := cities[r.IntN(len(cities))]
		return s, s
	case "phone":
		s := fmt.Sprintf("+41 79 %03d %02d", r.IntN(1000), r.IntN(100))
		return s, s
	case "stage":
		s := stages[r.IntN(len(stages))]
		return s, s
	case "amount":
		v := float64(r.IntN(20000)) / 2
		return v, strconv.FormatFloat(v, 'f', -1, 64)
	case "score":
		v := float64(r.IntN(100))
		return v, strconv.FormatFloat(v, 'f', -1, 64)
	case "active":
		v := r.IntN(2) == 0
		return v, strconv.FormatBool(v)
	}
	panic("unknown field " + f)
}

// hotID is one of the few records every node keeps editing.
func hotID(r *rand.Rand, n int) string { return fmt.Sprintf("c%02d", r.IntN(n)) }

// pickID picks a record to edit: mostly a hot one, sometimes an imported one.
func (c *cluster) pickID(r *rand.Rand) string {
	x := r.IntN(100)
	k := r.IntN(1 << 30)
	if x < 20 && len(c.importedIDs) > 0 {
		return c.importedIDs[k%len(c.importedIDs)]
	}
	return hotID(r, 10)
}

func (c *cluster) anyNode(r *rand.Rand) *node { return c.nodes[r.IntN(len(c.nodes))] }

// runningNodes and downNodes list nodes by state (in index order, so that a
// step's choice among them is a function of the harness's own state).
func (c *cluster) runningNodes() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

func (c *cluster) downNodes() []*node {
	var out []*node
	for _, n := range c.nodes {
		if !n.running() {
			out = append(out, n)
		}
	}
	return out
}

// maxDown is how many nodes may be down at once.
func (c *cluster) maxDown() int { return max(1, (len(c.nodes)-1)/2) }

// Operations.

// putArgs draws the arguments of a put of 1 to 3 fields of record id
// (sometimes one more field cleared).
func putArgs(r *rand.Rand, id string, only string) (args []string, values map[string]any) {
	values = map[string]any{}
	args = []string{"put", collection, id}
	var fields []string
	if only != "" {
		fields = []string{only}
	} else {
		perm := r.Perm(len(fieldNames))
		for _, i := range perm[:1+r.IntN(3)] {
			fields = append(fields, fieldNames[i])
		}
	}
	for _, f := range fields {
		v, text := randomValue(r, f)
		values[f] = v
		args = append(args, f+"="+text)
	}
	if only == "" && r.IntN(100) < 10 {
		for _, f := range fieldNames {
			if _, set := values[f]; !set {
				args = append(args, "--unset", f)
				values[f] = nil
				break
			}
		}
	}
	return append(args, "--json"), values
}

// putResponse is `ferry put --json`.
type putResponse struct {
	Op      string   `json:"op"`
	Created bool     `json:"created"`
	Fields  []string `json:"fields"`
}

// ackPut records an acknowledged put from its --json answer.
func (c *cluster) ackPut(kind string, n *node, id string, values map[string]any, res result) {
	var pr putResponse
	if err := json.Unmarshal([]byte(res.stdout), &pr); err != nil {
		c.problem("put --json on %s exited 0 with output that is not JSON: %v: %q", n.name, err, res.stdout)
		return
	}
	w := &ackedWrite{kind: kind, step: c.step, node: n, id: id, op: pr.Op, fields: map[string]any{}, same: map[string]any{}}
	for f, v := range values {
		if slices.Contains(pr.Fields, f) {
			w.fields[f] = v
		} else if v != nil {
			w.same[f] = v
		}
	}
	if len(pr.Fields) > 0 && pr.Op == "" {
		c.problem("put --json on %s wrote %v but printed no op", n.name, pr.Fields)
	}
	c.noteAcked(w)
	c.acked = append(c.acked, w)
	c.stats.acked++
}

func (c *cluster) opPut(ctx context.Context, r *rand.Rand, kind string) {
	n := c.anyNode(r)
	id := c.pickID(r)
	args, values := putArgs(r, id, "")
	c.put(ctx, kind, n, id, args, values)
}

// opConflict writes the same field of the same record on 2 or 3 nodes in
// a row. Connected nodes sync within milliseconds, so the writes would
// mostly see each other: usually every node but the first is cut off
// first (offline), and sometimes put back online afterwards.
func (c *cluster) opConflict(ctx context.Context, r *rand.Rand) {
	id := hotID(r, 4)
	field := []string{"stage", "phone", "stage", "phone", "amount", "name", "score"}[r.IntN(7)]
	perm := r.Perm(len(c.nodes))
	k := 2 + r.IntN(min(2, len(c.nodes)-1))
	// Only nodes granted the record's channel write it (the office always).
	perm = slices.DeleteFunc(perm, func(i int) bool { return !c.holds(c.nodes[i], c.homeOf(id)) })
	k = min(k, len(perm))
	isolate, reconnect := r.IntN(100) < 75, r.IntN(100) < 65
	c.stats.conflicts++
	c.logf("conflict: %s/%s %s on %d nodes (isolated: %t)", collection, id, field, k, isolate)
	var cut []*node
	for j, i := range perm[:k] {
		n := c.nodes[i]
		if isolate && j > 0 && !n.offline {
			if res := c.ferry(ctx, n, "offline"); res.ok() {
				n.offline = true
				c.stats.partitions++
				cut = append(cut, n)
			} else {
				c.problem("offline on %s: %s", n.name, res.brief())
			}
		}
	}
	for _, i := range perm[:k] {
		n := c.nodes[i]
		args, values := putArgs(r, id, field)
		c.put(ctx, "conflict", n, id, args, values)
	}
	if reconnect {
		for _, n := range cut {
			if res := c.ferry(ctx, n, "online"); res.ok() {
				n.offline = false
			} else {
				c.problem("online on %s: %s", n.name, res.brief())
			}
		}
	}
}

func (c *cluster) opDelete(ctx context.Context, r *rand.Rand) {
	n := c.anyNode(r)
	id := c.routeID(n, c.pickID(r))
	c.touched[id]++
	res := c.ferry(ctx, n, "delete", collection, id)
	if n.full {
		if !res.ok() {
			c.refusedOrNot(n, "delete", res)
			return
		}
		c.acceptedOnFull(n, "delete", res)
	}
	if !res.ok() {
		c.noteRefused(n, "delete", res)
		return
	}
	c.stats.deletes++
	w := &ackedWrite{kind: "delete", step: c.step, node: n, id: id, fields: map[string]any{recordField: true}}
	w.op = c.ownNewestOp(ctx, n, id, recordField)
	c.noteAcked(w)
	c.acked = append(c.acked, w)
	c.stats.acked++
}

// ownNewestOp looks up the newest operation n wrote to a field of a record
// (the write it just made: steps run one at a time), "" if none.
func (c *cluster) ownNewestOp(ctx context.Context, n *node, id, field string) string {
	hist, err := c.history(ctx, n, id)
	if err != nil {
		c.problem("right after an acknowledged write: %v", err)
		return ""
	}
	for i := len(hist) - 1; i >= 0; i-- {
		e := hist[i]
		if e.Field == field && e.Writer == n.peerID && e.Origin == "here" {
			return e.Op
		}
	}
	c.problem("%s acknowledged a write of %s/%s %s but its history has no operation of it there%s", n.name, collection, id, field, c.movedNote(id))
	return ""
}

// importLines draws count records: fresh ids, and some hot records.
func (c *cluster) importLines(r *rand.Rand, count int) (lines []map[string]any) {
	return c.importLinesAs(r, count, fmt.Sprintf("i%d", c.step))
}

// importLinesAs is importLines with fresh ids PREFIX-k (PREFIX starts with
// "i" and is unique to the import).
func (c *cluster) importLinesAs(r *rand.Rand, count int, prefix string) (lines []map[string]any) {
	seen := map[string]bool{}
	for k := range count {
		id := fmt.Sprintf("%s-%d", prefix, k)
		if r.IntN(100) < 8 {
			id = hotID(r, 10)
		}
		rec := map[string]any{}
		perm := r.Perm(len(fieldNames))
		for _, i := range perm[:2+r.IntN(4)] {
			v, _ := randomValue(r, fieldNames[i])
			rec[fieldNames[i]] = v
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		rec["id"] = id
		lines = append(lines, rec)
	}
	return lines
}

// writeImport writes lines as a JSON Lines file of the schedule.
func (c *cluster) writeImport(lines []map[string]any) (string, error) {
	path := filepath.Join(c.root, fmt.Sprintf("import-step%d.jsonl", c.step))
	var b strings.Builder
	for _, l := range lines {
		data, err := json.Marshal(l)
		if err != nil {
			return "", err
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// ackImport records every line of an acknowledged import.
func (c *cluster) ackImport(kind string, n *node, lines []map[string]any) {
	for _, l := range lines {
		w := &ackedWrite{kind: kind, step: c.step, node: n, id: l["id"].(string), same: map[string]any{}}
		for f, v := range l {
			if f != "id" {
				w.same[f] = v
			}
		}
		c.noteAcked(w)
		c.acked = append(c.acked, w)
		c.notePending(w)
	}
	c.stats.acked++
}

// opImport imports 20 to 200 records; on a running node it is sometimes
// killed while the import runs.
func (c *cluster) opImport(ctx context.Context, r *rand.Rand) {
	n := c.anyNode(r)
	lines := c.importLines(r, 20+r.IntN(181))
	killIt := r.IntN(100) < 40
	// The CLI starts in ~10 ms and an import of 20-200 records takes some
	// 20-80 ms more: most kills land while it runs.
	delay := time.Duration(5+r.IntN(70)) * time.Millisecond
	if !killIt || !n.running() || len(c.downNodes()) >= c.maxDown() {
		c.importOn(ctx, "import", n, lines)
		return
	}
	full := n.full
	if full {
		c.markImport(lines)
	}
	bg, ok := c.startImport(ctx, n, lines)
	if !ok {
		return
	}
	sleep(ctx, delay)
	c.kill(n, fmt.Sprintf("mid-import, %s after it started", delay))
	// Wait for the command before anything else touches the dir: a command
	// that found no node opens the store itself.
	res := c.wait(bg)
	switch {
	case full:
		c.importOnFull("import-during-kill", n, lines, res, true)
	case res.ok():
		c.ackImport("import-during-kill", n, lines)
	}
}

// conflictJSON is one entry of `ferry conflicts --json`.
type conflictJSON struct {
	Collection string     `json:"collection"`
	ID         string     `json:"id"`
	Field      string     `json:"field"`
	Policy     string     `json:"policy"`
	Open       bool       `json:"open"`
	Candidates []candJSON `json:"candidates"`
}

type candJSON struct {
	N       int    `json:"n"`
	Value   any    `json:"value"`
	Field   string `json:"field"`
	Deleted bool   `json:"deleted"`
	Writer  string `json:"writer"`
	Op      string `json:"op"`
}

// opResolve resolves one open conflict of a node (picking a random
// candidate), when it has any.
func (c *cluster) opResolve(ctx context.Context, r *rand.Rand) {
	which, pickDraw, first := r.IntN(1<<30), r.IntN(1<<30), r.IntN(len(c.nodes))
	// Ask the nodes in turn from a random one, those connected first (the
	// likeliest to hold both sides of a conflict), until one has an open
	// field conflict.
	var order, later []*node
	for k := range c.nodes {
		m := c.nodes[(first+k)%len(c.nodes)]
		if m.running() && !m.offline {
			order = append(order, m)
		} else {
			later = append(later, m)
		}
	}
	var n *node
	var fieldConflicts []conflictJSON
	for _, m := range append(order, later...) {
		res := c.ferry(ctx, m, "conflicts", collection, "--open", "--json")
		if !res.ok() {
			continue
		}
		var cs []conflictJSON
		if err := json.Unmarshal([]byte(res.stdout), &cs); err != nil {
			c.problem("conflicts --json on %s: %v", m.name, err)
			return
		}
		for _, cf := range cs {
			if cf.Field != recordField && len(cf.Candidates) > 0 {
				fieldConflicts = append(fieldConflicts, cf)
			}
		}
		if len(fieldConflicts) > 0 {
			n = m
			break
		}
	}
	if n == nil {
		c.logf("resolve: no node has an open field conflict")
		return
	}
	cf := fieldConflicts[which%len(fieldConflicts)]
	pick := 1 + pickDraw%len(cf.Candidates)
	c.touched[cf.ID]++
	res := c.ferry(ctx, n, "resolve", collection, cf.ID, cf.Field, "--pick", strconv.Itoa(pick))
	if n.full {
		if !res.ok() {
			c.refusedOrNot(n, "resolve", res)
			return
		}
		c.acceptedOnFull(n, "resolve", res)
	}
	if !res.ok() {
		return
	}
	c.stats.resolves++
	w := &ackedWrite{kind: "resolve", step: c.step, node: n, id: cf.ID, fields: map[string]any{}}
	if op := c.ownNewestOp(ctx, n, cf.ID, cf.Field); op != "" {
		w.op = op
		hist, _ := c.history(ctx, n, cf.ID)
		for _, e := range hist {
			if e.Op == op && e.Field == cf.Field {
				w.fields[cf.Field] = e.Value
			}
		}
	}
	if len(w.fields) == 0 {
		w.op = ""
		w.same = map[string]any{cf.Field: cf.Candidates[pick-1].Value}
	}
	c.noteAcked(w)
	c.acked = append(c.acked, w)
	c.stats.acked++
}

func (c *cluster) opSync(ctx context.Context, r *rand.Rand) {
	n := c.anyNode(r)
	if !n.running() {
		c.logf("sync: %s is down", n.name)
		return
	}
	c.ferry(ctx, n, "sync")
}

// opPartition takes a node offline, or brings an offline one back.
func (c *cluster) opPartition(ctx context.Context, r *rand.Rand) {
	n := c.anyNode(r)
	bringBack := r.IntN(100) < 45
	var offline []*node
	for _, m := range c.nodes {
		if m.offline {
			offline = append(offline, m)
		}
	}
	if bringBack && len(offline) > 0 {
		m := offline[r.IntN(len(offline))]
		if res := c.ferry(ctx, m, "online"); res.ok() {
			m.offline = false
		} else {
			c.problem("online on %s: %s", m.name, res.brief())
		}
		return
	}
	if n.offline {
		return
	}
	if res := c.ferry(ctx, n, "offline"); res.ok() {
		n.offline = true
		c.stats.partitions++
	} else {
		c.problem("offline on %s: %s", n.name, res.brief())
	}
}

// opKill kills a running node between commands or in the middle of a put.
func (c *cluster) opKill(ctx context.Context, r *rand.Rand) {
	run := c.runningNodes()
	idx, midPut := r.IntN(1<<30), r.IntN(2) == 0
	delay := time.Duration(r.IntN(25)) * time.Millisecond
	id := c.pickID(r)
	args, values := putArgs(r, id, "")
	if len(run) == 0 || len(c.downNodes()) >= c.maxDown() {
		c.logf("kill: not now (%d down): a restart instead", len(c.downNodes()))
		c.opRestart(ctx, r)
		return
	}
	n := run[idx%len(run)]
	if !midPut {
		c.kill(n, "between commands")
		return
	}
	id, args = c.routePut(n, id, args, values)
	full := n.full
	m := ""
	if full {
		args, values, m = c.markPut(args, values)
	}
	c.touched[id]++
	bg, err := c.ferryBackground(ctx, n, args...)
	if err != nil {
		c.problem("start put: %v", err)
		return
	}
	sleep(ctx, delay)
	c.kill(n, fmt.Sprintf("mid-put, %s after it started", delay))
	res := c.wait(bg)
	switch {
	case full:
		c.putOnFull("put-during-kill", n, id, values, m, res, true)
	case res.ok():
		c.ackPut("put-during-kill", n, id, values, res)
	}
}

func (c *cluster) opRestart(ctx context.Context, r *rand.Rand) {
	down := c.downNodes()
	idx := r.IntN(1 << 30)
	if len(down) == 0 {
		c.opPut(ctx, r, "put")
		return
	}
	n := down[idx%len(down)]
	if err := c.startNode(ctx, n); err == nil {
		c.stats.restarts++
	}
}

// opKillMidSync kills a node while it catches up: right after it comes
// back online, or right after another node wrote a batch it receives.
func (c *cluster) opKillMidSync(ctx context.Context, r *rand.Rand) {
	run := c.runningNodes()
	idx, other := r.IntN(1<<30), r.IntN(1<<30)
	delay := time.Duration(r.IntN(300)) * time.Millisecond
	lines := c.importLines(r, 30+r.IntN(90))
	if len(run) < 2 || len(c.downNodes()) >= c.maxDown() {
		c.logf("kill mid-sync: not now (%d running): a restart instead", len(run))
		c.opRestart(ctx, r)
		return
	}
	n := run[idx%len(run)]
	if n.offline {
		if res := c.ferry(ctx, n, "online"); res.ok() {
			n.offline = false
		}
		sleep(ctx, delay)
		c.kill(n, fmt.Sprintf("mid-sync, %s after going online", delay))
		return
	}
	var writers []*node
	for _, m := range run {
		if m != n && !m.offline {
			writers = append(writers, m)
		}
	}
	if len(writers) == 0 {
		c.kill(n, "mid-sync (no peer to sync from)")
		return
	}
	w := writers[other%len(writers)]
	c.importOn(ctx, "import", w, lines)
	sleep(ctx, delay)
	c.kill(n, fmt.Sprintf("mid-sync, %s after %s imported %d records", delay, w.name, len(lines)))
}

// sleep waits d: the moment of a fault, never a wait for a condition.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// startImport prepares an import (prepareImport) and starts it on n in the
// background; ok is false (and the problem recorded) when it could not.
func (c *cluster) startImport(ctx context.Context, n *node, lines []map[string]any) (*bgCommand, bool) {
	path, ok := c.prepareImport(n, lines)
	if !ok {
		return nil, false
	}
	bg, err := c.ferryBackground(ctx, n, "import", collection, path)
	if err != nil {
		c.problem("start import: %v", err)
		return nil, false
	}
	return bg, true
}

// prepareImport routes the lines for n (routeImport), notes the imported
// ids, writes the import file and counts the import; ok is false (and the
// problem recorded) when the file could not be written.
func (c *cluster) prepareImport(n *node, lines []map[string]any) (string, bool) {
	c.routeImport(n, lines)
	for _, l := range lines {
		id := l["id"].(string)
		c.touched[id]++
		if strings.HasPrefix(id, "i") {
			c.importedIDs = append(c.importedIDs, id)
		}
	}
	path, err := c.writeImport(lines)
	if err != nil {
		c.problem("write import file: %v", err)
		return "", false
	}
	c.stats.imports++
	return path, true
}
