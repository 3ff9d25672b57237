package main

// Helpers of the end-to-end tests: they build the real ferry binary once,
// run its commands as processes and its nodes as long-lived processes on
// loopback, and wait on conditions with deadlines (never fixed sleeps).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

const (
	// waitFor bounds every eventual condition.
	waitFor = 20 * time.Second
	// pollEvery is the retry interval of eventually.
	pollEvery = 50 * time.Millisecond
	// stopWithin bounds a clean shutdown after SIGTERM.
	stopWithin = 10 * time.Second
	// cliTimeout bounds one CLI command.
	cliTimeout = 30 * time.Second
)

// ferryBin is the binary built by TestMain ("" under -short).
var ferryBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	tmp, err := os.MkdirTemp("", "ferry-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(1)
	}
	bin := filepath.Join(tmp, "ferry")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build of the ferry binary failed:", err)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	if err := os.Mkdir(filepath.Join(tmp, "home"), 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: home dir:", err)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	ferryBin = bin
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// e2e marks an end-to-end test: skipped under -short, run in parallel.
func e2e(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test of the ferry binary: skipped with -short")
	}
	if ferryBin == "" {
		t.Fatal("the ferry binary was not built")
	}
	t.Parallel()
}

// schemaFile is the reference CRM schema (a copy of bench/crm.yaml).
const schemaFile = "demo_schema.yaml"

// result is the outcome of one CLI command.
type result struct {
	Args   []string
	Stdout string
	Stderr string
	Code   int
}

func (r result) String() string {
	return fmt.Sprintf("ferry %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

// cliEnv is the environment of every ferry process: FERRY_DIR and HOME
// point into TestMain's temp dir so that a command without --dir never
// touches the real ~/.ferry.
var cliEnv = sync.OnceValue(func() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_DIR=") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	home := filepath.Join(filepath.Dir(ferryBin), "home")
	return append(env, "HOME="+home, "FERRY_DIR="+filepath.Join(home, "no-such-ferry-dir"))
})

// runFerry runs `ferry ARGS...` with stdin (nil: none) and returns what it did.
// Only a command that cannot be run or outlives cliTimeout fails the test.
func runFerry(t testing.TB, stdin io.Reader, args ...string) result {
	t.Helper()
	return runFerryWithin(t, cliTimeout, stdin, args...)
}

// runFerryWithin is runFerry for a command that may run up to timeout.
func runFerryWithin(t testing.TB, timeout time.Duration, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.Env = cliEnv()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{Args: args, Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("ferry %s: still running after %s\n%s", strings.Join(args, " "), timeout, r)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("ferry %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ferry runs `ferry --dir DIR ARGS...`.
func ferry(t testing.TB, dir string, args ...string) result {
	t.Helper()
	return runFerry(t, nil, append([]string{"--dir", dir}, args...)...)
}

// mustFerry runs `ferry --dir DIR ARGS...` and fails unless it exits 0.
func mustFerry(t testing.TB, dir string, args ...string) result {
	t.Helper()
	r := ferry(t, dir, args...)
	if r.Code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	return r
}

// eventually calls check every pollEvery until it reports true, failing the
// test with check's last report after waitFor.
func eventually(t testing.TB, what string, check func() (ok bool, last string)) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		ok, last := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s; last attempt:\n%s", what, waitFor, last)
		}
		<-tick.C
	}
}

// initDir runs `ferry --dir ROOT/NAME init ARGS...` and returns the dir.
func initDir(t testing.TB, root, name string, args ...string) string {
	t.Helper()
	dir := filepath.Join(root, name)
	r := mustFerry(t, dir, append([]string{"init"}, args...)...)
	if !strings.Contains(r.Stdout, "initialised "+dir) {
		t.Fatalf("init does not say it initialised %s:\n%s", dir, r)
	}
	return dir
}

// joinDir enrols a new node: `ferry invite` on the running office, then
// `ferry --dir ROOT/NAME init --join TOKEN --name NAME ARGS...`.
func joinDir(t testing.TB, root, name, officeDir string, args ...string) string {
	t.Helper()
	return initDir(t, root, name, append([]string{"--join", invite(t, officeDir, name, "laptop"), "--name", name}, args...)...)
}

// invite issues an invitation on the running office and returns the token.
func invite(t testing.TB, officeDir, name, role string) string {
	t.Helper()
	r := mustFerry(t, officeDir, "invite", "--name", name, "--role", role)
	token := strings.TrimSpace(r.Stdout)
	if !strings.HasPrefix(token, "ferry-invite-1.") || strings.Contains(token, "\n") {
		t.Fatalf("invite does not print one token line:\n%s", r)
	}
	return token
}

// freePort returns a loopback TCP port nobody listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// status runs `ferry status --json` (works with or without a running node).
func status(t testing.TB, dir string) (apijson.Status, result) {
	t.Helper()
	r := ferry(t, dir, "status", "--json")
	var st apijson.Status
	if r.Code == 0 {
		if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
			t.Fatalf("status --json is not a Status: %v\n%s", err, r)
		}
	}
	return st, r
}

