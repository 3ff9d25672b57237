// Command bench measures Ferry against baselines measured in the same run:
// durable single-field edits and bulk import against raw go-ds-badger; the
// catch-up of a fresh node on a DAG of single-edit deltas, Ferry's bulk
// block sync against plain go-ds-crdt (DAG walk over bitswap) on the same
// history; the propagation latency of an edit laptop → office → laptop
// against laptop → office; a clean sync of a fresh node from an office
// against a plain copy of the office's data dir; and the peak RSS and disk
// size of an office node (the real binary) holding a million field values
// against raw go-ds-badger and the JSONL file, and its steady RSS after the
// import; the store bytes per contact after `ferry import` (storage) and
// per single-field edit (edit-bytes) against raw go-ds-badger holding one
// JSON value per record; and compaction (issue 13): an office's disk,
// Store.Get median and a fresh node's catch-up after many edits and a
// compaction, against the same office right after the import; and channels
// (issue 14): the clean sync of a laptop granted 1 of 10 channels against
// one granted all 10, and propagation and catch-up with an office holding
// 10 channels against the same records unrouted. It prints
// one Markdown table
// on stdout (and to --out, under a heading); progress and the nodes'
// warnings go to stderr.
//
//	scripts/bench.sh                 # full run, about 10 minutes (plain go-ds-crdt catch-up: ~3.5), plus the compaction and channels benchmarks'
//	scripts/bench.sh --edits 200 --import 1000 --catchup-edits 300 --propagation-edits 200 --clean-sync-records 2000 --rss-records 2000 --storage-records 2000 --edit-bytes-edits 200 --compaction-records 1000 --compaction-edits 10 --channels-records 2000 --channels-propagation-edits 100 --channels-catchup-edits 300 --channels-catchup-rounds 1   # quick run, a few minutes
//	scripts/bench.sh --only import --profile-dir /tmp/prof   # one CPU profile per timed phase
//	scripts/bench.sh --only cleansync,rss --clean-sync-records 10000 --rss-records 10000
//	scripts/bench.sh --only storage,edit-bytes --storage-records 5000 --edit-bytes-edits 500
//	scripts/bench.sh --only compaction   # 10,000 contacts, 100 edits each (issue 13)
//	scripts/bench.sh --only compaction --compaction-records 1000 --compaction-edits 10   # quick
//	scripts/bench.sh --only channels   # 100,000 contacts in 10 channels (issue 14): 7 to 14 minutes on 2 shared cores
//	scripts/bench.sh --only channels --channels-records 2000 --channels-propagation-edits 100 --channels-catchup-edits 300 --channels-catchup-rounds 1   # quick
package main

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/libp2p/go-libp2p/core/pnet"
)

//go:embed crm.yaml
var crmSchema []byte

// config holds the flags.
type config struct {
	only            map[string]bool
	edits           int
	editContacts    int
	importN         int
	baselineBatch   int
	catchupEdits    int
	catchupContacts int
	catchupBatch    int
	catchupTimeout  time.Duration
	propEdits       int
	propContacts    int
	secured         bool
	cleanRecords    int
	cleanTimeout    time.Duration
	rssRecords      int
	// rssSteadyAfter and rssSteadySamples: the steady RSS is the median of
	// that many VmRSS samples, 1 s apart, from that long after the import.
	rssSteadyAfter   time.Duration
	rssSteadySamples int
	storageRecords   int
	editBytesEdits   int
	// compaction: contacts, single-field edits per contact, how the edits
	// are written (import or put), the contacts sampled for Store.Get, and
	// whether a fresh node also catches up on the uncompacted history.
	compactionRecords        int
	compactionEdits          int
	compactionEditMode       string
	compactionGetSample      int
	compactionHistoryCatchup bool
	compactionNodeCompact    bool
	genRecords               string
	seed                     uint64
	out                      string
	schemaFile               string
	dir                      string
	keep                     bool
	profileDir               string

	// channels (issue 14): channels (t0..t<N-1>), contacts routed into
	// them for the clean sync, the propagation and catch-up sizes, and
	// whether the unrouted full copy and the laptops granted one channel
	// are measured too.
	channels                int
	channelsRecords         int
	channelsFlatCleanSync   bool
	channelsPropEdits       int
	channelsPropContacts    int
	channelsPropOne         bool
	channelsPropReconnect   bool
	channelsCatchupEdits    int
	channelsCatchupContacts int
	channelsCatchupRounds   int
}

