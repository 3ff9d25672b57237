package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
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

func (c *cluster) anyNode(r *rand.Rand) *node { return c.nodes[r.IntN(len(c.nodes))] }

// runningNodes and downNodes list nodes by state (in index order, so that a
// step's choice among them is a function of the harness's own state).
func (c *cluster) runningNodes() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

func (c *cluster) downNodes() []*node {
	var out []*node
	for _, n := range c.nodes {
		if !n.running() {
			out = append(out, n)
		}
	}
	return out
}

// maxDown is how many nodes may be down at once.
func (c *cluster) maxDown() int { return max(1, (len(c.nodes)-1)/2) }

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
