package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// benchRSS: an office node run as the real binary (`ferry node`, its own
// process) gets the crm schema and the contacts through the CLI (`ferry
// import`); its peak RSS (VmHWM) and the size of its data dir are measured.
// Baselines in the same run: the same JSONL imported into raw go-ds-badger
// (datadir.OpenStore, batches committed and synced) by a child process of
// this program, its peak RSS and store size; and the JSONL file's size.
func (e *env) benchRSS(ctx context.Context) (res result, err error) {
	c := e.cfg
	n := c.rssRecords
	values := n * 8

	bin, err := e.ferryBinary(ctx)
	if err != nil {
		return res, err
	}
	jsonlPath := filepath.Join(e.root, "rss-contacts.jsonl")
	if err := os.WriteFile(jsonlPath, e.jsonl(n), 0o600); err != nil {
		return res, err
	}
	jsonlSize, err := fileSize(jsonlPath)
	if err != nil {
		return res, err
	}
	schemaPath := filepath.Join(e.root, "rss-schema.yaml")
	if err := os.WriteFile(schemaPath, e.schema, 0o600); err != nil {
		return res, err
	}
	dir := filepath.Join(e.root, "rss-office")
	logPath := filepath.Join(e.root, "rss-office.log")
	ferry := ferryCLI(ctx, bin, dir)

	e.progress("rss: ferry init --office, ferry node, ferry schema apply, ferry import of %d contacts (%s JSONL)", n, fmtBytes(jsonlSize))
	if _, err := ferry("init", "--office", "--listen", "/ip4/127.0.0.1/tcp/0", "--topic", e.topic, "--name", "rss-office"); err != nil {
		return res, err
	}
	p, err := startFerryNode(ctx, bin, dir, logPath)
	if err != nil {
		return res, err
	}
	defer p.kill()
	if _, err := ferry("schema", "apply", schemaPath); err != nil {
		return res, err
	}
	idle, err := procStatus(p.pid())
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	out, err := ferry("import", "--quiet", "contacts", jsonlPath)
	importTook := time.Since(t0)
	if err != nil {
		return res, err
	}
	e.progress("rss: %s in %s", strings.TrimSpace(out), fmtDur(importTook))
	// Let the node settle (its digest is up to date) before reading its
	// peak: anything it does after an import counts.
	if err := waitFor(ctx, 5*time.Minute, func() bool { st, err := p.status(ctx); return err == nil && st.Digest != "" }); err != nil {
		return res, fmt.Errorf("node digest after the import: %w", err)
	}
	st, err := p.status(ctx)
	if err != nil {
		return res, err
	}
	peak, err := procStatus(p.pid())
	if err != nil {
		return res, err
	}
	e.progress("rss: node peak RSS %s (VmHWM), %s once its digest was up to date (VmRSS); steady RSS from %s after the import", fmtBytes(peak.hwm), fmtBytes(peak.rss), fmtDur(c.rssSteadyAfter))
	steady, err := steadyRSS(ctx, p.pid(), t0.Add(importTook).Add(c.rssSteadyAfter), c.rssSteadySamples)
	if err != nil {
		return res, err
	}
	after, err := procStatus(p.pid())
	if err != nil {
		return res, err
	}
	if _, err := p.stop(2 * time.Minute); err != nil {
		return res, err
	}
	e.progress("rss: node steady RSS %s (median of %s)", fmtBytes(steady.median), steady)
	disk, err := dirSize(dir)
	if err != nil {
		return res, err
	}
	storeDisk, err := dirSize(filepath.Join(dir, "store"))
	if err != nil {
		return res, err
	}
	e.progress("rss: data dir %s in %d files (%s allocated)", fmtBytes(disk.bytes), disk.files, fmtBytes(disk.alloc))

	// A restart on the same data: the node builds its first digest (it
	// reads the whole store).
	e.progress("rss: ferry node restarted on the same data")
	t0 = time.Now()
	p, err = startFerryNode(ctx, bin, dir, logPath)
	if err != nil {
		return res, err
	}
	defer p.kill()
	if err := waitFor(ctx, 5*time.Minute, func() bool { st, err := p.status(ctx); return err == nil && st.Digest != "" }); err != nil {
		return res, fmt.Errorf("restarted node digest: %w", err)
	}
	restartTook := time.Since(t0)
	st2, err := p.status(ctx)
	if err != nil {
		return res, err
	}
	if st2.Digest != st.Digest {
		return res, fmt.Errorf("restarted node digest %s, before the restart %s", st2.Digest, st.Digest)
	}
	restart, err := procStatus(p.pid())
	if err != nil {
		return res, err
	}
	if _, err := p.stop(2 * time.Minute); err != nil {
		return res, err
	}
	e.progress("rss: restarted node: digest after %s, peak RSS %s", fmtDur(restartTook), fmtBytes(restart.hwm))

	// Baseline: raw go-ds-badger in a child process.
	e.progress("rss: baseline, the same JSONL into raw go-ds-badger batches in a child process")
	base, err := e.childBadgerImport(ctx, jsonlPath, filepath.Join(e.root, "rss-badger"))
	if err != nil {
		return res, err
	}
	if base.Values != values {
		return res, fmt.Errorf("baseline wrote %d values, want %d", base.Values, values)
	}
	baseDisk, err := dirSize(filepath.Join(e.root, "rss-badger"))
	if err != nil {
		return res, err
	}
	e.progress("rss: baseline peak RSS %s, steady RSS %s, store %s (%s allocated)", fmtBytes(base.VmHWM), fmtBytes(base.Steady.median), fmtBytes(baseDisk.bytes), fmtBytes(baseDisk.alloc))

	what := fmt.Sprintf("%d field values (%d contacts × 8)", values, n)
	xJSONL := func(b int64) string { return fmt.Sprintf("%.1f× the JSONL", float64(b)/float64(jsonlSize)) }
	return result{
		rows: []row{
			{"office node holding " + what + ": peak RSS of the node process (VmHWM, `ferry node` during `ferry import`)",
				fmtBytes(peak.hwm),
				fmtBytes(base.VmHWM) + " (raw go-ds-badger batched import of the same JSONL, child process)",
				fmtRatio(float64(peak.hwm), float64(base.VmHWM))},
			{fmt.Sprintf("office node holding %s: steady RSS after the import (VmRSS, median of %d samples 1 s apart from %s after `ferry import` returned)", what, c.rssSteadySamples, fmtDur(c.rssSteadyAfter)),
				fmtBytes(steady.median),
				fmtBytes(base.Steady.median) + " (raw go-ds-badger child, store still open, sampled the same way)",
				fmtRatio(float64(steady.median), float64(base.Steady.median))},
			{"office node, disk size of the data dir vs the JSONL file",
				fmt.Sprintf("%s (%s allocated)", fmtBytes(disk.bytes), fmtBytes(disk.alloc)),
				fmtBytes(jsonlSize) + " (JSONL, one contact per line)",
				fmtRatio(float64(disk.bytes), float64(jsonlSize))},
			{"office node, disk size vs raw go-ds-badger holding the same key/values",
				fmt.Sprintf("%s (%s)", fmtBytes(disk.bytes), xJSONL(disk.bytes)),
				fmt.Sprintf("%s (%s; %s allocated)", fmtBytes(baseDisk.bytes), xJSONL(baseDisk.bytes), fmtBytes(baseDisk.alloc)),
				fmtRatio(float64(disk.bytes), float64(baseDisk.bytes))},
		},
		notes: []string{
			fmt.Sprintf("RSS and disk: the real binary (`go build -o <tmp>/ferry ./cmd/ferry`), as a user would run it: `ferry --dir D init --office --listen /ip4/127.0.0.1/tcp/0` (so a secured network, signed operations, whatever --network), `ferry --dir D node` in the background (its own process), `ferry schema apply crm.yaml`, `ferry import --quiet contacts FILE.jsonl` with %d contacts (%s; the import took %s, %s, through the node's local API), then once the node's digest is up to date its VmHWM is read from /proc/<pid>/status. "+
				"The node's RSS was %s before the import (schema applied) and %s once its digest was up to date (VmRSS). "+
				"Steady RSS: VmRSS of the idle node (no peers, nothing written) read %d times 1 s apart, starting %s after `ferry import` returned, median: %s (samples %s); its VmHWM was still %s after them. Not rusage's maxrss: on Linux a child started by Go's os/exec (clone with CLONE_VM, then exec) inherits the parent's peak RSS in it, so it read this program's own peak. "+
				"Disk: the stopped node's data dir walked, apparent file sizes summed (%d files; the badger store alone %s), and allocated blocks (st_blocks × 512) beside it.",
				n, fmtBytes(jsonlSize), fmtDur(importTook), fmtRate(rate(n, importTook), "records/s"), fmtBytes(idle.rss), fmtBytes(peak.rss),
				c.rssSteadySamples, fmtDur(c.rssSteadyAfter), fmtBytes(steady.median), steady, fmtBytes(after.hwm), disk.files, fmtBytes(storeDisk.bytes)),
			fmt.Sprintf("RSS baseline: a child process of this program reads the same JSONL file (apijson.ReadLines, as the node's import endpoint does), writes its %d values as keys /contacts/<id>/<field> = JSON into go-ds-badger opened by datadir.OpenStore, in batches of %d keys, each committed then synced (%s); with the store still open and the parsed file no longer referenced, it samples its VmRSS like the node's steady RSS (median %s, samples %s), then closes the store, reads its own VmHWM and exits. So both processes hold the parsed file and badger with the same options; the node also runs libp2p, GossipSub, go-ds-crdt and the digest. Disk baseline: that raw store's files, the same way as Ferry's, and the JSONL file.",
				base.Values, c.baselineBatch, fmtDur(time.Duration(base.TookNS)), fmtBytes(base.Steady.median), base.Steady),
			fmt.Sprintf("Restart (info): the same node restarted on its data dir built its first digest (it reads the whole store) %s after the process started; its peak RSS by then was %s (VmHWM).",
				fmtDur(restartTook), fmtBytes(restart.hwm)),
		},
	}, nil
}

