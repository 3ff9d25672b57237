package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

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
