//go:build linux

package main

// End-to-end tests of CLI commands run while a node starts or stops, over a
// store of 50,000 records: a CLI command never makes the node fail, and the
// command itself succeeds (it waits for the starting node, or for the lock
// the node or another command holds) or fails with a clear error, never
// hangs. Linux only: that a starting node is waiting for the store's lock
// is seen with inotify (badger opens the store's directory to lock it).

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

const (
	// bigN contacts, c00000..c49999; stage cycles over the four values,
	// so bigN/4 are won.
	bigN   = 50000
	bigWon = bigN / 4
	// importWithin bounds the import of the big store (3,000-4,000
	// records/s on 2 cores).
	importWithin = 5 * time.Minute
	// startWithin bounds a node's start over the big store, a wait for a
	// CLI command that holds the store included (storeLockWait is 2 min).
	startWithin = 2 * time.Minute
	// longCLI bounds a CLI command over the whole big store.
	longCLI = 3 * time.Minute
)

var bigStages = []string{"lead", "qualified", "won", "lost"}

// TestStartupWithCLI runs CLI commands against a data dir of 50,000
// contacts while its node starts and stops:
//   - a node started while `ferry list` holds the store (no node ran, so
//     the list opened it in-process) waits for the lock and starts, and the
//     list gives every record;
//   - commands fired in a loop while the node starts (store opening, then
//     the first digest building) all succeed, the node keeps running and
//     the edits are there afterwards;
//   - commands fired while the node stops, and at once after it stopped,
//     work; the node exits cleanly.
func TestStartupWithCLI(t *testing.T) {
	e2e(t)
	dir := bigStore(t)
	ed := &edits{m: map[string]string{}}

	if !t.Run("NodeStartsWhileListHoldsStore", func(t *testing.T) {
		n := nodeStartsDuringList(t, dir)
		stopWhileUsed(t, n, dir, ed)
	}) {
		return
	}
	// Round 0: the node is spawned first, the commands right after it.
	// Round 1: the commands run first, and the node is spawned while one
	// of them holds the store in-process.
	for round := range 2 {
		if !t.Run(fmt.Sprintf("CommandsWhileNodeStarts/%d", round), func(t *testing.T) {
			n := commandsDuringStart(t, dir, ed, round, round > 0)
			stopWhileUsed(t, n, dir, ed)
		}) {
			return
		}
	}
	// Every edit is there with no node running (export opens the store
	// in-process), and nothing else changed.
	got, lines := exportRecords(t, dir, "contacts")
	if lines != bigN || len(got) != bigN {
		t.Fatalf("export gave %d lines, %d ids; want %d", lines, len(got), bigN)
	}
	ed.mu.Lock()
	defer ed.mu.Unlock()
	if len(ed.m) == 0 {
		t.Fatal("no edit was made")
	}
	bad := 0
	for i := range bigN {
		id := bigID(i)
		want := fmt.Sprintf("F%d", i)
		if v, ok := ed.m[id]; ok {
			want = v
		}
		if rec := got[id]; rec == nil || rec["first_name"] != want || rec["stage"] != bigStages[i%4] {
			if bad++; bad <= 10 {
				t.Errorf("%s after every round: %v, want first_name %q, stage %q", id, rec, want, bigStages[i%4])
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d records differ in all", bad)
	}
	t.Logf("%d edits made while the node started or stopped, all exported", len(ed.m))
}

func bigID(i int) string { return fmt.Sprintf("c%05d", i) }

// bigStore returns a data dir (no network peers, no node running) holding
// bigN contacts, imported with one `ferry import`.
func bigStore(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	dir := initDir(t, root, "big", "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, dir, "schema", "apply", schemaFile)
	var b bytes.Buffer
	for i := range bigN {
		fmt.Fprintf(&b, `{"id":%q,"first_name":"F%d","last_name":"L%d","stage":%q,"amount":%d}`+"\n", bigID(i), i, i%100, bigStages[i%4], i)
	}
	file := filepath.Join(root, "contacts.jsonl")
	if err := os.WriteFile(file, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := runFerryWithin(t, importWithin, nil, "--dir", dir, "import", "-q", "contacts", file)
	want := fmt.Sprintf("imported %d records into contacts: %d written", bigN, bigN)
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, want) {
		t.Fatalf("import of %d contacts: want %q:\n%s", bigN, want, r)
	}
	t.Logf("store of %d contacts imported in %s", bigN, time.Since(start).Round(time.Millisecond))
	return dir
}

// nodeStartsDuringList: `ferry list` holds the store (opened in-process),
// blocked on its full stdout pipe; a node is spawned and retries the lock;
// the list is let go and gives every record; the node starts.
func nodeStartsDuringList(t *testing.T, dir string) *nodeProc {
	ctx, cancel := context.WithTimeout(context.Background(), longCLI)
	defer cancel()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	args := []string{"--dir", dir, "list", "contacts", "--json"}
	list := exec.CommandContext(ctx, ferryBin, args...)
	list.Env = cliEnv()
	var stderr syncBuffer
	list.Stdout, list.Stderr = pw, &stderr
	if err := list.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	listDone := make(chan error, 1)
	go func() { listDone <- list.Wait() }()
	defer func() { // a failure below must not leave the list blocked
		_ = list.Process.Kill()
		<-listDone
	}()
	listExited := func() bool { return len(listDone) > 0 }

	// The list holds the store: it opened it and marked it open with its
	// pid. Nobody reads its output, so it blocks and keeps holding it.
	eventually(t, "the list holds the store", func() (bool, string) {
		if listExited() {
			t.Fatalf("the list exited before it was read; stderr:\n%s", stderr.String())
		}
		pid, _ := markerPID(dir)
		return pid == list.Process.Pid, fmt.Sprintf("store marked open by pid %d, list is %d", pid, list.Process.Pid)
	})
	if d, err := datadir.OpenStore(dir); !errors.Is(err, datadir.ErrLocked) {
		if err == nil {
			d.Close()
		}
		t.Fatalf("the store opens beside the list that holds it: %v", err)
	}

	// The node is spawned and tries the lock again and again: two opens
	// of the store's directory (badger opens it to lock it) mean a first
	// attempt failed and the node retried rather than exiting.
	opens := watchDirOpens(t, filepath.Join(dir, datadir.StoreDir))
	n := spawnNode(t, dir)
	eventually(t, "the node retries the store's lock", func() (bool, string) {
		if n.exited() {
			t.Fatalf("the node exited while the list held the store (%v):\nstderr:\n%s", n.err, n.stderr.String())
		}
		c := opens.count(t)
		return c >= 2, fmt.Sprintf("%d opens of the store directory", c)
	})
	if _, err := api.Dial(dir); err == nil {
		t.Fatal("a node answers on the socket while the list holds the store")
	}
	if strings.Contains(n.stdout.String(), " running\n") {
		t.Fatalf("the node says it runs while the list holds the store:\n%s", n.stdout.String())
	}

	// Let the list go: it gives every record, then the node starts.
	start := time.Now()
	out, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	var waitErr error
	select {
	case waitErr = <-listDone:
		listDone <- waitErr // for the deferred kill
	case <-ctx.Done():
		t.Fatalf("the list still runs after %s; stderr:\n%s", longCLI, stderr.String())
	}
	r := result{Args: args, Stdout: fmt.Sprintf("(%d bytes)", len(out)), Stderr: stderr.String()}
	if waitErr != nil {
		t.Fatalf("the list failed (%v) after a node was started beside it:\n%s", waitErr, r)
	}
	got, lines := decodeLines(t, string(out), r)
	if lines != bigN || len(got) != bigN {
		t.Fatalf("the list gave %d lines, %d ids; want %d", lines, len(got), bigN)
	}
	for i := range bigN {
		rec := got[bigID(i)]
		fields, _ := rec["fields"].(map[string]any)
		if fields == nil || fields["first_name"] != fmt.Sprintf("F%d", i) {
			t.Fatalf("the list gave %s as %v", bigID(i), rec)
		}
	}
	t.Logf("the list gave %d records %s after it was let go", bigN, time.Since(start).Round(time.Millisecond))

	waitRunning(t, n, dir, start)
	return n
}

// commandsDuringStart spawns the node and fires CLI commands in a loop from
// two workers (and `ferry status` from the test) until the node answers
// with its first digest built and each worker went through its whole
// cycle at least once. commandsFirst: the workers start first and the node
// is spawned once one of them holds the store in-process.
func commandsDuringStart(t *testing.T, dir string, ed *edits, round int, commandsFirst bool) *nodeProc {
	var (
		n       *nodeProc
		stop    = make(chan struct{})
		stopped sync.Once
		wg      sync.WaitGroup
		tally   tally
	)
	halt := func() {
		stopped.Do(func() { close(stop) })
		wg.Wait()
	}
	defer halt() // also on t.Fatal: no worker outlives the test
	if !commandsFirst {
		n = spawnNode(t, dir)
	}
	start := time.Now()
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			startWorker(t, dir, ed, &tally, w, stop)
		}()
	}
	if commandsFirst {
		eventually(t, "a command holds the store in-process", func() (bool, string) {
			pid, err := markerPID(dir)
			return pid > 0, fmt.Sprintf("store marker: pid %d, %v", pid, err)
		})
		n = spawnNode(t, dir)
		start = time.Now()
	}

	// The test asks for the status too (less often than eventually: the
	// node and the workers share the CPU), until the node answers with its
	// first digest built.
	deadline := time.Now().Add(startWithin)
	tick := time.NewTicker(4 * pollEvery)
	defer tick.Stop()
	for {
		if n.exited() {
			t.Fatalf("the node exited while CLI commands ran (%v):\nstderr:\n%s", n.err, n.stderr.String())
		}
		phase := tally.phase.Load()
		began := time.Now()
		st, r := status(t, dir)
		tally.add(fired{result: r, took: time.Since(began)}, phase, st.Running)
		if r.Code != 0 {
			t.Errorf("status while the node starts:\n%s", r)
		}
		switch {
		case st.Running && st.Digest != "":
			tally.phase.Store(phaseUp)
		case st.Running:
			tally.phase.Store(phaseDigest)
		}
		if st.Running && st.Digest != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node does not answer with its digest %s after it was spawned; last status:\n%s", startWithin, r)
		}
		<-tick.C
	}
	running := time.Since(start)
	halt()
	if n.exited() {
		t.Fatalf("the node exited while CLI commands ran (%v):\nstderr:\n%s", n.err, n.stderr.String())
	}
	if !strings.Contains(n.stdout.String(), " running\n") {
		t.Errorf("the node answers but did not print its banner:\n%s", n.stdout.String())
	}
	if pid, err := markerPID(dir); pid != n.cmd.Process.Pid {
		t.Errorf("the running node's store is marked open by pid %d (%v), the node is %d", pid, err, n.cmd.Process.Pid)
	}
	t.Logf("round %d: node answering with its digest %s after it was spawned; %s",
		round, running.Round(time.Millisecond), tally.String())

	// The edits made so far, through the running node.
	for id, v := range ed.snapshot() {
		rec, _, r, ok := getRecord(t, dir, "contacts", id)
		if !ok || rec.Fields["first_name"] != v {
			t.Errorf("%s after round %d: want first_name %q:\n%s", id, round, v, r)
		}
	}
	return n
}

