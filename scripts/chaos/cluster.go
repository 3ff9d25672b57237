package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
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

// node is one data dir and, while it runs, its `ferry node` process.
type node struct {
	idx     int
	name    string
	dir     string
	office  bool
	port    int
	peerID  string
	skew    time.Duration // FERRY_CLOCK_OFFSET (0: none)
	logPath string
	proc    *proc // nil while the node is down
	offline bool  // last offline/online given
	starts  int

	// fullPath is the file that makes the node's disk full
	// (FERRY_FAULT_DISK_FULL, outside the data dir); full: it exists now,
	// until the start of step fullUntil (or the heal); fullSince: when it
	// was created.
	fullPath  string
	full      bool
	fullUntil int
	fullSince time.Time
	// repairPending: the disk was freed at freedAt while the node ran, and
	// its repair (status not dirty) is not confirmed yet.
	repairPending bool
	freedAt       time.Time
}

func (n *node) running() bool { return n.proc != nil }

// proc is one `ferry node` process.
type proc struct {
	cmd      *exec.Cmd
	log      *os.File
	out      *bannerWriter
	done     chan struct{} // closed once Wait returned
	state    *os.ProcessState
	waitErr  error
	killed   bool // we sent SIGKILL
	stopping bool // we sent SIGTERM
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// bannerWriter copies a node's stdout to its log and remembers it, to see
// the "running" banner.
type bannerWriter struct {
	mu  sync.Mutex
	log io.Writer
	buf bytes.Buffer
}

func (b *bannerWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < 1<<16 {
		b.buf.Write(p)
	}
	return b.log.Write(p)
}

func (b *bannerWriter) running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), " running\n")
}

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

// freePort returns a loopback TCP port nobody listens on now, outside the
// usual ephemeral range so that outgoing connections do not take it while
// its node is down.
func freePort(r *rand.Rand, taken map[int]bool) (int, error) {
	for range 200 {
		p := 20000 + r.IntN(12000)
		if taken[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		taken[p] = true
		return p, nil
	}
	return 0, errors.New("no free loopback port found")
}

// listenAddr is the address node n listens on.
func (n *node) listenAddr() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", n.port) }

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

// schemaYAML is the schema of every schedule: a few fields of each type,
// one field decided by a person (manual: its conflicts stay open until
// resolved) and one where the office wins; contacts are routed by
// territory into channels (channels.go).
const schemaYAML = `collections:
  contacts:
    channel: {field: territory}
    fields:
      name:   {type: string}
      email:  {type: string}
      city:   {type: string}
      phone:  {type: string, policy: manual}
      stage:  {type: enum, values: [lead, qualified, won, lost], policy: manual}
      amount: {type: number, policy: office}
      score:  {type: number}
      active: {type: bool}
      territory: {type: enum, values: [east, west]}
`

// setupCluster creates every data dir and starts every node: the office,
// the schema applied on it, then the laptops. All enrollment lives here:
// with a binary that has `ferry invite`, laptops join with an invite
// token; otherwise they are given the office's address with --peer.
func (c *cluster) setupCluster(ctx context.Context, r *rand.Rand) error {
	taken := map[int]bool{}
	for _, n := range c.nodes {
		p, err := freePort(r, taken)
		if err != nil {
			return err
		}
		n.port = p
	}
	office := c.nodes[0]
	res := c.ferry(ctx, office, "init", "--office", "--name", office.name, "--listen", office.listenAddr())
	if !res.ok() {
		return fmt.Errorf("init %s: %s", office.name, res.brief())
	}
	if err := c.learnPeerID(ctx, office, res); err != nil {
		return err
	}
	if err := c.configureWorkflows(office); err != nil {
		return err
	}
	if err := c.startNode(ctx, office); err != nil {
		return err
	}
	schemaFile := filepath.Join(c.root, "schema.yaml")
	if err := os.WriteFile(schemaFile, []byte(schemaYAML), 0o600); err != nil {
		return err
	}
	if res := c.ferry(ctx, office, "schema", "apply", schemaFile); !res.ok() {
		return fmt.Errorf("schema apply on %s: %s", office.name, res.brief())
	}
	officeAddr := fmt.Sprintf("%s/p2p/%s", office.listenAddr(), office.peerID)
	for _, n := range c.nodes[1:] {
		var res result
		if c.h.joinMode {
			inv := c.ferry(ctx, office, "invite", "--name", n.name, "--role", "laptop", "--json")
			if !inv.ok() {
				return fmt.Errorf("invite %s: %s", n.name, inv.brief())
			}
			var tok struct {
				Token string `json:"token"`
			}
			if err := json.Unmarshal([]byte(inv.stdout), &tok); err != nil || tok.Token == "" {
				return fmt.Errorf("invite --json for %s has no token: %q", n.name, inv.stdout)
			}
			res = c.ferry(ctx, n, "init", "--join", tok.Token, "--name", n.name, "--listen", n.listenAddr())
		} else {
			res = c.ferry(ctx, n, "init", "--name", n.name, "--listen", n.listenAddr(), "--peer", officeAddr)
		}
		if !res.ok() {
			return fmt.Errorf("init %s: %s", n.name, res.brief())
		}
		if err := c.learnPeerID(ctx, n, res); err != nil {
			return err
		}
		if err := c.startNode(ctx, n); err != nil {
			return err
		}
	}
	for _, n := range c.nodes[1:] {
		err := poll(ctx, startWithin, func() (bool, string) {
			r := c.ferry(ctx, n, "schema", "show", "--json")
			var sc struct {
				Collections map[string]struct {
					Fields map[string]any `json:"fields"`
				} `json:"collections"`
			}
			if !r.ok() || json.Unmarshal([]byte(r.stdout), &sc) != nil {
				return false, r.brief()
			}
			return len(sc.Collections["contacts"].Fields) == strings.Count(schemaYAML, "{type:"), r.stdout
		})
		if err != nil {
			return fmt.Errorf("%s never got the schema: %w", n.name, err)
		}
	}
	return c.setupChannels(ctx)
}

// learnPeerID reads the peer id from init's output, or from status.
func (c *cluster) learnPeerID(ctx context.Context, n *node, res result) error {
	for _, line := range strings.Split(res.stdout, "\n") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "peer id:"); ok {
			n.peerID = strings.TrimSpace(id)
			return nil
		}
	}
	st, _, err := c.status(ctx, n)
	if err != nil {
		return err
	}
	if st.PeerID == "" {
		return fmt.Errorf("no peer id for %s", n.name)
	}
	n.peerID = st.PeerID
	return nil
}

