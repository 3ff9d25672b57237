package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/schema"
)

// The channels benchmark (channels.go), part 1: clean sync of a laptop
// granted one channel, against one granted all.

// chanSync is one clean sync of a laptop, measured.
type chanSync struct {
	name     string
	channels []string // held (nil: unrouted)
	res      node.CleanSyncResult
	wall     time.Duration // CleanSync's call until it returned
	// extra: the time the laptop took, restarted with the office as its
	// peer, to reach the office's state when the snapshot had not brought
	// all of it (0: it had).
	extra      time.Duration
	phases     *syncPhases
	sent, recv int64 // by the office to and from it
	disk       storeSizes
	dir        sizes
	keys       chanKeys
	// reclaimed is the store after datadir.GC.Reclaim of the stopped
	// data dir (what node.Compact runs to free the disk), gc what it did.
	reclaimed      storeSizes
	gc             datadir.GCResult
	contacts       int
	goroutines     int // the process's, with the restarted laptop and the office up
	goroutinesBase int // the process's with only the office up
}

// took is the time until the laptop held its channels' state.
func (s chanSync) took() time.Duration { return s.res.Took + s.extra }

// chanCleanSync: an office holding the routed contacts; fresh laptops
// granted one channel and every channel clean-sync from it, one after the
// other; then, for information, an office holding the same contacts
// unrouted and a fresh laptop clean-syncing from it.
func (e *env) chanCleanSync(ctx context.Context, routed, flat *schema.Schema) (res result, err error) {
	c := e.cfg
	recs := e.chanContacts(c.channelsRecords, c.channels)
	all := chanNames(c.channels)
	one := []string{e.editedChannel()}
	lapOne := chanNode{spec: nodeSpec{name: "chan-cs-laptop-one", network: true, founder: "chan-cs-office"}, channels: one}
	lapAll := chanNode{spec: nodeSpec{name: "chan-cs-laptop-all", network: true, founder: "chan-cs-office"}, channels: all}

	e.progress("channels: clean sync: office imports %d contacts routed into %d channels", len(recs), c.channels)
	office, importTook, err := e.chanFilledOffice(ctx, "chan-cs-office", routed, recs, []chanNode{lapOne, lapAll})
	if err != nil {
		return res, err
	}
	defer closeNode(office, &err)
	e.progress("channels: clean sync: office imported in %s (%s); %d goroutines in the process", fmtDur(importTook), fmtRate(rate(len(recs), importTook), "records/s"), runtime.NumGoroutine())

	one1, err := e.chanCleanSyncOne(ctx, office, lapOne)
	if err != nil {
		return res, err
	}
	allN, err := e.chanCleanSyncOne(ctx, office, lapAll)
	if err != nil {
		return res, err
	}
	purge, err := e.chanPurge(ctx, office, lapOne, recs)
	if err != nil {
		return res, err
	}
	officeDir := filepath.Join(e.root, "chan-cs-office")
	if err := office.Close(); err != nil {
		return res, err
	}
	officeKeys, err := countChanKeys(ctx, officeDir)
	if err != nil {
		return res, err
	}
	officeDisk, err := storeSize(filepath.Join(officeDir, datadir.StoreDir))
	if err != nil {
		return res, err
	}

	var flatRun *chanSync
	var flatImport time.Duration
	if c.channelsFlatCleanSync {
		lapFlat := chanNode{spec: nodeSpec{name: "chan-cs-laptop-flat", network: true, founder: "chan-cs-flat-office"}}
		e.progress("channels: clean sync (info): another office imports the same %d contacts unrouted", len(recs))
		fo, took, err := e.chanFilledOffice(ctx, "chan-cs-flat-office", flat, recs, []chanNode{lapFlat})
		if err != nil {
			return res, err
		}
		defer closeNode(fo, &err)
		flatImport = took
		e.progress("channels: clean sync (info): unrouted office imported in %s", fmtDur(took))
		r, err := e.chanCleanSyncOne(ctx, fo, lapFlat)
		if err != nil {
			return res, err
		}
		flatRun = &r
		if err := fo.Close(); err != nil {
			return res, err
		}
	}
	res = e.chanCleanSyncResult(len(recs), importTook, flatImport, one1, allN, flatRun, officeKeys, officeDisk)
	res.rows = append(res.rows, purge.rows()...)
	res.notes = append(res.notes, purge.note(lapOne.spec.name))
	return res, nil
}

// chanFilledOffice starts an office (startChanOffice) and imports recs
// through its router (routed: split by channel); it returns the running
// office and the import's time.
func (e *env) chanFilledOffice(ctx context.Context, name string, sc *schema.Schema, recs []crdt.ImportRecord, laptops []chanNode) (_ *node.Node, took time.Duration, err error) {
	office, err := e.startChanOffice(ctx, name, sc, laptops, nil)
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		if err != nil {
			_ = office.Close()
		}
	}()
	stop := e.profile(name + "-import")
	t0 := time.Now()
	if _, err := office.Store().Import(ctx, contactsCollection, cloneRecords(recs), nil); err != nil {
		stop()
		return nil, 0, fmt.Errorf("import %d contacts on %s: %w", len(recs), name, err)
	}
	took = time.Since(t0)
	stop()
	n := 0
	if err := office.Store().List(ctx, contactsCollection, func(*crdt.Record) error { n++; return nil }); err != nil {
		return nil, 0, err
	}
	if n != len(recs) {
		return nil, 0, fmt.Errorf("%s lists %d contacts after the import, want %d (holds %v)", name, n, len(recs), office.Store().Held())
	}
	if err := waitDigest(ctx, office); err != nil {
		return nil, 0, fmt.Errorf("office digest: %w", err)
	}
	return office, took, nil
}

