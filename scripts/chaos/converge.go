package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// heal frees every full disk, restarts every node that is down and puts
// every node online.
func (c *cluster) heal(ctx context.Context) error {
	c.checkProcs()
	c.checkRepairs(ctx, true)
	for _, n := range c.nodes {
		if n.full {
			c.freeDisk(n, "heal")
			// The convergence requires dirty=false of every node.
			n.repairPending = false
		}
	}
	for _, n := range c.nodes {
		if n.offline {
			if r := c.ferry(ctx, n, "online"); !r.ok() {
				return fmt.Errorf("online on %s: %s", n.name, r.brief())
			}
			n.offline = false
		}
	}
	for _, n := range c.nodes {
		if !n.running() {
			if err := c.startNode(ctx, n); err != nil {
				return err
			}
			c.stats.restarts++
		}
	}
	return nil
}

// waitConverged polls every node's status until all run online with the
// same digest, nothing queued, not dirty. It returns how long it took.
func (c *cluster) waitConverged(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	err := poll(ctx, c.h.opts.deadline, func() (bool, string) {
		c.checkProcs()
		var sts []statusJSON
		var lines []string
		ok := true
		for _, n := range c.nodes {
			if !n.running() {
				// It died on its own (already a problem): bring it back so
				// the other checks can run.
				if err := c.startNode(ctx, n); err != nil {
					return false, err.Error()
				}
			}
			st, _, err := c.status(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			sts = append(sts, st)
			heads := append([]string(nil), st.Heads...)
			sort.Strings(heads)
			lines = append(lines, fmt.Sprintf("%s: running=%t online=%t peers=%d digest=%s pending=%t heads=%d(%s) height=%d dirty=%t queued=%d",
				n.name, st.Running, st.Online, st.ConnectedPeers, short(st.Digest), st.DigestPending, len(heads), short(strings.Join(heads, ",")), st.DAGHeight, st.Dirty, st.QueuedJobs))
			if !st.Running || !st.Online || st.Digest == "" || st.DigestPending || st.Dirty || st.QueuedJobs > 0 {
				ok = false
			}
		}
		for _, st := range sts[1:] {
			if st.Digest != sts[0].Digest {
				ok = false
			}
		}
		if !epochsAgree(sts, lines) {
			ok = false
		}
		if ok {
			// Every channel too (channels_check.go), once the everyone
			// store agrees.
			chOK, chLines := c.channelsConverged(ctx)
			lines = append(lines, chLines...)
			ok = chOK
		}
		if ok {
			// Equal digests are the criterion. Heads may still differ: a
			// node can keep a head that is an ancestor of another head
			// (go-ds-crdt does not always drop it), so they are only logged.
			for i, st := range sts[1:] {
				if !sameSet(st.Heads, sts[0].Heads) {
					c.logf("converged, but the heads of %s and %s differ:%s", c.nodes[0].name, c.nodes[i+1].name, "\n    "+strings.Join(lines, "\n    "))
					break
				}
			}
		}
		last := "\n    " + strings.Join(lines, "\n    ")
		sameHeads, sameDigest := true, true
		for _, st := range sts[1:] {
			sameHeads = sameHeads && sameSet(st.Heads, sts[0].Heads)
			sameDigest = sameDigest && st.Digest == sts[0].Digest
		}
		if sameHeads && !sameDigest {
			last += "\n    (same heads everywhere but different digests: some node has not merged every block under those heads)"
		}
		return ok, last
	})
	return time.Since(start), err
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x := append([]string(nil), a...)
	y := append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