var benchmarks = []string{"edit", "import", "catchup", "propagation", "cleansync", "rss", "storage", "edit-bytes", "compaction", "channels"}

// quickFlags make a quick run (a few minutes) of every benchmark.
const quickFlags = "--edits 200 --import 1000 --catchup-edits 300 --propagation-edits 200 --clean-sync-records 2000 --rss-records 2000 --storage-records 2000 --edit-bytes-edits 200 --compaction-records 1000 --compaction-edits 10 " + channelsQuickFlags

// channelsQuickFlags make a quick run of the channels benchmark.
const channelsQuickFlags = "--channels-records 2000 --channels-propagation-edits 100 --channels-catchup-edits 300 --channels-catchup-rounds 1"

// env is what every benchmark shares.
type env struct {
	cfg       config
	root      string // temp dir holding every node and datastore
	log       *slog.Logger
	schema    []byte
	topic     string
	start     time.Time
	data      dataset
	loadStart string // /proc/loadavg when the run started
	// swarmKey is the private-network key of every in-process network
	// (--network secured).
	swarmKey pnet.PSK
}

// progress prints a progress line to stderr.
func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %6.1fs] %s\n", time.Since(e.start).Seconds(), fmt.Sprintf(format, args...))
}

// profile starts a CPU profile of one timed phase (with --profile-dir) and
// returns the function that stops it.
func (e *env) profile(phase string) func() {
	if e.cfg.profileDir == "" {
		return func() {}
	}
	path := filepath.Join(e.cfg.profileDir, phase+".pprof")
	f, err := os.Create(path)
	if err != nil {
		e.progress("profile %s: %v", phase, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		e.progress("profile %s: %v", phase, err)
		return func() {}
	}
	return sync.OnceFunc(func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			e.progress("profile %s: %v", phase, err)
		}
	})
}

// row is one line of the result table.
type row struct {
	name, ferry, baseline, ratio string
}

