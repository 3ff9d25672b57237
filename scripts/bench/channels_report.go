package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The channels benchmark (channels.go): the rows and notes of its parts.

// chanCleanSyncResult makes the clean-sync rows and notes.
func (e *env) chanCleanSyncResult(n int, importTook, flatImport time.Duration, one, all chanSync, flat *chanSync, officeKeys chanKeys, officeDisk storeSizes) result {
	c := e.cfg
	what := fmt.Sprintf("%d contacts routed into %d channels", n, c.channels)
	tookCell := func(s chanSync) string {
		cell := fmt.Sprintf("%s (snapshot of %d entries, %s", fmtDur(s.took()), s.res.Entries, fmtBytes(s.res.Bytes))
		if s.extra > 0 {
			cell += fmt.Sprintf("; %s of it syncing after a restart", fmtDur(s.extra))
		}
		return cell + fmt.Sprintf("; %d contacts)", s.contacts)
	}
	diskCell := func(s chanSync) string {
		return fmt.Sprintf("%s (%s allocated; store: *.vlog %s, *.sst %s)", fmtBytes(s.dir.bytes), fmtBytes(s.dir.alloc), fmtBytes(s.disk.vlog.bytes), fmtBytes(s.disk.sst.bytes))
	}
	bytesCell := func(s chanSync) string {
		return fmt.Sprintf("%s (sent %s, received %s)", fmtBytes(s.sent), fmtBytes(s.sent), fmtBytes(s.recv))
	}
	rows := []row{
		{fmt.Sprintf("channels: clean sync of a fresh laptop granted 1 of %d channels (%s) vs one granted all %d (%s): time until it holds its channels' state", c.channels, one.channels[0], c.channels, what),
			tookCell(one), tookCell(all) + " (granted all)", fmtSmallRatio(float64(one.took()), float64(all.took()))},
		{"channels: clean sync, the laptop's store on disk once its value log is collected (stopped, then datadir.GC.Reclaim: LSM tree flattened, value-log GC), 1 channel vs all",
			reclaimedCell(one), reclaimedCell(all), fmtSmallRatio(float64(one.reclaimed.total().bytes), float64(all.reclaimed.total().bytes))},
		{"channels (info): clean sync, the laptop's data dir as the node left it (stopped, before Reclaim: what it holds depends on whether the node's value-log GC had run), 1 channel vs all",
			diskCell(one), diskCell(all), fmtSmallRatio(float64(one.dir.bytes), float64(all.dir.bytes))},
		{"channels: clean sync, bytes received by the laptop (the office's per-peer counter), 1 channel vs all",
			bytesCell(one), bytesCell(all), fmtSmallRatio(float64(one.sent), float64(all.sent))},
	}
	if flat != nil {
		rows = append(rows,
			row{fmt.Sprintf("channels (info): office import of the %d contacts through its router (Router.Import), routed into %d channels vs unrouted", n, c.channels),
				fmt.Sprintf("%s (%s)", fmtDur(importTook), fmtRate(rate(n, importTook), "records/s")),
				fmt.Sprintf("%s (%s, unrouted)", fmtDur(flatImport), fmtRate(rate(n, flatImport), "records/s")),
				fmtRatio(float64(importTook), float64(flatImport))},
			row{fmt.Sprintf("channels (info): clean sync of a laptop granted all %d channels vs the unrouted full copy (same %d contacts, one store): time", c.channels, n),
				tookCell(all), tookCell(*flat) + " (unrouted)", fmtRatio(float64(all.took()), float64(flat.took()))},
			row{"channels (info): clean sync, 1 channel and all channels vs the unrouted full copy: store once its value log is collected (bytes received)",
				fmt.Sprintf("1 channel %s (%s), all %s (%s)", fmtBytes(one.reclaimed.total().bytes), fmtBytes(one.sent), fmtBytes(all.reclaimed.total().bytes), fmtBytes(all.sent)),
				fmt.Sprintf("%s (%s)", fmtBytes(flat.reclaimed.total().bytes), fmtBytes(flat.sent)),
				fmt.Sprintf("%s and %s (%s and %s)", fmtSmallRatio(float64(one.reclaimed.total().bytes), float64(flat.reclaimed.total().bytes)), fmtRatio(float64(all.reclaimed.total().bytes), float64(flat.reclaimed.total().bytes)),
					fmtSmallRatio(float64(one.sent), float64(flat.sent)), fmtRatio(float64(all.sent), float64(flat.sent)))})
	}
	tablesNote := fmt.Sprintf("Where the disk goes (the 1-channel laptop against the one granted all): tables (*.sst) %s against %s (%s), value log (*.vlog) %s against %s (%s); after Reclaim (value-log GC: %d and %d files rewritten) %s against %s.",
		fmtBytes(one.disk.sst.bytes), fmtBytes(all.disk.sst.bytes), fmtSmallRatio(float64(one.disk.sst.bytes), float64(all.disk.sst.bytes)),
		fmtBytes(one.disk.vlog.bytes), fmtBytes(all.disk.vlog.bytes), fmtSmallRatio(float64(one.disk.vlog.bytes), float64(all.disk.vlog.bytes)),
		one.gc.Rounds, all.gc.Rounds, one.reclaimed, all.reclaimed)
	syncNote := func(s chanSync) string {
		return fmt.Sprintf("%s: took %s (phases: %s; CleanSync returned after %s, the fresh node's shutdown included), snapshot %d entries %s, then %d blocks; data dir %s in %d files (store %s); keys: %s; the process ran %d goroutines with the restarted laptop and the office up, %d with the office alone (laptop: %+d)",
			s.name, fmtDur(s.took()), s.phases, fmtDur(s.wall), s.res.Entries, fmtBytes(s.res.Bytes), s.res.Blocks, fmtBytes(s.dir.bytes), s.dir.files, s.disk, s.keys, s.goroutines, s.goroutinesBase, s.goroutines-s.goroutinesBase)
	}
	notes := []string{
		fmt.Sprintf("Channels, clean sync: an office (secured network, loopback TCP) gets the routed schema, enrols and grants the two laptops (one granted %s, one granted all %d channels), then imports %d contacts through its router in %s (Router.Import: split by channel, one Store.ImportStream per channel; %s). Once its first digest is built, each laptop runs node.CleanSync with the office as its only peer (as `ferry clean-sync` does: a snapshot copy of the office's everyone store and of the channels the laptop may hold over /ferry/snapshot/2.0.0, then the node starts, connects and exchanges heads; CleanSync returns when the everyone store's heads equal the office's), one after the other. "+
			"The laptop is then restarted with network on and no peer, and must hold exactly its channels (Router.Held; and no key under /ferry/ch/ of another channel) with, in the everyone store and in each of its channels, the office's heads and contacts (digest of the visible contacts, as the cleansync benchmark compares the full copy); had it not, it would have been restarted with the office as its peer and the time to converge added (a cell says so when that happened). Time: CleanSync's own Took (from the call until the heads are equal) plus that. Disk: the stopped laptop's store once datadir.GC.Reclaim (what node.Compact runs to free the disk: badger's LSM tree flattened into one level, then value-log GC rounds) has run on it, apparent bytes of its files; the data dir as the node left it is beside it (an info row): badger's value log then still holds the write-ahead copy of what the snapshot wrote unless the node's own value-log GC ran before it stopped, so that size depends on timing. Bytes received: what the office's bandwidth counter (ferry_peer_sent_bytes_total) says it sent to the laptop's peer id, the snapshot's short-lived host included.",
			e.editedChannel(), c.channels, n, fmtDur(importTook), fmtRate(rate(n, importTook), "records/s")),
		"Channels, clean sync, per laptop: " + syncNote(one) + ". " + syncNote(all) + ".",
		fmt.Sprintf("Channels, clean sync, the office's store (stopped): %s; keys: %s.", officeDisk, officeKeys),
		tablesNote,
	}
	if flat != nil {
		notes = append(notes, fmt.Sprintf("Channels, clean sync baseline (info rows): another office gets the unrouted schema and the same %d contacts (Store.Import into its everyone store, %s), and a fresh laptop clean-syncs from it the same way (checked the same way, on the everyone store). %s.",
			n, fmtDur(flatImport), syncNote(*flat)))
	}
	return result{rows: rows, notes: notes}
}

