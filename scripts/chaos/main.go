// Command chaos is a seeded fault harness for Ferry. For each schedule it
// starts real `ferry node` processes on loopback (an office and laptops),
// drives random edits through the CLI (puts, often of the same record and
// field on different nodes, deletes, imports, conflict resolutions) while
// injecting faults (partitions with offline/online, kill -9 at random
// moments including mid-import and mid-sync, restarts, clock skew through
// FERRY_CLOCK_OFFSET, full disks through FERRY_FAULT_DISK_FULL,
// compactions), with contacts routed into channels that the office grants
// and ungrants laptops while records move between them, then heals
// everything and checks that the nodes converge (every channel on every
// node that holds it), that no acknowledged write was lost, that no write
// refused on a full disk or into a channel not granted shows anywhere,
// that a laptop holds nothing of a channel it is not granted, that no node
// died on its own, that every node lists the same conflicts, and that the
// office's workflow delivered every matching acknowledged change, none
// twice unless the office was killed during its action. See
// docs/chaos.md.
//
//	go run ./scripts/chaos --schedules 3 --seed 1     # what CI runs
//	scripts/chaos.sh --schedules 200                  # the long run
//	go run ./scripts/chaos --seed 0x2a --schedules 1 -v --keep   # rerun one schedule
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	schedules int
	seed      uint64
	seedSet   bool
	nodes     int
	ops       int
	deadline  time.Duration
	keep      bool
	ferry     string
	verbose   bool
	root      string
	selfCheck bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./scripts/chaos [flags]\n\nSeeded fault runs of real ferry nodes (see docs/chaos.md).\n\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.schedules, "schedules", 1, "number of schedules to run (schedule i uses seed S+i)")
	fs.Func("seed", "seed of the first schedule, decimal or 0x hex (default: from the clock)", func(s string) error {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			return fmt.Errorf("want an unsigned integer: %w", err)
		}
		o.seed, o.seedSet = v, true
		return nil
	})
	fs.IntVar(&o.nodes, "nodes", 5, "nodes per schedule: one office and nodes-1 laptops")
	fs.IntVar(&o.ops, "ops", 60, "operations (edits and faults) per schedule")
	fs.DurationVar(&o.deadline, "deadline", 60*time.Second, "how long the healed cluster may take to converge")
	fs.BoolVar(&o.keep, "keep", false, "keep the data dirs of passing schedules too")
	fs.StringVar(&o.ferry, "ferry", "", "use this ferry binary instead of building ./cmd/ferry")
	fs.BoolVar(&o.verbose, "v", false, "print every step to stderr")
	fs.BoolVar(&o.selfCheck, "self-check", false, "also check that the checks flag fabricated writes that were never made, and failed writes that show")
	fs.StringVar(&o.root, "root", "", "parent dir of the schedules' data dirs (default: the system temp dir)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch {
	case o.schedules < 1:
		return o, errors.New("--schedules must be at least 1")
	case o.nodes < 2:
		return o, errors.New("--nodes must be at least 2 (an office and a laptop)")
	case o.ops < 1:
		return o, errors.New("--ops must be at least 1")
	case o.deadline <= 0:
		return o, errors.New("--deadline must be positive")
	}
	if !o.seedSet {
		o.seed = uint64(time.Now().UnixNano())
	}
	return o, nil
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == wfActionArg {
		// The action of the office's workflow (workflows.go).
		os.Exit(workflowAction(os.Args[2]))
	}
	os.Exit(run())
}