// ferryBinary builds ./cmd/ferry into the temp dir (once).
func (e *env) ferryBinary(ctx context.Context) (string, error) {
	bin := filepath.Join(e.root, "ferry")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: %q, %v: run from the repository", mod, err)
	}
	e.progress("building %s from ./cmd/ferry", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/ferry")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ferry: %w: %s", err, out)
	}
	return bin, nil
}

// ferryProc is a `ferry node` process.
type ferryProc struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	http *http.Client
	log  *os.File
}

// startFerryNode runs `ferry --dir dir node` (output appended to logPath)
// and waits until its API socket answers.
func startFerryNode(ctx context.Context, bin, dir, logPath string) (*ferryProc, error) {
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--dir", dir, "node", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	sock := filepath.Join(dir, datadir.SocketFile)
	p := &ferryProc{cmd: cmd, dir: dir, done: make(chan struct{}), log: lf,
		http: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := p.status(ctx); err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			lf.Close()
			return nil, fmt.Errorf("ferry node exited at start (%s): see %s", cmd.ProcessState, logPath)
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("ferry node: no API after a minute: see %s", logPath)
		}
	}
}

func (p *ferryProc) pid() int { return p.cmd.Process.Pid }

// status is GET /v1/status on the node's socket.
func (p *ferryProc) status(ctx context.Context) (apijson.Status, error) {
	var st apijson.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ferry/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status: HTTP %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// stop sends SIGINT and waits for a clean exit.
func (p *ferryProc) stop(timeout time.Duration) (*os.ProcessState, error) {
	defer p.log.Close()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		return nil, fmt.Errorf("ferry node did not stop within %s", timeout)
	}
	if !p.cmd.ProcessState.Success() {
		return p.cmd.ProcessState, fmt.Errorf("ferry node exited: %s", p.cmd.ProcessState)
	}
	return p.cmd.ProcessState, nil
}

