package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ferry-crm/ferry/node/disk"
)

const (
	// clockOffsetEnv shifts the operation clock of a ferry process.
	clockOffsetEnv = "FERRY_CLOCK_OFFSET"
	// diskFullEnv names a file: while it exists, every write of the ferry
	// process to its store fails with "no space left on device".
	diskFullEnv = disk.FaultFullEnv
	// cliTimeout bounds one CLI command.
	cliTimeout = 30 * time.Second
	// startWithin bounds a node's start (a restart after kill -9 re-walks
	// the DAG first).
	startWithin = 30 * time.Second
	// stopWithin bounds a clean shutdown after SIGTERM, and a SIGKILL.
	stopWithin = 20 * time.Second
	// pollEvery is the interval of every poll.
	pollEvery = 100 * time.Millisecond
	// nodeLogLevel is the --log-level of every node.
	nodeLogLevel = "info"
)

// cluster is the state of one schedule.
type cluster struct {
	h       *harness
	index   int
	seed    uint64
	root    string
	nodes   []*node
	opsLog  *os.File
	started time.Time
	step    int // current step (0: setup, -1: heal and checks)

	// problems found so far (the schedule fails if any).
	problems []string
	// mu serialises problems and the ops log (the checks read the nodes
	// in parallel).
	mu sync.Mutex

	// converged: every node showed the same digest after the healing.
	converged bool

	acked       []*ackedWrite
	importedIDs []string
	stats       stats

	// failed are writes refused on a full disk: they must show nowhere;
	// cut are the records of imports cut short by a disk that filled
	// while they ran: each is written whole or not at all.
	failed  []*failedWrite
	cut     []*cutRecord
	markers int // unique values handed out so far
	// touched counts the write commands run on each record id (whatever
	// their outcome).
	touched map[string]int

	// comp: compactions and what the checks need of them (compact.go).
	comp compactState
	// wf: office kills and full disks, for the workflow check
	// (workflows.go).
	wf wfState
	// ch: the channels' model: grants, each record's channel
	// (channels.go).
	ch chanState
}

type stats struct {
	ops, kills, restarts, partitions, skewed, acked, imports, resolves, conflicts, deletes int
	converged                                                                              time.Duration

	// Disk full: episodes (a file created), write commands refused (an
	// import counts once), failed values checked absent (each record of a
	// refused import counts), imports cut short by the disk filling, the
	// longest time a node took to repair after its space came back, and
	// `ferry check` runs.
	diskFull, refused, failedValues, cutImports, checks int
	repairMax                                           time.Duration

	// comp: compactions (compact.go).
	comp compactStats
	// wf: workflow deliveries (workflows.go).
	wf wfStats
	// ch: grants, moves, refusals (channels.go).
	ch chanStats
}

// problem records a failed check.
func (c *cluster) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	c.problems = append(c.problems, msg)
	c.mu.Unlock()
	c.logf("PROBLEM: %s", msg)
}

// logf writes a line to the schedule's ops log (and to stderr with -v).
func (c *cluster) logf(format string, args ...any) {
	line := fmt.Sprintf("[%7.3fs step %3d] %s\n", time.Since(c.started).Seconds(), c.step, fmt.Sprintf(format, args...))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opsLog != nil {
		c.opsLog.WriteString(line)
	}
	if c.h.opts.verbose {
		fmt.Fprintf(os.Stderr, "[s%d %s", c.index, line[1:])
	}
}

// poll calls check every pollEvery until it returns true or the deadline
// passes (then it returns the last report as the error).
func poll(ctx context.Context, within time.Duration, check func() (bool, string)) error {
	deadline := time.Now().Add(within)
	for {
		ok, last := check()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s: %s", within, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}
