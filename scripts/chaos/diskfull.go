package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

// The disk-full fault. Every ferry process of a node (the node, and every
// CLI command on its dir, which opens the store itself when the node is
// down) runs with FERRY_FAULT_DISK_FULL=<root>/<name>.diskfull: while that
// file exists, every write to its store fails with "no space left on
// device". An episode creates the file, runs writes on the node (refused),
// writes elsewhere that it must merge, imports on it, sometimes a kill -9
// and a restart with the disk still full, then the next steps of the
// schedule, and removes the file ("space comes back") at the start of a
// later step or at the heal.

const (
	// repairWithin bounds the node's own repair once its space is back
	// (it retries every 5 s).
	repairWithin = 30 * time.Second
	// markerField holds the unique value of a write made on a full disk.
	markerField = "name"
)

// failedWrite is a write refused because its node's disk was full (its
// command failed): it must show nowhere, neither as a value nor in any
// history. It is found by its unique value.
type failedWrite struct {
	// kind: put, conflict, import, put-during-kill, import-during-kill
	// (the command failed; its node was killed while it ran), not-granted
	// (a laptop's write into a channel it is not granted, channels.go), or
	// a selfcheck-... fabrication.
	kind string
	// why it failed, for messages ("" is a full disk).
	why   string
	step  int
	node  *node
	id    string
	field string
	value any
	// sample: always read the record's history on every node (a put, the
	// first records of an import); other records of a refused import are
	// read only when some other command wrote the same id or a node shows
	// the record (see verifyFailed).
	sample bool
}

// cutRecord is a record of an import that failed because the disk filled
// while it ran: the deltas committed before stay, the rest is not
// written, and a record is never split across deltas. Where its unique
// value shows in a history, every field of the record must be in the same
// operation with the imported value.
type cutRecord struct {
	step   int
	node   *node
	id     string
	fields map[string]any
	sample bool
}

// historySample is how many records of each refused or cut import have
// their history read on every node whatever else is known of them.
const historySample = 5

// marker returns a value no other write of the schedule has.
func (c *cluster) marker() string {
	c.markers++
	return fmt.Sprintf("unwritten-%x-s%d-%d", c.seed, c.step, c.markers)
}

// nodeLogMark writes a `=== chaos:` line into n's node log.
func (c *cluster) nodeLogMark(n *node, format string, args ...any) {
	line := fmt.Sprintf("=== chaos: "+format+" at %s (step %d)\n", append(args, time.Now().UTC().Format(time.RFC3339Nano), c.step)...)
	if n.proc != nil {
		fmt.Fprint(n.proc.log, line)
		return
	}
	if f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		fmt.Fprint(f, line)
		f.Close()
	}
}

// fillDisk makes n's disk full until the start of step until (an already
// full disk stays full until the later of both).
func (c *cluster) fillDisk(n *node, until int, why string) {
	if n.full {
		n.fullUntil = max(n.fullUntil, until)
		c.logf("%s: disk already full, now until step %d", n.name, n.fullUntil)
		return
	}
	if err := os.WriteFile(n.fullPath, []byte(why+"\n"), 0o600); err != nil {
		c.problem("fill the disk of %s: %v", n.name, err)
		return
	}
	if n.repairPending {
		c.logf("%s: its repair after the last episode is no longer followed (full again)", n.name)
		n.repairPending = false
	}
	n.full, n.fullUntil, n.fullSince = true, until, time.Now()
	c.wf.noteFull(n, true)
	c.stats.diskFull++
	state := "down"
	if n.running() {
		state = "running"
	}
	c.logf("%s: DISK FULL (%s; %s created; node %s) until step %d", n.name, why, n.fullPath, state, until)
	c.nodeLogMark(n, "disk full (%s created: every store write fails)", n.fullPath)
}