// kill kills the process if it still runs (deferred on every path).
func (p *ferryProc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = p.log.Close()
}

// memory is what /proc/<pid>/status says of a process's memory.
type memory struct{ hwm, rss int64 } // bytes

// procStatus reads VmHWM and VmRSS of pid (0: this process).
func procStatus(pid int) (memory, error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmHWM" && k != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return m, fmt.Errorf("%s: %s: %w", path, sc.Text(), err)
		}
		if k == "VmHWM" {
			m.hwm = kb << 10
		} else {
			m.rss = kb << 10
		}
	}
	if m.hwm == 0 {
		return m, fmt.Errorf("%s: no VmHWM", path)
	}
	return m, sc.Err()
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// childBadgerImport is the argument that makes this program the baseline's
// child process: child-badger-import FILE DIR BATCH STEADY_AFTER SAMPLES.
const childBadgerImport = "child-badger-import"

// childResult is what the child prints.
type childResult struct {
	Values, Batches int
	TookNS          int64
	VmHWM           int64 // bytes
	// Steady is VmRSS sampled after the import, the store still open.
	Steady rssSamples
}

// childBadgerImport runs this program as the baseline's child process.
func (e *env) childBadgerImport(ctx context.Context, file, dir string) (childResult, error) {
	var r childResult
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	cmd := exec.CommandContext(ctx, exe, childBadgerImport, file, dir, strconv.Itoa(e.cfg.baselineBatch),
		e.cfg.rssSteadyAfter.String(), strconv.Itoa(e.cfg.rssSteadySamples))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("baseline child: %w", err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("baseline child: %q: %w", out, err)
	}
	if r.VmHWM == 0 {
		return r, errors.New("baseline child: no VmHWM")
	}
	return r, nil
}