// startNode starts n's `ferry node` and waits until it serves its API.
func (c *cluster) startNode(ctx context.Context, n *node) error {
	if n.proc != nil {
		return fmt.Errorf("%s already runs", n.name)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	n.starts++
	skew := "none"
	if n.skew != 0 {
		skew = n.skew.String()
	}
	disk := "free"
	if n.full {
		disk = "FULL"
	}
	fmt.Fprintf(logf, "=== chaos: start %d of %s at %s (step %d, %s=%s, disk %s)\n", n.starts, n.name, time.Now().UTC().Format(time.RFC3339Nano), c.step, clockOffsetEnv, skew, disk)
	cmd := exec.Command(c.h.bin, "--dir", n.dir, "node", "--log-level", nodeLogLevel)
	cmd.Env = c.envFor(n)
	out := &bannerWriter{log: logf}
	cmd.Stdout, cmd.Stderr = out, logf
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start node %s: %w", n.name, err)
	}
	p := &proc{cmd: cmd, log: logf, out: out, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	n.proc = p
	c.wf.noteStart(n, cmd.Process.Pid)
	c.logf("%s: node started (pid %d, start %d, disk %s)", n.name, cmd.Process.Pid, n.starts, disk)
	// The banner first: a CLI command run before the node holds the store
	// would open it itself and make the node fail to start.
	err = poll(ctx, startWithin, func() (bool, string) {
		return p.out.running() || p.exited(), "no running banner in " + n.logPath
	})
	if err == nil && p.exited() {
		err = fmt.Errorf("exited during start (%v)", p.waitErr)
	}
	if err == nil {
		err = poll(ctx, startWithin, func() (bool, string) {
			if p.exited() {
				return true, ""
			}
			st, r, err := c.status(ctx, n)
			if err != nil {
				return false, r.brief()
			}
			return st.Running, "status says not running"
		})
		if err == nil && p.exited() {
			err = fmt.Errorf("exited during start (%v)", p.waitErr)
		}
	}
	if err != nil {
		c.problem("node %s did not start: %v (log %s)", n.name, err, n.logPath)
		c.reap(n)
		return fmt.Errorf("node %s did not start: %w", n.name, err)
	}
	return nil
}

// reap forgets n's process after killing it if it still runs.
func (c *cluster) reap(n *node) {
	p := n.proc
	if p == nil {
		return
	}
	if !p.exited() {
		p.killed = true
		_ = p.cmd.Process.Kill()
		<-p.done
		c.wf.noteKill(n, p.cmd.Process.Pid)
	}
	p.log.Close()
	n.proc = nil
}

// kill sends SIGKILL to n's node and waits until it is gone.
func (c *cluster) kill(n *node, why string) {
	p := n.proc
	if p == nil {
		return
	}
	if p.exited() {
		c.checkProcs()
		return
	}
	p.killed = true
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.problem("SIGKILL %s: %v", n.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopWithin):
		c.problem("node %s still runs %s after SIGKILL", n.name, stopWithin)
		return
	}
	c.wf.noteKill(n, p.cmd.Process.Pid)
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && !(ws.Signaled() && ws.Signal() == syscall.SIGKILL) {
		c.problem("node %s had exited by itself before the kill (%v); log %s", n.name, p.state, n.logPath)
	}
	fmt.Fprintf(p.log, "=== chaos: killed with SIGKILL (%s) at %s\n", why, time.Now().UTC().Format(time.RFC3339Nano))
	p.log.Close()
	n.proc = nil
	c.stats.kills++
	c.logf("%s: kill -9 (%s)", n.name, why)
	if n.repairPending {
		n.repairPending = false
		c.logf("%s: killed before its repair after a full disk was confirmed: the convergence checks it", n.name)
	}
}