// startWorker fires status, get, put and list --where in turn (worker 1
// starts half-way through the cycle) until stop, and at least once each.
// It runs outside the test goroutine: it reports with t.Errorf only.
func startWorker(t *testing.T, dir string, ed *edits, tl *tally, w int, stop <-chan struct{}) {
	for i := 0; ; i++ {
		if i >= 4 {
			select {
			case <-stop:
				return
			default:
			}
		}
		var f fired
		phase := tl.phase.Load()
		switch (i + 2*w) % 4 {
		case 0:
			f = fire(dir, "status", "--json")
			var st apijson.Status
			if f.ok(t) && json.Unmarshal([]byte(f.Stdout), &st) != nil {
				t.Errorf("status --json is not a Status:\n%s", f)
			}
			tl.add(f, phase, st.Running)
		case 1:
			id, want := ed.pick()
			f = fire(dir, "get", "contacts", id, "--json")
			var rec apijson.Record
			if f.ok(t) {
				if err := json.Unmarshal([]byte(f.Stdout), &rec); err != nil || rec.ID != id || rec.Fields["first_name"] != want {
					t.Errorf("get %s: want first_name %q:\n%s", id, want, f)
				}
			}
			tl.add(f, phase, false)
		case 2:
			id, v := ed.next()
			f = fire(dir, "put", "contacts", id, "first_name="+v)
			if f.ok(t) {
				if want := "updated contacts/" + id + " (first_name)\n"; f.Stdout != want {
					t.Errorf("put printed %q, want %q:\n%s", f.Stdout, want, f)
				} else {
					ed.done(id, v)
				}
			}
			tl.add(f, phase, false)
		case 3:
			f = fire(dir, "list", "contacts", "--where", "stage=won")
			if f.ok(t) {
				if got := strings.Count(f.Stdout, "\n"); got != bigWon {
					t.Errorf("list --where stage=won gave %d lines, want %d:\n%s", got, bigWon, f.Stderr)
				}
			}
			tl.add(f, phase, false)
		}
	}
}

