package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// result is the outcome of one CLI command.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int   // exit code; -1 when it did not run or was killed
	err    error // set when the command could not run or hung
	dur    time.Duration
}

func (r result) ok() bool { return r.err == nil && r.code == 0 }

// brief is the first line of what a command said, for messages.
func (r result) brief() string {
	s := strings.TrimSpace(r.stderr)
	if s == "" {
		s = strings.TrimSpace(r.stdout)
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if r.err != nil {
		s = r.err.Error() + ": " + s
	}
	return fmt.Sprintf("exit %d: %s", r.code, s)
}

// envFor is the environment of a ferry process working on n's dir.
func (c *cluster) envFor(n *node) []string {
	env := append([]string(nil), c.h.env...)
	if n.skew != 0 {
		env = append(env, clockOffsetEnv+"="+n.skew.String())
	}
	if n.fullPath != "" {
		env = append(env, diskFullEnv+"="+n.fullPath)
	}
	return env
}

// command prepares `ferry --dir N ARGS...`.
func (c *cluster) command(ctx context.Context, n *node, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	full := append([]string{"--dir", n.dir}, args...)
	cmd := exec.CommandContext(ctx, c.h.bin, full...)
	cmd.Env = c.envFor(n)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	return cmd, &stdout, &stderr
}

// ferry runs `ferry --dir N ARGS...` and logs it.
func (c *cluster) ferry(ctx context.Context, n *node, args ...string) result {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	cmd, stdout, stderr := c.command(ctx, n, args...)
	start := time.Now()
	err := cmd.Run()
	return c.finish(ctx, n, args, cmd, err, stdout, stderr, start)
}

// bgCommand is a CLI command running in the background.
type bgCommand struct {
	n      *node
	args   []string
	cmd    *exec.Cmd
	stdout *bytes.Buffer
	stderr *bytes.Buffer
	start  time.Time
	cancel context.CancelFunc
	ctx    context.Context
	done   chan error
}

// ferryBackground starts `ferry --dir N ARGS...` without waiting.
func (c *cluster) ferryBackground(ctx context.Context, n *node, args ...string) (*bgCommand, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	cmd, stdout, stderr := c.command(ctx, n, args...)
	b := &bgCommand{n: n, args: args, cmd: cmd, stdout: stdout, stderr: stderr, start: time.Now(), cancel: cancel, ctx: ctx, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	c.logf("%s$ ferry %s  (in the background)", n.name, strings.Join(args, " "))
	go func() { b.done <- cmd.Wait() }()
	return b, nil
}

// wait waits for a background command and logs it.
func (c *cluster) wait(b *bgCommand) result {
	err := <-b.done
	defer b.cancel()
	return c.finish(b.ctx, b.n, b.args, b.cmd, err, b.stdout, b.stderr, b.start)
}

func (c *cluster) finish(ctx context.Context, n *node, args []string, cmd *exec.Cmd, err error, stdout, stderr *bytes.Buffer, start time.Time) result {
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String(), dur: time.Since(start), code: -1}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.err = fmt.Errorf("still running after %s (killed)", cliTimeout)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.err = err
	default:
		r.code = 0
	}
	c.logf("%s$ ferry %s -> exit %d (%dms)%s%s", n.name, strings.Join(args, " "), r.code, r.dur.Milliseconds(),
		indent("stdout", r.stdout), indent("stderr", r.stderr))
	if strings.Contains(r.stderr, "panic:") || strings.Contains(r.stderr, "fatal error:") {
		c.problem("ferry %s on %s panicked:\n%s", strings.Join(args, " "), n.name, r.stderr)
	}
	if r.err != nil && ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		c.problem("ferry %s on %s hung for %s", strings.Join(args, " "), n.name, cliTimeout)
	}
	return r
}

// indent formats command output for the ops log (shortened).
func indent(what, s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	if len(s) > 1500 {
		s = s[:1500] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return "\n    " + what + ": " + strings.ReplaceAll(s, "\n", "\n    ")
}

// statusJSON is the part of `ferry status --json` the harness reads.
type statusJSON struct {
	PeerID         string     `json:"peer_id"`
	Running        bool       `json:"running"`
	Online         bool       `json:"online"`
	ConnectedPeers int        `json:"connected_peers"`
	Heads          []string   `json:"heads"`
	DAGHeight      uint64     `json:"dag_height"`
	Dirty          bool       `json:"dirty"`
	QueuedJobs     int        `json:"queued_jobs"`
	MalformedOps   uint64     `json:"malformed_ops"`
	Digest         string     `json:"digest"`
	DigestPending  bool       `json:"digest_pending"`
	RepairReason   string     `json:"repair_reason"`
	FailedWrites   uint64     `json:"failed_writes"`
	Epoch          *epochJSON `json:"epoch"`
}

func (c *cluster) status(ctx context.Context, n *node) (statusJSON, result, error) {
	r := c.ferry(ctx, n, "status", "--json")
	var st statusJSON
	if !r.ok() {
		return st, r, fmt.Errorf("status on %s: %s", n.name, r.brief())
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		return st, r, fmt.Errorf("status --json on %s: %w", n.name, err)
	}
	return st, r, nil
}
