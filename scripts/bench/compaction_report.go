package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/crdt"
)

// The compaction benchmark (compaction.go): its rows and notes.

// compactionOutcome is everything benchCompaction measured.
type compactionOutcome struct {
	n, k, sample              int
	mode                      string
	importTook, editsTook     time.Duration
	importDeltas, editDeltas  int
	history                   crdt.HistorySize
	imported, edited          storePoint
	keep10, keep0             compactRun
	baseRun, compRun, histRun catchUpRun
	histDone, nodeCompact     bool
	baseClean, compClean      cleanRun
	adopted                   []crdt.EpochReport
	// gets: the interleaved Store.Get timings of the import-only copy,
	// the office compacted with history_keep 10 and the copy with 0.
	gets []timings
	// getImportLive, getEditedLive: Store.Get on the node that just
	// imported or edited, before it was stopped (badger not flattened).
	getImportLive, getEditedLive timings
}

func (e *env) compactionResult(o compactionOutcome) result {
	n, k := o.n, o.k
	base := o.imported.disk.total().bytes
	what := fmt.Sprintf("%d contacts, %d single-field edits each", n, k)
	diskCell := func(s storeSizes) string {
		return fmt.Sprintf("%s (%s/record)", fmtBytes(s.total().bytes), perRec(s.total().bytes, n))
	}
	importCell := diskCell(o.imported.disk) + " right after the import"
	getCell := func(p storePoint) string { return fmtDur(p.get.p(50)) }
	importGet := fmtDur(o.imported.get.p(50)) + " right after the import"
	ratioBytes := func(s storeSizes) string { return fmtRatio(float64(s.total().bytes), float64(base)) }
	ratioGet := func(p storePoint) string {
		return fmtRatio(float64(p.get.p(50)), float64(o.imported.get.p(50)))
	}
	runCell := func(r catchUpRun) string {
		switch {
		case r.converged:
			return fmt.Sprintf("%s (%d blocks fetched in bulk)", fmtDur(r.sync), r.bulk)
		case r.headsEq:
			return fmt.Sprintf("NOT CONVERGED: heads equal after %s, but it lists %d of %d contacts (%s) (%d blocks fetched in bulk)", fmtDur(r.heads), r.listed, n, ignoredNote(r.ignored), r.bulk)
		}
		return fmt.Sprintf("> %s (not converged; it lists %d of %d contacts)", fmtDur(r.sync), r.listed, n)
	}
	runRatio := func(a, b catchUpRun) string {
		switch {
		case a.converged && b.converged:
			return fmtRatio(float64(a.sync), float64(b.sync))
		case a.headsEq && b.converged:
			return fmtRatio(float64(a.heads), float64(b.sync)) + " (heads only: not converged)"
		}
		return "n/a (not converged)"
	}
	rows := []row{
		{fmt.Sprintf("compaction: store on disk after compaction, history_keep 10 (%s; reclaimed as node.Compact does, node stopped)", what),
			diskCell(o.keep10.point.disk), importCell, ratioBytes(o.keep10.point.disk)},
		{"compaction: store on disk after compaction, history_keep 0",
			diskCell(o.keep0.point.disk), importCell, ratioBytes(o.keep0.point.disk)},
		{"compaction: store on disk after the edits, before compaction (info)",
			diskCell(o.edited.disk), importCell, ratioBytes(o.edited.disk)},
		{fmt.Sprintf("compaction: Store.Get median after compaction, history_keep 10 (%d contacts × %d rounds, interleaved with the baseline)", o.sample, compGetRounds),
			fmtDur(o.gets[1].p(50)), fmtDur(o.gets[0].p(50)) + " (the import-only copy)", fmtRatio(float64(o.gets[1].p(50)), float64(o.gets[0].p(50)))},
		{"compaction: Store.Get median after compaction, history_keep 0 (the same)",
			fmtDur(o.gets[2].p(50)), fmtDur(o.gets[0].p(50)) + " (the import-only copy)", fmtRatio(float64(o.gets[2].p(50)), float64(o.gets[0].p(50)))},
		{fmt.Sprintf("compaction: Store.Get median after the edits, before compaction (info; %d contacts × %d passes, vs right after the import)", o.sample, compGetPasses),
			getCell(o.edited), importGet, ratioGet(o.edited)},
		{"compaction: Store.Get median right after the edits on the node that made them, before it stops (info; badger not flattened), vs right after the import (the same)",
			fmtDur(o.getEditedLive.p(50)), fmtDur(o.getImportLive.p(50)) + " right after the import, before the node stopped", fmtRatio(float64(o.getEditedLive.p(50)), float64(o.getImportLive.p(50)))},
		{"compaction: time to compact, history_keep 10 (the store: cut, seed, switch, carry, archive, drop; then badger flatten and value-log GC)",
			o.keep10.tookCell(o.nodeCompact),
			fmtDur(o.importTook) + " (Store.Import of the same contacts)", fmtRatio(float64(o.keep10.took(o.nodeCompact)), float64(o.importTook))},
		{"compaction: time to compact, history_keep 0",
			o.keep0.tookCell(o.nodeCompact),
			fmtDur(o.importTook) + " (Store.Import of the same contacts)", fmtRatio(float64(o.keep0.took(o.nodeCompact)), float64(o.importTook))},
		{"compaction: fresh node catch-up (bulk block sync) from the compacted office vs from an office that only imported the contacts",
			runCell(o.compRun), runCell(o.baseRun) + " (import-only office)", runRatio(o.compRun, o.baseRun)},
		{"compaction: clean sync of a fresh node from the compacted office vs from the import-only office",
			fmt.Sprintf("%s (%d entries, %s sent)", fmtDur(o.compClean.res.Took), o.compClean.res.Entries, fmtBytes(o.compClean.sent)),
			fmt.Sprintf("%s (%d entries, %s sent)", fmtDur(o.baseClean.res.Took), o.baseClean.res.Entries, fmtBytes(o.baseClean.sent)),
			fmtRatio(float64(o.compClean.res.Took), float64(o.baseClean.res.Took))},
	}
	if o.histDone {
		rows = append(rows, row{"compaction: fresh node catch-up on the uncompacted history (info) vs from the import-only office",
			runCell(o.histRun), runCell(o.baseRun), runRatio(o.histRun, o.baseRun)})
	}

	adopt := "no epoch change reported"
	if len(o.adopted) > 0 {
		a := o.adopted[len(o.adopted)-1]
		adopt = fmt.Sprintf("%d epoch change(s); the last to %s took %s (%d writes carried, %d facts, %d keys and %d blocks of its epoch 0 dropped)",
			len(o.adopted), a.Epoch, fmtDur(a.Took), a.Carried, a.Facts, a.DroppedKeys, a.DroppedBlocks)
	}
	compactNote := func(cr compactRun) string {
		how := fmt.Sprintf("crdt.Store.Compact took %s (its EpochReport.Took %s)", fmtDur(cr.compact), fmtDur(cr.rep.Took))
		if o.nodeCompact {
			how = fmt.Sprintf("node.Compact took %s (took_ms %d; its store part, until the store's OnEpoch hook ran, %s; store_bytes_before %s and store_bytes_after %s as it measured them, store open, after its Reclaim)",
				fmtDur(cr.compact), cr.res.TookMS, fmtDur(cr.rep.Took), fmtBytes(cr.res.StoreBefore), fmtBytes(cr.res.StoreAfter))
		}
		return fmt.Sprintf("history_keep %d: %s (%s), the node's Close right after it %s (it waits for the Reclaim the node's OnEpoch hook started), the stopped store's Reclaim %s (GC: %d rounds, value log %s -> %s); the time counted: %s. "+
			"Epoch %s: %d writes seeded (%d records), %d carried, %d facts, %d records archived, %d keys and %d blocks of epoch 0 dropped; the current epoch held %d writes for %d visible before, %d for %d after. "+
			"Store after: %s; keys: %s",
			cr.keep, how, phases(cr), fmtDur(cr.close), fmtDur(cr.point.reclaim), cr.point.gc.Rounds, fmtBytes(cr.point.gc.Before), fmtBytes(cr.point.gc.After), fmtDur(cr.took(o.nodeCompact)),
			cr.rep.Epoch, cr.rep.Seeded, cr.rep.Records, cr.rep.Carried, cr.rep.Facts, cr.rep.Archived, cr.rep.DroppedKeys, cr.rep.DroppedBlocks,
			cr.before.Writes, cr.before.Visible, cr.after.Writes, cr.after.Visible,
			cr.point.disk, cr.point.keys.format(n))
	}
	notes := []string{
		fmt.Sprintf("Compaction (issue 13): an office node (role office, network off, secured: it founds the network and signs every write) applies the crm schema, enrols the fresh nodes used below, and imports %d contacts with Store.Import (%s, %d deltas). "+
			"Then %d single-field edits per contact, %d in all, in %d rounds each editing every contact once (random field among first_name, phone, stage, amount, active; a value different from the current one), written with %s: %s, %s, %d deltas; afterwards the current epoch holds %d writes for %d visible ones. "+
			"Then the office compacts with history_keep 10 (the default), and a copy of its data dir taken after the edits with history_keep 0: %s. After every step the contacts are checked against the expected state.",
			n, fmtDur(o.importTook), o.importDeltas, k, n*k, k, editModeNote(o.mode), fmtDur(o.editsTook), fmtRate(rate(n*k, o.editsTook), "edits/s"), o.editDeltas, o.history.Writes, o.history.Visible,
			compactHow(o.nodeCompact)),
		fmt.Sprintf("Compaction, how disk and Get are measured, the same at every point: the node is stopped (closed cleanly), its store opened alone (datadir.OpenStore), given datadir.GC.Reclaim (badger's LSM tree flattened into one level, then value-log GC rounds until none rewrites: what node.Compact runs after compacting), its keys counted by kind (key + value bytes), closed, and every file under DIR/store summed (apparent size). "+
			"Then the node is started again on it (network off) and Store.Get is called on %d contacts (seeded sample): one pass untimed (warm-up), then %d timed passes; the median of those %d reads. "+
			"Right after the import: %s (GC %d rounds); Get p50 %s, p90 %s, p99 %s; keys: %s. "+
			"After the edits: %s (GC %d rounds, value log %s -> %s); Get p50 %s, p90 %s, p99 %s; keys: %s.",
			o.sample, compGetPasses, compGetPasses*o.sample,
			o.imported.disk, o.imported.gc.Rounds, fmtDur(o.imported.get.p(50)), fmtDur(o.imported.get.p(90)), fmtDur(o.imported.get.p(99)), o.imported.keys.format(n),
			o.edited.disk, o.edited.gc.Rounds, fmtBytes(o.edited.gc.Before), fmtBytes(o.edited.gc.After), fmtDur(o.edited.get.p(50)), fmtDur(o.edited.get.p(90)), fmtDur(o.edited.get.p(99)), o.edited.keys.format(n)),
		"Compaction, " + compactNote(o.keep10) + fmt.Sprintf("; Get p50 %s, p90 %s, p99 %s.", fmtDur(o.keep10.point.get.p(50)), fmtDur(o.keep10.point.get.p(90)), fmtDur(o.keep10.point.get.p(99))),
		"Compaction, " + compactNote(o.keep0) + fmt.Sprintf("; Get p50 %s, p90 %s, p99 %s.", fmtDur(o.keep0.point.get.p(50)), fmtDur(o.keep0.point.get.p(90)), fmtDur(o.keep0.point.get.p(99))),
		fmt.Sprintf("Compaction, fresh nodes: the baseline office is a copy of the office's data dir taken right after the import (same identity, contacts and membership; it never runs beside the office). Each office in turn is started on loopback TCP (role office) and left to build its first digest, then a fresh laptop (enrolled before the import) with that office as its only peer is started and timed until its heads equal the office's and a digest of its contacts equals the office's (polled every %s; as the catchup benchmark), then checked: its epoch (0 for the baseline, the office's new epoch after compaction) and its contacts. "+
			"The fresh node starts in epoch 0; from the compacted office it hears heads of the later epoch, fetches that epoch's blocks in bulk (/ferry/blocks) and moves to it (crdt.Store.Adopt: merge the epoch's DAG in its own namespace, check the manifest, carry over its own node-info write, drop epoch 0): %s. Then, on the same office, another fresh node runs node.CleanSync (snapshot copy, then heads); Took until its heads equal the office's. "+
			"Clean sync from the import-only office: %s (CleanSync returned after %s), %d entries (%s), then %d blocks, %s sent by the office, fresh data dir %s; from the compacted office: %s (returned after %s), %d entries (%s), then %d blocks, %s sent, fresh data dir %s.",
			pollEvery, adopt,
			fmtDur(o.baseClean.res.Took), fmtDur(o.baseClean.wall), o.baseClean.res.Entries, fmtBytes(o.baseClean.res.Bytes), o.baseClean.res.Blocks, fmtBytes(o.baseClean.sent), fmtBytes(o.baseClean.disk.bytes),
			fmtDur(o.compClean.res.Took), fmtDur(o.compClean.wall), o.compClean.res.Entries, fmtBytes(o.compClean.res.Bytes), o.compClean.res.Blocks, fmtBytes(o.compClean.sent), fmtBytes(o.compClean.disk.bytes)),
	}
	notes = append(notes, fmt.Sprintf("Compaction, Store.Get rows: after both compactions, the import-only copy (the baseline office below), the office compacted with history_keep 10 and the copy compacted with history_keep 0 are each started (network off) in turn, %d rounds, each time one untimed and one timed pass over the %d sampled contacts; the median of each node's %d timed reads. Import-only copy p50 %s, p90 %s, p99 %s; history_keep 10 p50 %s, p90 %s, p99 %s; history_keep 0 p50 %s, p90 %s, p99 %s.",
		compGetRounds, o.sample, compGetRounds*o.sample,
		fmtDur(o.gets[0].p(50)), fmtDur(o.gets[0].p(90)), fmtDur(o.gets[0].p(99)),
		fmtDur(o.gets[1].p(50)), fmtDur(o.gets[1].p(90)), fmtDur(o.gets[1].p(99)),
		fmtDur(o.gets[2].p(50)), fmtDur(o.gets[2].p(90)), fmtDur(o.gets[2].p(99))))
	if o.histDone {
		notes = append(notes, fmt.Sprintf("Compaction, catch-up on the history (info): before the history_keep 0 copy compacts, it is started on the network and a fresh laptop catches up with it the same way (it walks the whole history: %d deltas): %s.",
			o.importDeltas+o.editDeltas, runCell(o.histRun)))
	}
	return result{rows: rows, notes: notes}
}

// ignoredNote renders operations ignored by reason.
func ignoredNote(by map[string]int) string {
	if len(by) == 0 {
		return "no operation ignored"
	}
	reasons := slices.Sorted(maps.Keys(by))
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%d operations ignored: %s", by[r], r)
	}
	return strings.Join(parts, ", ")
}

func compactHow(nodeCompact bool) string {
	if nodeCompact {
		return "node.Compact on the node (network off; what `POST /v1/compact` and `ferry compact` run: the store's compaction, then badger flattened and its value log collected), timed as its caller sees it"
	}
	return "crdt.Store.Compact on the node (network off; --compaction-node-compact=false), then the node closed (its Close waits for the Reclaim the node's OnEpoch hook starts) and the stopped store given the Reclaim node.Compact would run; the time counted is the sum of the three"
}

func editModeNote(mode string) string {
	if mode == compEditModePut {
		return "Store.Put, one write, one delta and one fsync per edit (what `ferry put` and PUT /v1/records do)"
	}
	return "Store.Import rounds (--compaction-edit-mode import): one edit of every contact per round, batch-signed deltas of up to 400 writes"
}