// stopWhileUsed stops the running node with SIGTERM while a worker fires
// `get` and `status`, asserts a clean exit, then runs commands at once.
func stopWhileUsed(t *testing.T, n *nodeProc, dir string, ed *edits) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var during tally
	var clearErrors atomic.Int32
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var f fired
			if i%2 == 0 {
				id, want := ed.pick()
				f = fire(dir, "get", "contacts", id, "--json")
				var rec apijson.Record
				if f.err == nil && f.Code == 0 && (json.Unmarshal([]byte(f.Stdout), &rec) != nil || rec.Fields["first_name"] != want) {
					t.Errorf("get %s while the node stops: want first_name %q:\n%s", id, want, f)
				}
			} else {
				f = fire(dir, "status")
			}
			during.add(f, phaseUp, false)
			// A command that met the node as it closed its socket may
			// fail, saying so; it must not hang, crash or fail otherwise.
			switch {
			case f.err != nil:
				t.Errorf("while the node stops: %v\n%s", f.err, f)
			case f.Code == 0:
			case f.Code == 1 && f.Stderr != "" && !strings.Contains(f.Stderr, "panic"):
				clearErrors.Add(1)
				t.Logf("while the node stops, a command failed with a message:\n%s", f)
			default:
				t.Errorf("while the node stops:\n%s", f)
			}
		}
	}()
	// The worker's first command is under way before the signal.
	eventually(t, "a command runs before the stop", func() (bool, string) { return during.total() > 0, "" })
	start := time.Now()
	n.stop()
	took := time.Since(start)
	close(stop)
	wg.Wait()
	// The node ran as if alone: it found the store closed cleanly by the
	// commands before it, and logged no error.
	for _, bad := range []string{"level=ERROR", "not closed cleanly"} {
		if strings.Contains(n.stderr.String(), bad) {
			t.Errorf("the node logged %q:\n%s", bad, n.stderr.String())
		}
	}

	// At once after the stop: the store opens in-process.
	id, want := ed.pick()
	rec, _, r, ok := getRecord(t, dir, "contacts", id)
	if !ok || rec.Fields["first_name"] != want {
		t.Errorf("get %s at once after the node stopped: want first_name %q:\n%s", id, want, r)
	}
	if st := mustStatus(t, dir); st.Running {
		t.Errorf("status after the node stopped says it runs")
	}
	if _, err := os.Stat(filepath.Join(dir, datadir.OpenMarkerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the store is still marked open after the node and the commands closed it: %v", err)
	}
	t.Logf("node stopped cleanly in %s; commands fired around the stop: %v (%d failed saying why)", took.Round(time.Millisecond), during.byPhase[phaseUp], clearErrors.Load())
}