// freeDisk removes n's disk-full file. A running node must then repair
// itself (status not dirty) within repairWithin: checkRepairs confirms it
// at the start of the next steps without holding the schedule up.
func (c *cluster) freeDisk(n *node, why string) {
	if !n.full {
		return
	}
	if err := os.Remove(n.fullPath); err != nil {
		c.problem("free the disk of %s: %v", n.name, err)
		return
	}
	n.full = false
	c.wf.noteFull(n, false)
	c.logf("%s: disk space back (%s; full for %s)", n.name, why, time.Since(n.fullSince).Round(time.Millisecond))
	c.nodeLogMark(n, "disk space back (%s removed)", n.fullPath)
	if !n.running() {
		c.logf("%s: down: its repair is checked once it runs again (the convergence requires dirty=false)", n.name)
		return
	}
	n.repairPending, n.freedAt = true, time.Now()
}

// checkRepairs asks every node whose disk was freed and whose repair is
// not confirmed yet for its status: not dirty is the repair, still dirty
// repairWithin after the space came back is a problem. wait: poll until
// then (at the heal); otherwise ask once. A node killed in the meantime
// is no longer followed (kill clears repairPending): the convergence
// requires dirty=false of every node.
func (c *cluster) checkRepairs(ctx context.Context, wait bool) {
	for _, n := range c.nodes {
		if !n.repairPending {
			continue
		}
		var last statusJSON
		var lastErr string
		check := func() (bool, string) {
			if n.proc == nil || n.proc.exited() {
				return true, ""
			}
			st, r, err := c.status(ctx, n)
			if err != nil {
				lastErr = r.brief()
				return false, err.Error()
			}
			last, lastErr = st, ""
			return !st.Dirty, ""
		}
		ok, _ := check()
		if !ok && wait {
			ok = poll(ctx, time.Until(n.freedAt.Add(repairWithin)), check) == nil
		}
		took := time.Since(n.freedAt)
		switch {
		case ctx.Err() != nil:
			return
		case n.proc == nil || n.proc.exited():
			n.repairPending = false
			c.checkProcs()
		case ok:
			n.repairPending = false
			c.stats.repairMax = max(c.stats.repairMax, took)
			c.logf("%s: repaired: not dirty %s after its disk was freed (at most)", n.name, took.Round(time.Millisecond))
		case took > repairWithin:
			n.repairPending = false
			if lastErr != "" {
				lastErr = "; status: " + lastErr
			}
			c.problem("%s still needs repair %s after its disk was freed: dirty=%t repair_reason=%q failed_writes=%d queued=%d online=%t peers=%d%s (log %s)",
				n.name, took.Round(time.Second), last.Dirty, last.RepairReason, last.FailedWrites, last.QueuedJobs, last.Online, last.ConnectedPeers, lastErr, n.logPath)
		}
	}
}

// freeDue frees the disks whose episode is over (at the start of a step).
func (c *cluster) freeDue(ctx context.Context) {
	for _, n := range c.nodes {
		if n.full && c.step >= n.fullUntil {
			c.freeDisk(n, "episode over")
		}
	}
	c.checkRepairs(ctx, false)
}

// refusedOK checks how a write command failed on a full disk: exit 1 with
// "not written" or "no space left on device" (not required when its node
// was killed while it ran: the command may have lost its connection).
func (c *cluster) refusedOK(n *node, what string, res result, killed bool) {
	c.stats.refused++
	if killed || res.err != nil {
		return
	}
	msg := res.stderr + res.stdout
	if res.code != 1 || !(strings.Contains(msg, "not written") || strings.Contains(msg, "no space left on device")) {
		if res.code == 1 && (strings.Contains(msg, "not held") || strings.Contains(msg, "not granted")) {
			// Refused first because the laptop does not hold the
			// record's channel (channels.go): nothing written either.
			c.stats.ch.notHeld++
			return
		}
		c.problem("%s on %s (disk full) failed, but not as a full disk should (exit 1, \"not written\" or \"no space left on device\"): %s", what, n.name, res.brief())
	}
}

