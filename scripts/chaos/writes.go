package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strconv"
)

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