// waitRunning waits until status says the node runs, failing if it exits.
func waitRunning(t *testing.T, n *nodeProc, dir string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(startWithin)
	for {
		if n.exited() {
			t.Fatalf("the node exited during start (%v):\nstderr:\n%s", n.err, n.stderr.String())
		}
		st, r := status(t, dir)
		if r.Code != 0 {
			t.Fatalf("status while the node starts:\n%s", r)
		}
		if st.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node does not run %s after it got the store; last status:\n%s", startWithin, r)
		}
		time.Sleep(pollEvery)
	}
	if !strings.Contains(n.stdout.String(), " running\n") {
		t.Errorf("the node answers but did not print its banner:\n%s", n.stdout.String())
	}
	t.Logf("node running %s after the store was let go", time.Since(since).Round(time.Millisecond))
}

// markerPID is the pid in the store's open marker (0 without a marker).
func markerPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, datadir.OpenMarkerFile))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// edits are the puts made by the workers: distinct ids, each edited once.
type edits struct {
	mu   sync.Mutex
	k    int
	m    map[string]string
	last string
}

// next is a new id to edit and its value.
func (e *edits) next() (id, value string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.k++
	return bigID(e.k * 7919 % bigN), fmt.Sprintf("edit-%d", e.k)
}

// done records an acknowledged put.
func (e *edits) done(id, value string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[id], e.last = value, id
}