func run() int {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp(opts.root, "ferry-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	h, err := newHarness(ctx, opts, tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 1
	}
	if !opts.seedSet {
		fmt.Printf("seed not given: using 0x%x\n", opts.seed)
	}
	passed, failed := 0, 0
	var total stats
	for i := 0; i < opts.schedules && ctx.Err() == nil; i++ {
		res := h.runSchedule(ctx, i, opts.seed+uint64(i))
		total.add(res.stats)
		if ctx.Err() != nil && res.interrupted {
			fmt.Println(res.line())
			fmt.Printf("interrupted; data dir kept: %s\n", res.root)
			break
		}
		fmt.Println(res.line())
		if res.failed() {
			failed++
			res.printDetails(os.Stdout)
		} else {
			passed++
		}
	}
	fmt.Println(total.summary())
	if h.noCheck {
		fmt.Println("note: this ferry has no `check` command: the `ferry check --json` check was skipped")
	}
	if h.noCompact {
		fmt.Println("note: this ferry has no POST /v1/compact: compaction steps were skipped")
	}
	if h.noWorkflows {
		fmt.Println("note: this ferry has no `workflows` command: the workflow check was skipped")
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 || ctx.Err() != nil {
		return 1
	}
	return 0
}

// harness is what every schedule shares: the binary and the environment.
type harness struct {
	opts options
	bin  string
	// env is the environment of every ferry process (without the clock
	// offset, added per node).
	env []string
	// joinMode: the binary has `ferry invite`, so laptops enroll with
	// invite/join instead of --peer.
	joinMode bool
	// noCheck: the binary answered `ferry check` with "unknown command".
	noCheck bool
	// noCompact: the node answered POST /v1/compact with 404 or 405.
	noCompact bool
	// noWorkflows: the binary answered `ferry workflows` with "unknown
	// command".
	noWorkflows bool
}

// add sums the statistics of schedules.
func (s *stats) add(o stats) {
	s.ops += o.ops
	s.kills += o.kills
	s.restarts += o.restarts
	s.partitions += o.partitions
	s.skewed += o.skewed
	s.acked += o.acked
	s.imports += o.imports
	s.resolves += o.resolves
	s.conflicts += o.conflicts
	s.deletes += o.deletes
	s.diskFull += o.diskFull
	s.refused += o.refused
	s.failedValues += o.failedValues
	s.cutImports += o.cutImports
	s.checks += o.checks
	s.repairMax = max(s.repairMax, o.repairMax)
	s.comp.add(o.comp)
	s.wf.add(o.wf)
	s.ch.add(o.ch)
}

// summary is the line of totals printed before "N passed, N failed".
func (s stats) summary() string {
	return fmt.Sprintf("totals: %d ops, %d kills, %d partitions, %d acknowledged writes, %d disk-full episodes, %d writes refused on a full disk (%d failed values checked absent on every node), %d imports cut by a full disk, longest repair after space came back %.1fs, %d ferry check runs; %s; %s; %s",
		s.ops, s.kills, s.partitions, s.acked, s.diskFull, s.refused, s.failedValues, s.cutImports, s.repairMax.Seconds(), s.checks, s.comp.summary(), s.wf.summary(), s.ch.summary())
}

func newHarness(ctx context.Context, opts options, tmp string) (*harness, error) {
	h := &harness{opts: opts}
	if opts.ferry != "" {
		bin, err := filepath.Abs(opts.ferry)
		if err != nil {
			return nil, err
		}
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("--ferry %s: not an executable file", opts.ferry)
		}
		h.bin = bin
	} else {
		h.bin = filepath.Join(tmp, "ferry")
		start := time.Now()
		build := exec.CommandContext(ctx, "go", "build", "-o", h.bin, "./cmd/ferry")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/ferry (run from the repository root): %w", err)
		}
		if opts.verbose {
			fmt.Fprintf(os.Stderr, "built %s in %.1fs\n", h.bin, time.Since(start).Seconds())
		}
	}
	home := filepath.Join(tmp, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		return nil, err
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FERRY_DIR=") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, clockOffsetEnv+"=") || strings.HasPrefix(kv, diskFullEnv+"=") {
			continue
		}
		h.env = append(h.env, kv)
	}
	// A command without --dir must never touch the real ~/.ferry.
	h.env = append(h.env, "HOME="+home, "FERRY_DIR="+filepath.Join(home, "no-such-ferry-dir"))
	// The enrollment path (ferry invite + init --join) replaces --peer
	// once the binary has it.
	probe := exec.CommandContext(ctx, h.bin, "invite", "--help")
	probe.Env = h.env
	h.joinMode = probe.Run() == nil
	if opts.verbose {
		mode := "--peer"
		if h.joinMode {
			mode = "invite/join"
		}
		fmt.Fprintf(os.Stderr, "laptops enroll with %s\n", mode)
	}
	return h, nil
}