// reclaimedCell is the store of a laptop after Reclaim.
func reclaimedCell(s chanSync) string {
	t := s.reclaimed.total()
	return fmt.Sprintf("%s (*.vlog %s, *.sst %s)", fmtBytes(t.bytes), fmtBytes(s.reclaimed.vlog.bytes), fmtBytes(s.reclaimed.sst.bytes))
}

// chanPropagationResult makes the propagation rows and notes: runs[0] is
// the unrouted baseline; the office held nBase contacts, nMine of them in
// channel ch, and m edits were measured.
func (e *env) chanPropagationResult(runs []chanPropRun, ch string, nBase, nMine, m int) result {
	c := e.cfg
	fl := runs[0]
	cell := func(r chanPropRun, d time.Duration) string {
		s := fmtDur(d)
		if r.two.late > 0 {
			s += fmt.Sprintf(" (%d of %d not seen within %s)", r.two.late, m, propEditTimeout)
		}
		return s
	}
	var rows []row
	for _, r := range runs[1:] {
		who, kind := fmt.Sprintf("laptops granted all %d", c.channels), "channels"
		switch r.label {
		case "routed-one":
			who = "laptops granted " + ch + " only"
		case "routed-all-reconnected":
			who += "; diagnostic: each laptop reconnected to the office once it held its channels"
			kind = "channels (info)"
		}
		for _, pct := range []float64{50, 99} {
			rows = append(rows, row{
				fmt.Sprintf("%s: propagation laptop1 → office → laptop2, p%.0f (%d single-field Puts into %s; office holding %d channels, %s)", kind, pct, m, ch, c.channels, who),
				cell(r, r.two.p(pct)), cell(fl, fl.two.p(pct)) + " (unrouted schema, one store)", fmtRatio(float64(r.two.p(pct)), float64(fl.two.p(pct)))})
		}
	}
	var parts []string
	for _, r := range runs {
		parts = append(parts, fmt.Sprintf("%s: laptop1 → office → laptop2 %s; laptop1 → office %s; the Put call p50 %s; bulk block-sync catch-ups during the measured edits (\"%s\" logged): office %d, laptop2 %d; the measured edits took %s; the process ran %d goroutines during them, %d with the office alone (office holding %s, laptops %s)",
			r.label, r.two, r.one, fmtDur(r.put.p(50)), bulkLogged, r.bulkOffice, r.bulkL2, fmtDur(r.took), r.goroutines, r.goroutinesOffice, heldCell(r.officeHeld), heldCell(r.l2Held)))
		if len(r.stalls) > 0 {
			parts[len(parts)-1] += fmt.Sprintf("; WARNING: %d edits not seen within %s (%s)", len(r.stalls), propEditTimeout, strings.Join(r.stalls, "; "))
		}
	}
	notes := []string{
		fmt.Sprintf("Channels, propagation: as the propagation benchmark (an office and two laptops on loopback TCP; each laptop dials only the office and listens on no address, checked after every edit; %d warm-up edits, then %d measured single-field Puts on laptop1, one at a time, at least %s apart, each timed from the Put call until laptop2 shows the new value, polled every %s), once per setup, one after the other, each on new nodes: flat, the baseline: the unrouted schema, %d contacts in the everyone store; routed-all: the routed schema, the same %d contacts, %d per channel, the office holding all %d channels and both laptops granted all of them (they learn their grants from the office once connected, then open their channels, as a laptop does in the session in which it is granted them); routed-one (--channels-propagation-one): the same, both laptops granted %s only; routed-all-reconnected (--channels-propagation-reconnect, a diagnostic): as routed-all, but each laptop closes its connection to the office once it holds its channels and waits until peering has dialled again (as after a restart: the channels are then open before the connection is), before the warm-up edits. Bulk catch-ups counted: a node logs \"%s\" (node/flow.go) when a heads exchange brought a head whose blocks it lacked and it fetched them over block sync, i.e. when bitswap had not brought them first. The edits are the same in each run: random contacts of channel %s (%d contacts), random field among first_name, phone, stage, amount, active (never the territory, so no record moves), written through laptop1's router (Router.Put, what the API does). The new value is read from the store that holds the record (the everyone store, or channel %s's store) on the office and on laptop2, not through the router, so a poll costs the same in every run. Final state checked on all three nodes.",
			propWarmup, m, propSpacing, propPoll, nBase, nBase, c.channelsPropContacts, c.channels, ch, bulkLogged, ch, nMine, ch),
		"Channels, propagation runs: " + strings.Join(parts, ". ") + ".",
	}
	return result{rows: rows, notes: notes}
}