// result is what one benchmark reports.
type result struct {
	rows  []row
	notes []string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childBadgerImport {
		if err := runChildBadgerImport(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (config, error) {
	var c config
	var only string
	var seed uint64
	var network string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&only, "only", strings.Join(benchmarks, ","), "benchmarks to run, comma-separated: "+strings.Join(benchmarks, ", "))
	fs.IntVar(&c.edits, "edits", 2000, "edit: number of durable single-field Store.Put calls")
	fs.IntVar(&c.editContacts, "edit-contacts", 1000, "edit: contacts imported before the edits")
	fs.IntVar(&c.importN, "import", 100000, "import: contacts (8 fields each) imported into an empty store")
	fs.IntVar(&c.baselineBatch, "baseline-batch", 1000, "import: keys per badger batch in the baseline")
	fs.IntVar(&c.catchupEdits, "catchup-edits", 10000, "catchup: single-field edits on the source node")
	fs.IntVar(&c.catchupContacts, "catchup-contacts", 100, "catchup: contacts the edits touch")
	fs.IntVar(&c.catchupBatch, "catchup-batch", 1000, "catchup: edits per Store.Import call in the batched history (info row)")
	fs.DurationVar(&c.catchupTimeout, "catchup-timeout", 10*time.Minute, "catchup: give up waiting for a fresh node after this long")
	fs.IntVar(&c.propEdits, "propagation-edits", 300, "propagation: measured single-field Puts on laptop1 (p99 wants at least 200)")
	fs.IntVar(&c.propContacts, "propagation-contacts", 20, "propagation: contacts imported on the office first")
	fs.IntVar(&c.cleanRecords, "clean-sync-records", 100000, "cleansync: contacts (8 fields each) on the office a fresh node clean-syncs from")
	fs.DurationVar(&c.cleanTimeout, "clean-sync-timeout", 10*time.Minute, "cleansync: give up on the clean sync after this long")
	fs.IntVar(&c.rssRecords, "rss-records", 125000, "rss: contacts (8 fields each) imported into an office node run as the real binary")
	fs.DurationVar(&c.rssSteadyAfter, "rss-steady-after", 10*time.Second, "rss: the steady RSS is sampled from this long after `ferry import` returned")
	fs.IntVar(&c.rssSteadySamples, "rss-steady-samples", 5, "rss: VmRSS samples (1 s apart) whose median is the steady RSS")
	fs.IntVar(&c.storageRecords, "storage-records", 100000, "storage, edit-bytes: contacts imported by `ferry import` into a fresh node run as the real binary")
	fs.IntVar(&c.editBytesEdits, "edit-bytes-edits", 2000, "edit-bytes: single-field edits through the node's local API after that import")
	fs.IntVar(&c.compactionRecords, "compaction-records", 10000, "compaction: contacts imported into the office that then edits and compacts")
	fs.IntVar(&c.compactionEdits, "compaction-edits", 100, "compaction: single-field edits per contact before compacting")
	fs.StringVar(&c.compactionEditMode, "compaction-edit-mode", compEditModePut, "compaction: how the edits are written: "+compEditModePut+" (one Store.Put, one delta and one fsync, per edit: what `ferry put` does) or "+compEditModeImport+" (one Store.Import per round of one edit per contact: batch-signed deltas of up to 400 writes, which a compaction seeds whole)")
	fs.IntVar(&c.compactionGetSample, "compaction-get-sample", 2000, "compaction: contacts whose Store.Get is timed at each point")
	fs.BoolVar(&c.compactionHistoryCatchup, "compaction-history-catchup", true, "compaction: also time a fresh node catching up on the uncompacted history (info row)")
	fs.BoolVar(&c.compactionNodeCompact, "compaction-node-compact", true, "compaction: compact with node.Compact (what POST /v1/compact runs, its Reclaim included); false: crdt.Store.Compact, then the node closed and the stopped store reclaimed")
	fs.IntVar(&c.channels, "channels", 10, "channels: channels t0..t<N-1> contacts are routed into by the field territory (contact c<i> in t<i mod N>)")
	fs.IntVar(&c.channelsRecords, "channels-records", 100000, "channels: contacts on the office the clean-sync laptops copy from")
	fs.BoolVar(&c.channelsFlatCleanSync, "channels-flat-cleansync", true, "channels: also clean-sync a laptop from an office holding the same contacts unrouted (info rows)")
	fs.IntVar(&c.channelsPropEdits, "channels-propagation-edits", 200, "channels: measured single-field Puts per propagation run (p99 wants at least 200)")
	fs.IntVar(&c.channelsPropContacts, "channels-propagation-contacts", 20, "channels: contacts per channel on the propagation office")
	fs.BoolVar(&c.channelsPropOne, "channels-propagation-one", true, "channels: also run propagation with the laptops granted the edited channel only")
	fs.BoolVar(&c.channelsPropReconnect, "channels-propagation-reconnect", true, "channels: also run propagation (diagnostic rows) with each laptop reconnecting to the office once it holds its channels")
	fs.IntVar(&c.channelsCatchupEdits, "channels-catchup-edits", 3000, "channels: single-field edits on the office, in one channel, that fresh laptops catch up on")
	fs.IntVar(&c.channelsCatchupContacts, "channels-catchup-contacts", 100, "channels: contacts per channel on the catch-up offices")
	fs.IntVar(&c.channelsCatchupRounds, "channels-catchup-rounds", 3, "channels: fresh laptops per catch-up office (the median is reported)")
	fs.StringVar(&c.genRecords, "gen-records", "../shared/bench/gen_records.py", "gen_records.py, run with python3 to make the contacts (empty, or without python3: the Go port in data.go)")
	fs.StringVar(&network, "network", "secured", "in-process nodes: secured (swarm key, founder, signed operations: what ferry init --office makes) or open")
	fs.Uint64Var(&seed, "seed", 1, "seed of the generated records and edits")
	fs.StringVar(&c.out, "out", "", "also write the report to this file")
	fs.StringVar(&c.schemaFile, "schema", "", "schema YAML (default: the embedded copy of crm.yaml)")
	fs.StringVar(&c.dir, "dir", "", "parent of the temporary data dir (default $TMPDIR); it decides the disk measured")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary data dir")
	fs.StringVar(&c.profileDir, "profile-dir", "", "write a CPU profile of each timed phase to DIR/<phase>.pprof")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.seed = seed
	switch network {
	case "secured":
		c.secured = true
	case "open":
	default:
		return c, fmt.Errorf("--network %q: want secured or open", network)
	}
	c.only = map[string]bool{}
	for _, b := range strings.Split(only, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if !contains(benchmarks, b) {
			return c, fmt.Errorf("--only: unknown benchmark %q (want %s)", b, strings.Join(benchmarks, ", "))
		}
		c.only[b] = true
	}
	switch {
	case len(c.only) == 0:
		return c, errors.New("--only: no benchmark selected")
	case c.edits <= 0 || c.editContacts <= 0 || c.importN <= 0 || c.baselineBatch <= 0:
		return c, errors.New("sizes must be positive")
	case c.catchupEdits <= 0 || c.catchupContacts <= 0 || c.catchupBatch <= 0 || c.catchupTimeout <= 0:
		return c, errors.New("catch-up sizes and timeout must be positive")
	case c.propEdits <= 0 || c.propContacts <= 0:
		return c, errors.New("propagation sizes must be positive")
	case c.cleanRecords <= 0 || c.cleanTimeout <= 0 || c.rssRecords <= 0:
		return c, errors.New("clean-sync and rss sizes and timeout must be positive")
	case c.rssSteadyAfter < 0 || c.rssSteadySamples <= 0 || c.storageRecords <= 0 || c.editBytesEdits <= 0:
		return c, errors.New("rss steady sampling, storage and edit-bytes sizes must be positive")
	case c.compactionRecords <= 0 || c.compactionEdits <= 0 || c.compactionGetSample <= 0:
		return c, errors.New("compaction sizes must be positive")
	case c.compactionEditMode != compEditModeImport && c.compactionEditMode != compEditModePut:
		return c, fmt.Errorf("--compaction-edit-mode %q: want %s", c.compactionEditMode, compactionEditModes)
	case c.channels < 1 || c.channels > 100:
		return c, errChannelCount
	case c.channelsRecords <= 0 || c.channelsPropEdits <= 0 || c.channelsPropContacts <= 0 || c.channelsCatchupEdits <= 0 || c.channelsCatchupContacts <= 0 || c.channelsCatchupRounds <= 0:
		return c, errors.New("channels sizes must be positive")
	}
	return c, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func run() (err error) {
	cfg, err := parseFlags()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	e := &env{cfg: cfg, schema: crmSchema, start: time.Now(), loadStart: loadAvg(),
		log:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		topic: fmt.Sprintf("ferry-bench-%x", rand.Uint64())}
	if cfg.schemaFile != "" {
		if e.schema, err = os.ReadFile(cfg.schemaFile); err != nil {
			return err
		}
	}
	if cfg.secured {
		if e.swarmKey, err = datadir.NewSwarmKey(); err != nil {
			return err
		}
	}
	if e.root, err = os.MkdirTemp(cfg.dir, "ferry-bench-"); err != nil {
		return err
	}
	if cfg.keep {
		fmt.Fprintf(os.Stderr, "data kept in %s\n", e.root)
	} else {
		defer os.RemoveAll(e.root)
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	need := 0
	for b, n := range map[string]int{"edit": cfg.editContacts, "import": cfg.importN, "catchup": cfg.catchupContacts,
		"propagation": cfg.propContacts, "cleansync": cfg.cleanRecords, "rss": cfg.rssRecords,
		"storage": cfg.storageRecords, "edit-bytes": cfg.storageRecords, "compaction": cfg.compactionRecords,
		"channels": max(cfg.channelsRecords, cfg.channels*max(cfg.channelsPropContacts, cfg.channelsCatchupContacts))} {
		if cfg.only[b] {
			need = max(need, n)
		}
	}
	if err := e.prepareData(ctx, need); err != nil {
		return err
	}

	var all result
	storageDone := false // one import serves storage and edit-bytes
	for _, b := range benchmarks {
		if !cfg.only[b] {
			continue
		}
		var r result
		switch b {
		case "edit":
			r, err = e.benchEdit(ctx)
		case "import":
			r, err = e.benchImport(ctx)
		case "catchup":
			r, err = e.benchCatchup(ctx)
		case "propagation":
			r, err = e.benchPropagation(ctx)
		case "cleansync":
			r, err = e.benchCleanSync(ctx)
		case "rss":
			r, err = e.benchRSS(ctx)
		case "storage", "edit-bytes":
			if storageDone {
				continue
			}
			storageDone = true
			r, err = e.benchStorage(ctx)
		case "compaction":
			r, err = e.benchCompaction(ctx)
		case "channels":
			r, err = e.benchChannels(ctx)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
		all.rows = append(all.rows, r.rows...)
		all.notes = append(all.notes, r.notes...)
	}
	all.notes = append(all.notes, e.networkNote(), e.data.source)
	report := e.report(all)
	fmt.Print(report)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(e.fileHeader()+report+keptTail(cfg.out)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// keepMarker starts the hand-written part of the --out file (the
// description of each benchmark), which --out keeps as it is.
const keepMarker = "<!-- Hand-written below this line: scripts/bench.sh --out keeps it. -->"

// keptTail is the hand-written part of the --out file (from keepMarker on),
// after a blank line; empty when there is none.
func keptTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	i := strings.Index(string(b), keepMarker)
	if i < 0 {
		return ""
	}
	return "\n" + string(b[i:])
}

// report renders the table, notes, command line and machine facts.
func (e *env) report(r result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| benchmark | Ferry | baseline | ratio |\n|---|---|---|---|\n")
	for _, x := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", x.name, x.ferry, x.baseline, x.ratio)
	}
	b.WriteString("\nRatio = Ferry ÷ baseline, both measured in this run: below 1 for a rate means Ferry is slower; above 1 for a time or latency means Ferry is slower, and for bytes, memory or disk that Ferry uses more. " +
		"Catch-up rows also give the speed-up (plain go-ds-crdt time ÷ Ferry time); propagation rows compare two hops (laptop → office → laptop) with one hop (laptop → office) in the same Ferry network.\n")
	if len(r.notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	fmt.Fprintf(&b, "\nCommand: `%s` (runs `go run ./scripts/bench` from the repository root)\n", command())
	c := e.cfg
	var only []string
	for _, x := range benchmarks {
		if c.only[x] {
			only = append(only, x)
		}
	}
	fmt.Fprintf(&b, "\nSettings: --only %s --edits %d --edit-contacts %d --import %d --baseline-batch %d --catchup-edits %d --catchup-contacts %d --catchup-batch %d --catchup-timeout %s --propagation-edits %d --propagation-contacts %d --clean-sync-records %d --clean-sync-timeout %s --rss-records %d --rss-steady-after %s --rss-steady-samples %d --storage-records %d --edit-bytes-edits %d --compaction-records %d --compaction-edits %d --compaction-edit-mode %s --compaction-get-sample %d --compaction-history-catchup=%t --compaction-node-compact=%t --channels %d --channels-records %d --channels-flat-cleansync=%t --channels-propagation-edits %d --channels-propagation-contacts %d --channels-propagation-one=%t --channels-propagation-reconnect=%t --channels-catchup-edits %d --channels-catchup-contacts %d --channels-catchup-rounds %d --gen-records %s --network %s --seed %d\n",
		strings.Join(only, ","), c.edits, c.editContacts, c.importN, c.baselineBatch, c.catchupEdits, c.catchupContacts, c.catchupBatch, c.catchupTimeout, c.propEdits, c.propContacts,
		c.cleanRecords, c.cleanTimeout, c.rssRecords, c.rssSteadyAfter, c.rssSteadySamples, c.storageRecords, c.editBytesEdits,
		c.compactionRecords, c.compactionEdits, c.compactionEditMode, c.compactionGetSample, c.compactionHistoryCatchup, c.compactionNodeCompact,
		c.channels, c.channelsRecords, c.channelsFlatCleanSync, c.channelsPropEdits, c.channelsPropContacts, c.channelsPropOne, c.channelsPropReconnect, c.channelsCatchupEdits, c.channelsCatchupContacts, c.channelsCatchupRounds, shellQuote(c.genRecords), map[bool]string{true: "secured", false: "open"}[c.secured], c.seed)
	b.WriteString("\nMachine:\n")
	for _, f := range machineFacts(e.root) {
		fmt.Fprintf(&b, "- %s\n", f)
	}
	if e.loadStart != "" {
		fmt.Fprintf(&b, "- load average (1, 5, 15 min; the machine is shared, other work may run beside this program): %s at the start, %s at the end\n", e.loadStart, loadAvg())
	}
	return b.String()
}

// command is the command line of this run, as typed.
func command() string {
	args := make([]string, len(os.Args)-1)
	for i, a := range os.Args[1:] {
		args[i] = shellQuote(a)
	}
	return strings.TrimSpace("scripts/bench.sh " + strings.Join(args, " "))
}

// fileHeader goes before the report in the --out file.
func (e *env) fileHeader() string {
	return fmt.Sprintf("# Benchmarks\n\nGenerated by `%s` (the benchmark program in scripts/bench/) on %s; the run took %s. "+
		"Every baseline is measured in the same run on the same machine; the notes below the table say what each row measures, and the command's full settings and the machine follow them. "+
		"Quick run: `scripts/bench.sh %s`.\n\n",
		command(), e.start.UTC().Format("2006-01-02 15:04 UTC"), fmtDur(time.Since(e.start)), quickFlags)
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_=.,/:+@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// machineFacts lists what decides the numbers: CPUs, Go, module versions,
// and the file system the data dir is on.
func machineFacts(dir string) []string {
	nproc := fmt.Sprint(runtime.NumCPU())
	if out, err := exec.Command("nproc").Output(); err == nil {
		nproc = strings.TrimSpace(string(out))
	}
	facts := []string{
		"nproc: " + nproc,
		"CPU: " + cpuModel(),
		"Go: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		fmt.Sprintf("GOMAXPROCS: %d", runtime.GOMAXPROCS(0)),
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var mods []string
		for _, m := range bi.Deps {
			switch m.Path {
			case "github.com/ipfs/go-ds-crdt", "github.com/ipfs/go-ds-badger", "github.com/ipfs/boxo", "github.com/libp2p/go-libp2p":
				mods = append(mods, m.Path+" "+m.Version)
			}
		}
		if len(mods) > 0 {
			facts = append(facts, "modules: "+strings.Join(mods, ", "))
		}
	}
	if mem := memTotal(); mem != "" {
		facts = append(facts, "memory: "+mem)
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		facts = append(facts, "kernel: "+strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("df", "-PT", dir).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if f := strings.Fields(lines[len(lines)-1]); len(f) >= 2 {
			fact := fmt.Sprintf("data dir file system: %s (%s", f[1], f[0])
			if len(f) >= 3 {
				if kb, err := strconv.ParseInt(f[2], 10, 64); err == nil {
					fact += fmt.Sprintf(", %.0f GB", float64(kb)*1024/1e9)
				}
			}
			if rot, err := os.ReadFile("/sys/block/" + filepath.Base(f[0]) + "/queue/rotational"); err == nil {
				fact += ", queue/rotational " + strings.TrimSpace(string(rot))
			}
			facts = append(facts, fact+")")
		}
	}
	return facts
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

// memTotal is MemTotal of /proc/meminfo, in GB.
func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return fmt.Sprintf("%.1f GB", float64(kb)*1024/1e9)
			}
		}
	}
	return ""
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	return cpuModelFrom(f)
}

func cpuModelFrom(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// Formatting helpers.

func fmtRate(perSec float64, unit string) string {
	switch {
	case perSec >= 100:
		return fmt.Sprintf("%.0f %s", perSec, unit)
	case perSec >= 10:
		return fmt.Sprintf("%.1f %s", perSec, unit)
	}
	return fmt.Sprintf("%.2f %s", perSec, unit)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func fmtRatio(ferry, base float64) string {
	if base == 0 {
		return "n/a"
	}
	r := ferry / base
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0f", r)
	case r >= 10:
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.2f", r)
}

// fmtSmallRatio is fmtRatio with two significant digits below 1.
func fmtSmallRatio(ferry, base float64) string {
	if base == 0 {
		return "n/a"
	}
	if r := ferry / base; r < 1 {
		return fmt.Sprintf("%.2g", r)
	}
	return fmtRatio(ferry, base)
}

// fmtTimes formats a speed-up factor.
func fmtTimes(x float64) string {
	if x >= 10 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1f", x)
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}