func mustStatus(t testing.TB, dir string) apijson.Status {
	t.Helper()
	st, r := status(t, dir)
	if r.Code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	return st
}

// getRecord runs `ferry get COLLECTION ID --json`; ok is false when the
// command failed.
func getRecord(t testing.TB, dir, collection, id string) (rec apijson.Record, raw map[string]any, r result, ok bool) {
	t.Helper()
	r = ferry(t, dir, "get", collection, id, "--json")
	if r.Code != 0 {
		return rec, nil, r, false
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rec); err != nil {
		t.Fatalf("get --json is not a record: %v\n%s", err, r)
	}
	if err := json.Unmarshal([]byte(r.Stdout), &raw); err != nil {
		t.Fatalf("get --json is not an object: %v\n%s", err, r)
	}
	return rec, raw, r, true
}

// waitRecord waits until `get COLLECTION ID --json` on dir shows at least
// the given field values, and no conflict, and returns the record.
func waitRecord(t testing.TB, dir, collection, id string, want map[string]any) apijson.Record {
	t.Helper()
	var got apijson.Record
	eventually(t, fmt.Sprintf("%s shows %s/%s with %v", filepath.Base(dir), collection, id, want), func() (bool, string) {
		rec, raw, r, ok := getRecord(t, dir, collection, id)
		if !ok {
			return false, r.String()
		}
		if _, has := raw["conflicts"]; has {
			return false, r.String()
		}
		if rec.Collection != collection || rec.ID != id {
			return false, r.String()
		}
		for k, v := range want {
			if rec.Fields[k] != v {
				return false, r.String()
			}
		}
		got = rec
		return true, ""
	})
	return got
}

// waitGone waits until `get COLLECTION ID` on dir exits 1 with "not found".
func waitGone(t testing.TB, dir, collection, id string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s no longer has %s/%s", filepath.Base(dir), collection, id), func() (bool, string) {
		r := ferry(t, dir, "get", collection, id)
		return r.Code == 1 && strings.Contains(r.Stderr, "not found"), r.String()
	})
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reader test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// nodeProc is a `ferry node` process.
type nodeProc struct {
	t      testing.TB
	name   string
	dir    string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's answer, set before done closes
}

// spawnNode starts `ferry --dir DIR node --log-level warn` (with env added
// to the CLI's environment) and returns at once. The process is killed at
// the end of the test if it still runs; its output is logged if the test
// failed.
func spawnNode(t testing.TB, dir string, env ...string) *nodeProc {
	t.Helper()
	n := &nodeProc{t: t, name: filepath.Base(dir), dir: dir, done: make(chan struct{})}
	n.cmd = exec.Command(ferryBin, "--dir", dir, "node", "--log-level", "warn")
	n.cmd.Env = append(append([]string{}, cliEnv()...), env...) // cliEnv is shared
	n.cmd.Stdout, n.cmd.Stderr = &n.stdout, &n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start node %s: %v", n.name, err)
	}
	go func() {
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		if !n.exited() {
			_ = n.cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("node %s (pid %d) stdout:\n%s\nnode %s stderr:\n%s", n.name, n.cmd.Process.Pid, n.stdout.String(), n.name, n.stderr.String())
		}
	})
	return n
}

// startNode spawns a node and waits until `status --json` says it runs.
func startNode(t testing.TB, dir string, env ...string) *nodeProc {
	t.Helper()
	n := spawnNode(t, dir, env...)
	// First wait for the banner the node prints once it holds the store:
	// a CLI command run before that opens the store itself and can make
	// the starting node fail with "store is in use by another process"
	// (see TestNodeStartDuringCLI).
	eventually(t, "node "+n.name+" prints its running banner", func() (bool, string) {
		if n.exited() {
			t.Fatalf("node %s exited during start (%v):\nstdout:\n%s\nstderr:\n%s", n.name, n.err, n.stdout.String(), n.stderr.String())
		}
		return strings.Contains(n.stdout.String(), " running\n"), n.stdout.String()
	})
	eventually(t, "node "+n.name+" is running", func() (bool, string) {
		if n.exited() {
			t.Fatalf("node %s exited during start (%v):\nstderr:\n%s", n.name, n.err, n.stderr.String())
		}
		st, r := status(t, dir)
		return r.Code == 0 && st.Running, r.String()
	})
	return n
}

