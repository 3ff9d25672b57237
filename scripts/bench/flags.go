package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

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