// refusedOrNot checks how a delete or a resolution failed on a full disk:
// refused like any write, or for a reason of its own before writing
// anything (a delete of a record this node does not have: "record not
// found"), which is logged and not counted. Puts and imports always write
// (they carry a unique value), so refusedOK applies to them.
func (c *cluster) refusedOrNot(n *node, what string, res result) {
	if res.err != nil {
		return
	}
	msg := res.stderr + res.stdout
	if res.code == 1 && !strings.Contains(msg, "not written") && !strings.Contains(msg, "no space left on device") &&
		(strings.Contains(msg, "not found") || strings.Contains(msg, "no conflict") || strings.Contains(msg, "not in conflict")) {
		c.logf("%s on %s (disk full) failed before writing anything: %s", what, n.name, res.brief())
		return
	}
	c.refusedOK(n, what, res, false)
}

// acceptedOnFull reports a write command that exited 0 although its node's
// disk was full.
func (c *cluster) acceptedOnFull(n *node, what string, res result) {
	c.problem("%s on %s exited 0 although its disk was full (step %d): %s", what, n.name, c.step, oneLine(strings.TrimSpace(res.stdout)))
}

// markPut rewrites a put drawn by putArgs for a full disk: the same fields,
// no --unset, and a unique value in markerField.
func (c *cluster) markPut(args []string, values map[string]any) ([]string, map[string]any, string) {
	m := c.marker()
	out := append([]string(nil), args[:3]...)
	vals := map[string]any{}
	for i := 3; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--json":
		case a == "--unset":
			i++
		case strings.HasPrefix(a, markerField+"="):
		default:
			out = append(out, a)
		}
	}
	for f, v := range values {
		if v != nil && f != markerField {
			vals[f] = v
		}
	}
	vals[markerField] = m
	return append(out, markerField+"="+m, "--json"), vals, m
}

// put runs a put drawn by putArgs on n. On a full disk the put carries a
// unique value, must be refused, and is recorded as failed.
func (c *cluster) put(ctx context.Context, kind string, n *node, id string, args []string, values map[string]any) {
	id, args = c.routePut(n, id, args, values)
	c.touched[id]++
	if !n.full {
		if res := c.ferry(ctx, n, args...); res.ok() {
			c.ackPut(kind, n, id, values, res)
		} else {
			c.noteRefused(n, "put", res)
		}
		return
	}
	args, values, m := c.markPut(args, values)
	res := c.ferry(ctx, n, args...)
	c.putOnFull(kind, n, id, values, m, res, false)
}

// putOnFull records the outcome of a marked put on a full disk.
func (c *cluster) putOnFull(kind string, n *node, id string, values map[string]any, m string, res result, killed bool) {
	if res.ok() {
		c.acceptedOnFull(n, "put", res)
		c.ackPut(kind+"-on-full-disk", n, id, values, res)
		return
	}
	if res.err != nil && !killed {
		return // it hung: neither acknowledged nor known to have failed
	}
	c.refusedOK(n, "put", res, killed)
	c.failed = append(c.failed, &failedWrite{kind: kind, step: c.step, node: n, id: id, field: markerField, value: m, sample: true})
	c.stats.failedValues++
}

// markImport gives every line a unique value (a refused import's records
// must show nowhere; a cut one's are found by it).
func (c *cluster) markImport(lines []map[string]any) {
	for _, l := range lines {
		l[markerField] = c.marker()
	}
}

// importOnFull records the outcome of a marked import on a full disk.
func (c *cluster) importOnFull(kind string, n *node, lines []map[string]any, res result, killed bool) {
	if res.ok() {
		c.acceptedOnFull(n, "import", res)
		c.ackImport(kind+"-on-full-disk", n, lines)
		return
	}
	if res.err != nil && !killed {
		return
	}
	c.refusedOK(n, "import", res, killed)
	for i, l := range lines {
		c.failed = append(c.failed, &failedWrite{kind: kind, step: c.step, node: n, id: l["id"].(string), field: markerField, value: l[markerField], sample: i < historySample})
		c.stats.failedValues++
	}
}

// importOn imports lines on n (prepared with prepareImport), on a full disk
// as a refused write.
func (c *cluster) importOn(ctx context.Context, kind string, n *node, lines []map[string]any) {
	full := n.full
	if full {
		c.markImport(lines)
	}
	path, ok := c.prepareImport(n, lines)
	if !ok {
		return
	}
	res := c.ferry(ctx, n, "import", collection, path)
	switch {
	case full:
		c.importOnFull(kind, n, lines, res, false)
	case res.ok():
		c.ackImport(kind, n, lines)
	default:
		c.noteRefused(n, "import", res)
	}
}