// chanCatchupResult makes the catch-up rows and notes: offices[0] is the
// unrouted one, offices[1] the routed one; runs are their fresh laptops',
// by label. The offices held nBase contacts, nMine of them in channel ch,
// and wrote nEdits edits; the process ran goroutinesBoth goroutines with
// both up.
func (e *env) chanCatchupResult(offices []*chanCatchOffice, runs map[string][]chanFresh, ch string, nBase, nMine, nEdits, goroutinesBoth int) result {
	c := e.cfg
	med := func(rs []chanFresh) chanFresh {
		s := slices.Clone(rs)
		slices.SortFunc(s, func(a, b chanFresh) int { return int(a.took - b.took) })
		return s[(len(s)-1)/2]
	}
	fm, rm := med(runs["flat"]), med(runs["routed"])
	list := func(rs []chanFresh) string {
		var p []string
		for _, r := range rs {
			p = append(p, fmt.Sprintf("%s (+%d goroutines; first heads of %s after %s)", fmtDur(r.took), r.goroutines, r.firstStore, fmtDur(r.first)))
		}
		return strings.Join(p, ", ")
	}
	rows := []row{
		{fmt.Sprintf("channels: fresh laptop catch-up on %d single-field edits in %s (granted %s; office holding %d channels, %d contacts each), median of %d", nEdits, ch, ch, c.channels, c.channelsCatchupContacts, len(runs["routed"])),
			fmtDur(rm.took), fmtDur(fm.took) + " (unrouted schema, one store, same edits)", fmtRatio(float64(rm.took), float64(fm.took))},
		{"channels (info): writing those edits on the office (Router.Put, one delta and one fsync each)",
			fmt.Sprintf("%s (%s)", fmtDur(offices[1].write), fmtRate(rate(nEdits, offices[1].write), "edits/s")),
			fmt.Sprintf("%s (%s, unrouted)", fmtDur(offices[0].write), fmtRate(rate(nEdits, offices[0].write), "edits/s")),
			fmtRatio(float64(offices[1].write), float64(offices[0].write))},
		{fmt.Sprintf("channels (info): reading an edited contact on the office through its router (Router.Get, median of %d), %d channels vs unrouted", chanGetPasses*nMine, c.channels),
			fmt.Sprintf("%s (from the %s store itself: %s)", fmtDur(offices[1].getRouter), ch, fmtDur(offices[1].getStore)),
			fmt.Sprintf("%s (unrouted; from the everyone store itself: %s)", fmtDur(offices[0].getRouter), fmtDur(offices[0].getStore)),
			fmtRatio(float64(offices[1].getRouter), float64(offices[0].getRouter))},
	}
	notes := []string{
		fmt.Sprintf("Channels, catch-up: two offices on loopback TCP, both up for the whole part: one with the routed schema (%d channels), one unrouted; each enrols its fresh laptops (routed: granted %s), imports the same %d contacts (%d per channel) and then writes the same %d single-field edits with Router.Put (one delta each), on random contacts of channel %s (%d contacts; random field among first_name, phone, stage, amount, active); each office's final state is checked against the expected one. "+
			"Then, %d rounds, each starting a fresh laptop of the unrouted office and then one of the routed office, with that office as its only peer: timed from node.Start until it holds, in the everyone store and (routed) in channel %s, the office's heads with nothing queued and the office's contacts (digest; polled every %s, contacts compared once the heads are equal), then closed. The routed laptop first merges the everyone store (schema, members, grants), then opens %s and catches up on it over the channel's own protocols (/ferry/ch/%s/…). Median of the rounds in the row; every round, with the goroutines the laptop added to the process when it had caught up and when the first of its stores showed the office's heads: unrouted %s; routed %s. The process ran %d goroutines with both offices up and no laptop.",
			c.channels, ch, nBase, c.channelsCatchupContacts, nEdits, ch, nMine, c.channelsCatchupRounds, ch, pollEvery, ch, ch, list(runs["flat"]), list(runs["routed"]), goroutinesBoth),
	}
	return result{rows: rows, notes: notes}
}

// heldCell names the channels held ("none": the everyone store only).
func heldCell(held []string) string {
	if len(held) == 0 {
		return "no channel"
	}
	return strings.Join(held, ",")
}
