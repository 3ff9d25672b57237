package main

import (
	"context"
	"strings"
)

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