// pick is the last edited id (c00001 before any edit) and its first_name.
func (e *edits) pick() (id, firstName string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.last == "" {
		return bigID(1), "F1"
	}
	return e.last, e.m[e.last]
}

func (e *edits) snapshot() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]string, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

// tally counts the commands of a phase of the node's life: by the
// node's state when each started, and by verb.
type tally struct {
	phase atomic.Int32 // the node's state now, set by the test goroutine

	mu      sync.Mutex
	n       int
	byPhase [len(phaseNames)]map[string]int
	byNode  int // statuses answered by the running node (not in-process)
	slowest fired
}

// The node's states while it starts, as the test sees them.
const (
	phaseNoAnswer = iota // not answering on its socket (yet)
	phaseDigest          // answering, first digest pending
	phaseUp              // answering, digest built
)

var phaseNames = [...]string{"before the node answered", "while its first digest was pending", "after"}

func (tl *tally) add(f fired, phase int32, byNode bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.byPhase[phase] == nil {
		tl.byPhase[phase] = map[string]int{}
	}
	verb := "?"
	if len(f.Args) > 2 {
		verb = f.Args[2]
	}
	tl.byPhase[phase][verb]++
	tl.n++
	if byNode {
		tl.byNode++
	}
	if f.took > tl.slowest.took {
		tl.slowest = f
	}
}

func (tl *tally) total() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.n
}

func (tl *tally) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%d commands (%d statuses answered by the node)", tl.n, tl.byNode)
	for p, m := range tl.byPhase {
		if m != nil {
			fmt.Fprintf(&b, "; %s: %v", phaseNames[p], m)
		}
	}
	if tl.slowest.took > 0 {
		fmt.Fprintf(&b, "; slowest: %s in %s", strings.Join(tl.slowest.Args[2:], " "), tl.slowest.took.Round(time.Millisecond))
	}
	return b.String()
}

// fired is a CLI command run by fire.
type fired struct {
	result
	err  error // not run, or still running after cliTimeout
	took time.Duration
}

func (f fired) String() string {
	s := fmt.Sprintf("(took %s)\n%s", f.took.Round(time.Millisecond), f.result)
	if f.err != nil {
		s = f.err.Error() + " " + s
	}
	return s
}

// ok reports a command that exited 0, and reports any other outcome with
// t.Errorf (safe outside the test goroutine), naming "store is in use".
func (f fired) ok(t *testing.T) bool {
	switch {
	case f.err != nil:
		t.Errorf("%v:\n%s", f.err, f)
	case f.Code != 0 && strings.Contains(f.Stderr, datadir.ErrLocked.Error()):
		t.Errorf("a command failed with %q while the node started, rather than waiting for it:\n%s", datadir.ErrLocked, f)
	case f.Code != 0:
		t.Errorf("a command failed while the node started:\n%s", f)
	default:
		return true
	}
	return false
}

// fire runs `ferry --dir DIR ARGS...` like ferry, but never fails the test
// itself: it may run outside the test goroutine.
func fire(dir string, args ...string) fired {
	args = append([]string{"--dir", dir}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.Env = cliEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	f := fired{result: result{Args: args, Stdout: stdout.String(), Stderr: stderr.String()}, took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		f.err, f.Code = fmt.Errorf("still running after %s", cliTimeout), -1
	case errors.As(err, &ee):
		f.Code = ee.ExitCode()
	case err != nil:
		f.err, f.Code = err, -1
	}
	return f
}

// dirOpens counts the opens of a directory itself (not of the files in
// it), seen with inotify.
type dirOpens struct {
	fd int
	n  int
}

func watchDirOpens(t *testing.T, dir string) *dirOpens {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_OPEN); err != nil {
		t.Fatalf("inotify watch of %s: %v", dir, err)
	}
	return &dirOpens{fd: fd}
}

// count reads the events queued so far and returns the opens seen.
func (d *dirOpens) count(t *testing.T) int {
	t.Helper()
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(d.fd, buf)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			return d.n
		case err != nil:
			t.Fatalf("read inotify events: %v", err)
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			if mask&syscall.IN_OPEN != 0 && nameLen == 0 {
				d.n++
			}
			off += syscall.SizeofInotifyEvent + nameLen
		}
	}
}
