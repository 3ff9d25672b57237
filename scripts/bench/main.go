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
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/libp2p/go-libp2p/core/pnet"
)

//go:embed crm.yaml
var crmSchema []byte

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