// chanCleanSyncOne clean-syncs a fresh laptop from office, then restarts
// it with network on and no peer to check that it holds the office's state
// of its channels (heads and contacts); if it does not, it is started
// again with the office as its peer and the time it takes to get there is
// added. Its data dir is measured stopped.
func (e *env) chanCleanSyncOne(ctx context.Context, office *node.Node, lap chanNode) (r chanSync, err error) {
	c := e.cfg
	r.name, r.channels = lap.spec.name, lap.channels
	if len(lap.channels) == 0 {
		r.channels = nil
	}
	label := fmt.Sprintf("%s (granted %s)", lap.spec.name, strings.Join(lap.channels, ","))
	if r.channels == nil {
		label = lap.spec.name + " (unrouted)"
	}
	e.progress("channels: clean sync of %s", label)
	routedOffice := len(office.Store().Held()) > 0
	runtime.GC()
	r.goroutinesBase = runtime.NumGoroutine()
	spec := lap.spec
	spec.peers = office.Addrs()[:1]
	cfg, err := e.chanConfig(chanNode{spec: spec, channels: lap.channels})
	if err != nil {
		return r, err
	}
	cctx, cancel := context.WithTimeout(ctx, c.cleanTimeout)
	defer cancel()
	r.phases = e.watchPhases("channels: " + lap.spec.name)
	stop := e.profile(lap.spec.name)
	r.phases.start = time.Now()
	r.res, err = node.CleanSync(cctx, cfg, false, r.phases.progress)
	r.wall = time.Since(r.phases.start)
	stop()
	if err != nil {
		return r, fmt.Errorf("clean sync of %s: %w", lap.spec.name, err)
	}
	e.progress("channels: %s: clean sync done in %s (returned after %s): snapshot of %d entries, %s, then %d blocks",
		lap.spec.name, fmtDur(r.res.Took), fmtDur(r.wall), r.res.Entries, fmtBytes(r.res.Bytes), r.res.Blocks)
	id, err := e.peerID(lap.spec.name)
	if err != nil {
		return r, err
	}
	if r.sent, r.recv, err = peerBytes(ctx, office, id); err != nil {
		return r, err
	}

	// The check: restarted alone, does it hold the office's state?
	check := func(peers bool) (ok bool, status string, err error) {
		s := lap.spec
		if peers {
			s.peers = office.Addrs()[:1]
		}
		l, err := e.startChanNode(ctx, chanNode{spec: s, channels: lap.channels})
		if err != nil {
			return false, "", err
		}
		defer closeNode(l, &err)
		if routedOffice {
			if err := waitHeld(ctx, l, lap.channels); err != nil {
				return false, "", err
			}
		}
		if peers {
			t1 := time.Now()
			if err := waitChanConverged(ctx, office, []*node.Node{l}, r.channels); err != nil {
				return false, "", err
			}
			r.extra = time.Since(t1)
		}
		r.goroutines = runtime.NumGoroutine()
		ok, status, r.contacts, err = chanCompare(ctx, office, l, r.channels, true)
		return ok, status, err
	}
	ok, status, err := check(false)
	if err != nil {
		return r, err
	}
	if !ok {
		e.progress("channels: %s: restarted without a peer, it does not hold the office's state (%s): started again with the office as its peer", lap.spec.name, status)
		if ok, status, err = check(true); err != nil {
			return r, err
		} else if !ok {
			return r, fmt.Errorf("%s: not the office's state after clean sync: %s", lap.spec.name, status)
		}
		e.progress("channels: %s: it took %s more to converge", lap.spec.name, fmtDur(r.extra))
	}
	dir := filepath.Join(e.root, lap.spec.name)
	if r.dir, err = dirSize(dir); err != nil {
		return r, err
	}
	if r.disk, err = storeSize(filepath.Join(dir, datadir.StoreDir)); err != nil {
		return r, err
	}
	if r.keys, err = countChanKeys(ctx, dir); err != nil {
		return r, err
	}
	if held := r.keys.channels(); r.channels != nil && !slices.Equal(held, slices.Sorted(slices.Values(r.channels))) {
		return r, fmt.Errorf("%s has keys of channels %v, granted %v", lap.spec.name, held, r.channels)
	}
	// Where the bytes go: the same store once badger's value log is
	// collected.
	if r.gc, _, _, err = e.reclaimStopped(ctx, dir); err != nil {
		return r, fmt.Errorf("%s: reclaim: %w", lap.spec.name, err)
	}
	if r.reclaimed, err = storeSize(filepath.Join(dir, datadir.StoreDir)); err != nil {
		return r, err
	}
	e.progress("channels: %s: holds the office's state (%s); data dir %s; store %s; keys %s; after Reclaim %s",
		lap.spec.name, status, fmtBytes(r.dir.bytes), r.disk, r.keys, r.reclaimed)
	return r, nil
}