// opDiskFull is one disk-full episode on the office or a laptop: plain,
// while an import runs on it, or with a kill -9 and a restart while the
// disk is still full. It lasts this step and 2 to 6 more (freeDue).
func (c *cluster) opDiskFull(ctx context.Context, r *rand.Rand) {
	variant := r.IntN(100)
	x := c.nodes[0]
	if r.IntN(100) >= 30 {
		x = c.nodes[1+r.IntN(len(c.nodes)-1)]
	}
	until := c.step + 3 + r.IntN(5)
	// An import of 100-400 records takes some 100-600 ms here and commits
	// a delta every 400 operations: a fill 10-300 ms in lands before the
	// first delta, between two, or after the last.
	delay := time.Duration(10+r.IntN(290)) * time.Millisecond
	withImport := r.IntN(100) < 50
	other := r.IntN(1 << 30)
	idX, idX2, idY := c.pickID(r), c.pickID(r), c.pickID(r)
	argsX, valuesX := putArgs(r, idX, "")
	argsX2, valuesX2 := putArgs(r, idX2, "")
	argsY, valuesY := putArgs(r, idY, "")
	lines := c.importLinesAs(r, 100+r.IntN(301), fmt.Sprintf("i%d", c.step))
	more := c.importLinesAs(r, 20+r.IntN(60), fmt.Sprintf("i%db", c.step))

	switch {
	case variant < 30 && !x.full:
		// The disk fills while an import runs on x (through the node, or
		// in the command itself when x is down).
		c.logf("disk full: on %s, %s into an import", x.name, delay)
		c.markImport(lines)
		bg, ok := c.startImport(ctx, x, lines)
		if !ok {
			return
		}
		sleep(ctx, delay)
		c.fillDisk(x, until, fmt.Sprintf("%s into an import", delay))
		res := c.wait(bg)
		switch {
		case res.ok():
			// Done before the disk filled: acknowledged.
			c.ackImport("import-before-full", x, lines)
		case res.err == nil:
			c.refusedOK(x, "import cut by a full disk", res, false)
			c.stats.cutImports++
			k := 0
			for _, l := range lines {
				id := l["id"].(string)
				if !strings.HasPrefix(id, "i") {
					continue // an existing record: unchanged fields are not written
				}
				f := map[string]any{}
				for field, v := range l {
					if field != "id" {
						f[field] = v
					}
				}
				c.cut = append(c.cut, &cutRecord{step: c.step, node: x, id: id, fields: f, sample: k < historySample})
				k++
			}
		}
	case variant < 65:
		c.logf("disk full: on %s", x.name)
		c.fillDisk(x, until, "plain")
		if withImport {
			c.importOn(ctx, "import", x, lines)
		}
	default:
		c.logf("disk full: on %s, with a kill -9 and a restart while it is full", x.name)
		c.fillDisk(x, until, "with a kill")
	}
	// A write on x: refused.
	c.put(ctx, "put", x, idX, argsX, valuesX)
	if variant >= 65 {
		if x.running() && len(c.downNodes()) < c.maxDown() {
			c.kill(x, "disk full")
		}
	}
	// A write elsewhere, which x must merge once it has room again.
	var ys []*node
	for _, m := range c.runningNodes() {
		if m != x && !m.offline && !m.full {
			ys = append(ys, m)
		}
	}
	if len(ys) > 0 {
		y := ys[other%len(ys)]
		c.put(ctx, "put", y, idY, argsY, valuesY)
		if variant >= 65 {
			c.importOn(ctx, "import", y, more)
		}
	}
	if variant >= 65 && !x.running() {
		if err := c.startNode(ctx, x); err == nil {
			c.stats.restarts++
			c.put(ctx, "put", x, idX2, argsX2, valuesX2)
		}
	}
	if x.running() {
		// For the log: what x says while full.
		c.ferry(ctx, x, "status", "--json")
	}
}

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
