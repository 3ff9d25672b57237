package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
)

// compactCall is a compaction running in the background.
type compactCall struct {
	res   apijson.CompactResult
	err   error
	start time.Time
	dur   time.Duration
	done  chan struct{}
}

// startCompact sends POST /v1/compact to n's node without waiting.
func (c *cluster) startCompact(ctx context.Context, n *node) *compactCall {
	c.resolvePending(ctx)
	c.comp.started = append(c.comp.started, c.step)
	call := &compactCall{start: time.Now(), done: make(chan struct{})}
	cl, err := api.Dial(n.dir)
	if err != nil {
		call.err = err
		close(call.done)
		return call
	}
	c.logf("%s: POST /v1/compact (in the background)", n.name)
	go func() {
		defer close(call.done)
		cctx, cancel := context.WithTimeout(ctx, cliTimeout)
		defer cancel()
		call.res, call.err = cl.Compact(cctx)
		call.dur = time.Since(call.start)
		if call.err != nil && cctx.Err() != nil && ctx.Err() == nil {
			call.err = fmt.Errorf("still running after %s: %w", cliTimeout, call.err)
		}
	}()
	return call
}

// status of an API error (0: not an answer of the node).
func apiStatus(err error) int {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// finishCompact waits for a compaction call, logs it and records an
// acknowledged one. It returns whether the office acknowledged it.
func (c *cluster) finishCompact(n *node, call *compactCall) bool {
	<-call.done
	if call.err != nil {
		c.logf("%s: compact -> %v (%dms)", n.name, call.err, call.dur.Milliseconds())
		if strings.Contains(call.err.Error(), "still running after") {
			c.problem("POST /v1/compact on %s hung for %s", n.name, cliTimeout)
		}
		if st := apiStatus(call.err); st == http.StatusNotFound || st == http.StatusMethodNotAllowed {
			c.h.noCompact = true
			c.logf("this ferry has no POST /v1/compact: compaction steps are skipped")
		}
		return false
	}
	data, _ := json.Marshal(call.res)
	c.logf("%s: compact -> epoch %s (%dms)\n    %s", n.name, call.res.Epoch, call.dur.Milliseconds(), data)
	c.comp.acked = append(c.comp.acked, call.res.Epoch)
	c.noteCompactionAway()
	c.comp.took = call.dur
	c.stats.comp.compactions++
	return true
}

// compactRetry compacts on n, retrying while it answers 409, for at most
// compactBusyWithin. It returns whether a compaction was acknowledged.
func (c *cluster) compactRetry(ctx context.Context, n *node) bool {
	deadline := time.Now().Add(compactBusyWithin)
	for ctx.Err() == nil {
		call := c.startCompact(ctx, n)
		if c.finishCompact(n, call) {
			return true
		}
		switch st := apiStatus(call.err); {
		case st == http.StatusConflict:
			c.stats.comp.busy++
			if time.Now().After(deadline) {
				c.stats.comp.gaveUp++
				c.logf("%s: still syncing after %s of retries: compaction given up", n.name, compactBusyWithin)
				return false
			}
			sleep(ctx, 5*pollEvery)
		case st == http.StatusBadRequest:
			c.problem("POST /v1/compact on the office %s: 400: %v", n.name, call.err)
			return false
		case st != 0:
			c.stats.comp.failed++
			if !n.full {
				c.problem("POST /v1/compact on %s (disk free) failed: %v", n.name, call.err)
			}
			return false
		default:
			// Not an answer: the node is gone (checkProcs reports it).
			c.checkProcs()
			return false
		}
	}
	return false
}

// officeUp makes sure the office runs (a restart if it is down and the
// start works); false if it cannot.
func (c *cluster) officeUp(ctx context.Context) (*node, bool) {
	office := c.nodes[0]
	c.checkProcs()
	if office.running() {
		return office, true
	}
	if err := c.startNode(ctx, office); err != nil {
		return office, false
	}
	c.stats.restarts++
	return office, true
}
