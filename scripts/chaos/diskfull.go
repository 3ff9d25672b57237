package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
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