// runChildBadgerImport is the child: it imports FILE (JSON Lines) into raw
// go-ds-badger in DIR and prints a childResult.
func runChildBadgerImport(args []string) error {
	if len(args) != 5 {
		return fmt.Errorf("want FILE DIR BATCH STEADY_AFTER SAMPLES, got %q", args)
	}
	batch, err := strconv.Atoi(args[2])
	if err != nil || batch <= 0 {
		return fmt.Errorf("batch %q", args[2])
	}
	steadyAfter, err := time.ParseDuration(args[3])
	if err != nil {
		return fmt.Errorf("steady after %q: %w", args[3], err)
	}
	samples, err := strconv.Atoi(args[4])
	if err != nil || samples <= 0 {
		return fmt.Errorf("samples %q", args[4])
	}
	ctx := context.Background()
	t0 := time.Now()
	d, err := datadir.OpenStore(args[1])
	if err != nil {
		return err
	}
	// The parsed file is only referenced inside load, so it is garbage
	// once the import is written, as the node's is.
	load := func() (values, batches int, err error) {
		f, err := os.Open(args[0])
		if err != nil {
			return 0, 0, err
		}
		recs, err := apijson.ReadLines(f)
		f.Close()
		if err != nil {
			return 0, 0, err
		}
		return writeRecords(ctx, d, recs, batch)
	}
	values, batches, err := load()
	took := time.Since(t0)
	var steady rssSamples
	if err == nil {
		steady, err = steadyRSS(ctx, 0, time.Now().Add(steadyAfter), samples)
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	m, err := procStatus(0)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(childResult{Values: values, Batches: batches, TookNS: int64(took), VmHWM: m.hwm, Steady: steady})
}

// rssSamples are VmRSS readings of a process, 1 s apart, and their median.
type rssSamples struct {
	Samples []int64 // bytes, in the order read
	median  int64
}

func (r rssSamples) String() string {
	parts := make([]string, len(r.Samples))
	for i, x := range r.Samples {
		parts[i] = fmtBytes(x)
	}
	return strings.Join(parts, ", ")
}

// UnmarshalJSON recomputes the median (the child sends the samples).
func (r *rssSamples) UnmarshalJSON(b []byte) error {
	var x struct{ Samples []int64 }
	if err := json.Unmarshal(b, &x); err != nil {
		return err
	}
	*r = newRSSSamples(x.Samples)
	return nil
}

func newRSSSamples(xs []int64) rssSamples {
	s := slices.Clone(xs)
	slices.Sort(s)
	var m int64
	switch {
	case len(s) == 0:
	case len(s)%2 == 1:
		m = s[len(s)/2]
	default:
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return rssSamples{Samples: xs, median: m}
}

// steadyRSS waits until from, then reads VmRSS of pid (0: this process) n
// times, 1 s apart.
func steadyRSS(ctx context.Context, pid int, from time.Time, n int) (rssSamples, error) {
	xs := make([]int64, 0, n)
	next := from
	for range n {
		select {
		case <-ctx.Done():
			return rssSamples{}, ctx.Err()
		case <-time.After(time.Until(next)):
		}
		m, err := procStatus(pid)
		if err != nil {
			return rssSamples{}, err
		}
		xs = append(xs, m.rss)
		next = next.Add(time.Second)
	}
	return newRSSSamples(xs), nil
}
