package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

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