func (n *nodeProc) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and asserts a clean exit (status 0) within stopWithin.
func (n *nodeProc) stop() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		n.t.Fatalf("SIGTERM node %s: %v", n.name, err)
	}
	select {
	case <-n.done:
	case <-time.After(stopWithin):
		n.t.Fatalf("node %s still running %s after SIGTERM; stderr:\n%s", n.name, stopWithin, n.stderr.String())
	}
	if n.err != nil {
		n.t.Fatalf("node %s did not exit cleanly after SIGTERM: %v; stderr:\n%s", n.name, n.err, n.stderr.String())
	}
}

// kill sends SIGKILL (no clean shutdown) and waits for the process to die.
func (n *nodeProc) kill() {
	n.t.Helper()
	if err := n.cmd.Process.Kill(); err != nil {
		n.t.Fatalf("SIGKILL node %s: %v", n.name, err)
	}
	select {
	case <-n.done:
	case <-time.After(stopWithin):
		n.t.Fatalf("node %s still running %s after SIGKILL", n.name, stopWithin)
	}
}

// cluster is an office and two laptops configured to dial it, all running,
// with the reference schema applied on the office and replicated.
type cluster struct {
	officeDir, l1Dir, l2Dir string
	office, l1, l2          *nodeProc
}

func (c *cluster) dirs() []string { return []string{c.officeDir, c.l1Dir, c.l2Dir} }

// stop stops every node with SIGTERM, laptops first, asserting clean exits.
func (c *cluster) stop() {
	c.l1.stop()
	c.l2.stop()
	c.office.stop()
}

// startCluster sets up a cluster the way the quick start does by hand.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	root := t.TempDir()
	port := freePort(t)
	c := &cluster{}
	c.officeDir = initDir(t, root, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	c.office = startNode(t, c.officeDir)
	c.l1Dir = joinDir(t, root, "laptop1", c.officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	c.l2Dir = joinDir(t, root, "laptop2", c.officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	r := mustFerry(t, c.officeDir, "schema", "apply", schemaFile)
	if !strings.HasPrefix(r.Stdout, "schema applied: ") || !strings.Contains(r.Stdout, "contacts.last_name") {
		t.Fatalf("schema apply does not list what it applied:\n%s", r)
	}
	c.l1 = startNode(t, c.l1Dir)
	c.l2 = startNode(t, c.l2Dir)
	for _, d := range []string{c.l1Dir, c.l2Dir} {
		waitSchema(t, d)
	}
	return c
}

// waitSchema waits until dir's node knows the contacts collection.
func waitSchema(t testing.TB, dir string) {
	t.Helper()
	eventually(t, filepath.Base(dir)+" has the schema", func() (bool, string) {
		r := ferry(t, dir, "schema", "show", "--json")
		var sc struct {
			Collections map[string]struct {
				Fields map[string]any `json:"fields"`
			} `json:"collections"`
		}
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &sc) != nil {
			return false, r.String()
		}
		_, ok := sc.Collections["contacts"].Fields["last_name"]
		return ok, r.String()
	})
}

// exportRecords runs `ferry export COLLECTION` and decodes its lines by id.
func exportRecords(t testing.TB, dir, collection string) (map[string]map[string]any, int) {
	t.Helper()
	r := mustFerry(t, dir, "export", collection)
	return decodeLines(t, r.Stdout, r)
}

// decodeLines decodes JSON Lines with an "id" member into a map by id.
func decodeLines(t testing.TB, text string, r result) (map[string]map[string]any, int) {
	t.Helper()
	out := map[string]map[string]any{}
	lines := 0
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if line == "" {
			continue
		}
		lines++
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d is not a JSON object: %v\n%s", lines, err, r)
		}
		id, _ := obj["id"].(string)
		if id == "" {
			t.Fatalf("line %d has no string id: %s", lines, line)
		}
		if _, dup := out[id]; dup {
			t.Fatalf("id %q twice in\n%s", id, r)
		}
		out[id] = obj
	}
	return out, lines
}