// checkProcs records every node process that exited without being told to.
func (c *cluster) checkProcs() {
	for _, n := range c.nodes {
		p := n.proc
		if p == nil || !p.exited() || p.killed || p.stopping {
			continue
		}
		c.problem("node %s exited by itself: %v (log %s)", n.name, p.state, n.logPath)
		p.log.Close()
		n.proc = nil
	}
}

// stopAll sends SIGTERM to every running node and checks clean exits.
func (c *cluster) stopAll() {
	var running []*node
	for _, n := range c.nodes {
		if n.proc != nil && !n.proc.exited() {
			n.proc.stopping = true
			_ = n.proc.cmd.Process.Signal(syscall.SIGTERM)
			running = append(running, n)
		}
	}
	c.checkProcs()
	for _, n := range running {
		p := n.proc
		select {
		case <-p.done:
			if p.waitErr != nil {
				c.problem("node %s did not exit cleanly on SIGTERM: %v (log %s)", n.name, p.waitErr, n.logPath)
			}
		case <-time.After(stopWithin):
			c.problem("node %s still runs %s after SIGTERM (log %s)", n.name, stopWithin, n.logPath)
			p.killed = true
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		p.log.Close()
		n.proc = nil
	}
}

// killAll is the emergency exit (interrupt, setup failure).
func (c *cluster) killAll() {
	for _, n := range c.nodes {
		c.reap(n)
	}
}

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

// scanLogs reports node logs that mention a panic or a fatal runtime error.
func (c *cluster) scanLogs() {
	for _, n := range c.nodes {
		data, err := os.ReadFile(n.logPath)
		if err != nil {
			c.problem("read log of %s: %v", n.name, err)
			continue
		}
		for i, line := range strings.Split(string(data), "\n") {
			l := strings.ToLower(line)
			if strings.Contains(l, "panic") || strings.Contains(line, "fatal error:") || strings.Contains(line, "DATA RACE") {
				c.problem("log of %s line %d: %s (%s)", n.name, i+1, strings.TrimSpace(line), n.logPath)
				break
			}
		}
	}
}
