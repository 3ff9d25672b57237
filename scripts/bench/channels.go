package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/schema"
)

// Channels (issue 14, docs/design/channels.md): a collection routed by a
// field keeps each record in the channel the field names, each channel its
// own go-ds-crdt store with its own blocks and protocols; an office holds
// every channel, a laptop the channels granted to it. benchChannels
// measures the targets against baselines measured in the same run:
//
//  1. clean sync: a laptop granted 1 of N channels against one granted all
//     N, both from one office holding the routed contacts (time until it
//     holds its channels' state, disk, bytes received); for information,
//     the laptop granted all N against the unrouted full copy;
//  2. propagation laptop1 → office → laptop2 of single-field Puts into one
//     channel, office holding N channels (laptops granted all, or only
//     that one; and, a diagnostic, laptops that reconnected once they held
//     their channels), against the same with the schema unrouted (one
//     store);
//  3. catch-up of a fresh laptop granted one channel on single-field
//     edits the office made in that channel, against the same unrouted;
//     for information, the office's Router.Put and Router.Get with N
//     channels against unrouted.
//
// The schema is the benchmark's (crm.yaml) with contacts given a field
// territory (enum t0..t<N-1>); routed: channel: {field: territory,
// default: t0}; unrouted: the same field, no routing. Contact c<i> gets
// territory t<i mod N>.

// chanField is the routing field added to contacts.
const chanField = "territory"

const (
	// chanSettle bounds the waits for nodes to connect, take their
	// channels and converge before a measurement.
	chanSettle = 2 * time.Minute
	// chanEditedIndex is the channel the propagation and catch-up edits
	// go into (t3, or the last one with fewer channels).
	chanEditedIndex = 3
)

// chanName is the i-th channel (and territory value).
func chanName(i int) string { return "t" + strconv.Itoa(i) }

// chanNames are channels t0..t<n-1>.
func chanNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = chanName(i)
	}
	return out
}

// editedChannel is the channel the propagation and catch-up edits go into.
func (e *env) editedChannel() string {
	return chanName(min(chanEditedIndex, e.cfg.channels-1))
}

// chanSchemas returns the benchmark schema with the field territory (enum
// t0..t<n-1>) added to contacts: routed by it (channel: {field:
// territory, default: t0}: the default is a channel of the enum, so that
// the network has exactly n channels and no "unassigned" one) and not
// routed.
func (e *env) chanSchemas(n int) (routed, flat *schema.Schema, err error) {
	build := func(route bool) (*schema.Schema, error) {
		sc, err := schema.Parse(e.schema)
		if err != nil {
			return nil, fmt.Errorf("parse schema: %w", err)
		}
		c := sc.Collections[contactsCollection]
		if c == nil {
			return nil, fmt.Errorf("channels: the schema has no collection %s", contactsCollection)
		}
		if c.Fields[chanField] != nil {
			return nil, fmt.Errorf("channels: %s has a field %s already", contactsCollection, chanField)
		}
		c.Fields[chanField] = &schema.Field{Type: schema.TypeEnum, Values: chanNames(n)}
		if route {
			c.Channel = &schema.Routing{Field: chanField, Default: chanName(0)}
		}
		if err := sc.Validate(); err != nil {
			return nil, fmt.Errorf("channels: schema with %s: %w", chanField, err)
		}
		return sc, nil
	}
	if routed, err = build(true); err != nil {
		return nil, nil, err
	}
	flat, err = build(false)
	return routed, flat, err
}

// chanContacts returns contacts c0..c(n-1), contact c<i> with territory
// t<i mod channels>.
func (e *env) chanContacts(n, channels int) []crdt.ImportRecord {
	recs := e.contacts(n)
	for i := range recs {
		recs[i].Fields[chanField] = chanName(i % channels)
	}
	return recs
}

// inChannel returns the records of recs whose territory is ch.
func inChannel(recs []crdt.ImportRecord, ch string) []crdt.ImportRecord {
	var out []crdt.ImportRecord
	for _, r := range recs {
		if r.Fields[chanField] == ch {
			out = append(out, r)
		}
	}
	return out
}

// stateOf is the expected state of recs (their fields), with want (the
// final state of the edited records) over it.
func stateOf(recs []crdt.ImportRecord, want map[string]map[string]any) map[string]map[string]any {
	out := make(map[string]map[string]any, len(recs))
	for _, r := range recs {
		if w, ok := want[r.ID]; ok {
			out[r.ID] = w
			continue
		}
		m := make(map[string]any, len(r.Fields))
		for k, v := range r.Fields {
			m[k] = v
		}
		out[r.ID] = m
	}
	return out
}

// chanNode is one node of a channels setup.
type chanNode struct {
	spec nodeSpec
	// channels are granted to it (a laptop; in an open network, its
	// subscription: open networks have no grants).
	channels []string
}

// startChanNode starts a node of a channels setup (see chanNode).
func (e *env) startChanNode(ctx context.Context, cn chanNode) (*node.Node, error) {
	cfg, err := e.chanConfig(cn)
	if err != nil {
		return nil, err
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start node %s: %w", cn.spec.name, err)
	}
	return n, nil
}

// chanConfig is nodeConfig, with the laptop's subscription in an open
// network.
func (e *env) chanConfig(cn chanNode) (node.Config, error) {
	cfg, err := e.nodeConfig(cn.spec)
	if err != nil {
		return cfg, err
	}
	if !e.cfg.secured && cn.channels != nil && cfg.Role != node.RoleOffice {
		cfg.Channels = slices.Clone(cn.channels)
	}
	return cfg, nil
}

// startChanOffice starts an office on the network (loopback, no peer),
// applies sc, enrols the laptops and grants them their channels (secured
// networks), in that order, before anything else is written.
func (e *env) startChanOffice(ctx context.Context, name string, sc *schema.Schema, laptops []chanNode, logger *slog.Logger) (_ *node.Node, err error) {
	// Network on even while it is alone: a node started without network
	// does not add the channel stores it opens to its router (see
	// node/channels.go openChannelLocked), so it would not show them.
	office, err := e.startChanNode(ctx, chanNode{spec: nodeSpec{name: name, network: true, role: node.RoleOffice, peerExchange: propExchange, logger: logger}})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = office.Close()
		}
	}()
	if _, err := office.Store().ApplySchema(ctx, sc); err != nil {
		return nil, fmt.Errorf("apply schema on %s: %w", name, err)
	}
	for _, l := range laptops {
		if err := e.enrol(ctx, office, l.spec.name); err != nil {
			return nil, err
		}
		if !e.cfg.secured || len(l.channels) == 0 {
			continue
		}
		id, err := e.peerID(l.spec.name)
		if err != nil {
			return nil, err
		}
		if err := office.Store().Everyone().Grant(ctx, id.String(), l.channels...); err != nil {
			return nil, fmt.Errorf("grant %v to %s: %w", l.channels, l.spec.name, err)
		}
	}
	return office, nil
}

// waitHeld waits until the router of n holds exactly the channels named.
func waitHeld(ctx context.Context, n *node.Node, channels []string) error {
	want := slices.Sorted(slices.Values(channels))
	err := waitFor(ctx, chanSettle, func() bool { return slices.Equal(n.Store().Held(), want) })
	if err != nil {
		return fmt.Errorf("%s holds channels %v, want %v: %w", n.Config().Name, n.Store().Held(), want, err)
	}
	return nil
}

// storePair is one store of two nodes, compared.
type storePair struct {
	what       string // "everyone" or the channel's name
	a, b       *crdt.Store
	compareRec bool // holds the contacts: compare them too
}

// chanPairs returns the stores of a and b to compare: the everyone store
// (its contacts too when unrouted) and the channels named. A store b does
// not hold yet is nil.
func chanPairs(a, b *node.Node, channels []string) []storePair {
	out := []storePair{{"everyone", a.Store().Everyone(), b.Store().Everyone(), len(channels) == 0}}
	for _, c := range channels {
		out = append(out, storePair{c, a.Store().Channel(c), b.Store().Channel(c), true})
	}
	return out
}

// chanConverged reports whether b shows a's state in the everyone store
// and in the channels named (nil: the contacts are in the everyone store):
// same heads, nothing queued on b and, once the heads are equal (or detail
// is asked for), the same contacts.
func chanConverged(ctx context.Context, a, b *node.Node, channels []string, detail bool) (bool, string, error) {
	ok, status, _, err := chanCompare(ctx, a, b, channels, detail)
	return ok, status, err
}

// chanCompare is chanConverged, also returning the contacts b lists in the
// stores compared (0 when they were not listed).
func chanCompare(ctx context.Context, a, b *node.Node, channels []string, detail bool) (_ bool, _ string, contacts int, _ error) {
	pairs := chanPairs(a, b, channels)
	var parts []string
	all := true
	for _, p := range pairs {
		if p.a == nil {
			return false, "", 0, fmt.Errorf("%s does not hold %s", a.Config().Name, p.what)
		}
		if p.b == nil {
			all = false
			parts = append(parts, p.what+": not held yet")
			continue
		}
		sa, sb := p.a.Stats(ctx), p.b.Stats(ctx)
		eq := slices.Equal(sortedHeads(sa.Heads), sortedHeads(sb.Heads)) && sb.QueuedJobs == 0
		all = all && eq
		if !eq || detail {
			parts = append(parts, fmt.Sprintf("%s: heads equal %v, height %d/%d, queued %d", p.what, eq, sb.MaxHeight, sa.MaxHeight, sb.QueuedJobs))
		}
	}
	if !all && !detail {
		return false, strings.Join(parts, "; "), 0, nil
	}
	for _, p := range pairs {
		if !p.compareRec || p.b == nil {
			continue
		}
		da, na, err := digestContacts(ctx, p.a)
		if err != nil {
			return false, "", 0, err
		}
		db, nb, err := digestContacts(ctx, p.b)
		if err != nil {
			return false, "", 0, err
		}
		if da != db {
			all = false
		}
		contacts += nb
		parts = append(parts, fmt.Sprintf("%s: %d/%d contacts, digest equal %v", p.what, nb, na, da == db))
	}
	return all, strings.Join(parts, "; "), contacts, nil
}

// waitChanConverged waits until every node of others shows the office's
// state (chanConverged) in the channels named.
func waitChanConverged(ctx context.Context, office *node.Node, others []*node.Node, channels []string) error {
	status := ""
	err := waitFor(ctx, chanSettle, func() bool {
		for _, n := range others {
			ok, st, err := chanConverged(ctx, office, n, channels, false)
			if err != nil || !ok {
				status = n.Config().Name + ": " + st
				if err != nil {
					status += " (" + err.Error() + ")"
				}
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("nodes did not converge: %s: %w", status, err)
	}
	return nil
}

// benchChannels runs the three parts and assembles their rows.
func (e *env) benchChannels(ctx context.Context) (res result, err error) {
	c := e.cfg
	routed, flat, err := e.chanSchemas(c.channels)
	if err != nil {
		return res, err
	}
	notes := []string{fmt.Sprintf("Channels (issue 14): the benchmark schema (crm.yaml) with a field territory added to contacts, `{type: enum, values: [t0 … t%d]}`; routed: `channel: {field: territory, default: t0}` on contacts (the default is one of the %d channels, so that the network has exactly %d and no `unassigned` one); unrouted (every baseline but the clean sync's): the same field, no routing, so the same records in one store. Contact c<i> (the i-th line of gen_records.py's output) gets territory t<i mod %d>, so each channel holds every %d-th contact. Laptops are enrolled (Store.AddMember) and, routed, granted their channels (Store.Grant on the office's everyone store, what `ferry grant` does) before anything else is written. Offices always run with network on (loopback TCP, no peer until the laptops dial them): a node started without network does not show its channels. The machine is shared (2 cores, other engineers' work beside this run): times are rough, ratios of runs measured back to back less so.",
		c.channels-1, c.channels, c.channels, c.channels, c.channels)}
	var rows []row
	cs, err := e.chanCleanSync(ctx, routed, flat)
	if err != nil {
		return res, fmt.Errorf("clean sync: %w", err)
	}
	rows, notes = append(rows, cs.rows...), append(notes, cs.notes...)
	pr, err := e.chanPropagation(ctx, routed, flat)
	if err != nil {
		return res, fmt.Errorf("propagation: %w", err)
	}
	rows, notes = append(rows, pr.rows...), append(notes, pr.notes...)
	cu, err := e.chanCatchup(ctx, routed, flat)
	if err != nil {
		return res, fmt.Errorf("catch-up: %w", err)
	}
	rows, notes = append(rows, cu.rows...), append(notes, cu.notes...)
	return result{rows: rows, notes: notes}, nil
}

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
	phases     map[string]time.Duration
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
	return e.chanCleanSyncResult(len(recs), importTook, flatImport, one1, allN, flatRun, officeKeys, officeDisk), nil
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
	// Let the first digest (built at start) finish: it must not compete
	// with what is measured next.
	if err := waitFor(ctx, 5*time.Minute, func() bool { return office.Status(ctx).Digest != "" }); err != nil {
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
	r.phases = map[string]time.Duration{}
	lastPhase, lastReport := "", time.Now()
	stop := e.profile(lap.spec.name)
	t0 := time.Now()
	r.res, err = node.CleanSync(cctx, cfg, false, func(p node.CleanSyncProgress) {
		if p.Phase != lastPhase {
			r.phases[p.Phase] = time.Since(t0)
			lastPhase = p.Phase
		}
		if time.Since(lastReport) >= progressEvery {
			lastReport = time.Now()
			e.progress("channels: %s: %s: %d entries, %s copied; %d blocks fetched", lap.spec.name, p.Phase, p.Entries, fmtBytes(p.CopyBytes), p.Blocks)
		}
	})
	r.wall = time.Since(t0)
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

// chanKeys counts a stopped data dir's keys and their bytes (key + value)
// by where they belong: the everyone store, each channel, the node's own.
type chanKeys struct {
	everyone, local keyAgg
	perChannel      map[string]*keyAgg
}

func (k chanKeys) channels() []string {
	out := make([]string, 0, len(k.perChannel))
	for c := range k.perChannel {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// channelTotal sums the channels' keys.
func (k chanKeys) channelTotal() keyAgg {
	var t keyAgg
	for _, a := range k.perChannel {
		t.count += a.count
		t.keys += a.keys
		t.value += a.value
	}
	return t
}

func (k chanKeys) String() string {
	fa := func(a keyAgg) string { return fmt.Sprintf("%d keys, %s", a.count, fmtBytes(a.keys+a.value)) }
	s := "everyone store " + fa(k.everyone)
	if len(k.perChannel) > 0 {
		s += fmt.Sprintf(", %d channels %s", len(k.perChannel), fa(k.channelTotal()))
	}
	return s + ", local " + fa(k.local)
}

// countChanKeys reads every key of a stopped node's store.
func countChanKeys(ctx context.Context, dir string) (k chanKeys, err error) {
	d, err := datadir.OpenStore(dir)
	if err != nil {
		return k, err
	}
	defer closeDatastore(d, &err)
	res, err := d.Query(ctx, query.Query{KeysOnly: true, ReturnsSizes: true})
	if err != nil {
		return k, err
	}
	defer res.Close()
	k.perChannel = map[string]*keyAgg{}
	for r := range res.Next() {
		if r.Error != nil {
			return k, r.Error
		}
		a := &k.everyone
		switch {
		case strings.HasPrefix(r.Key, "/ferry/ch/"):
			name, _, _ := strings.Cut(strings.TrimPrefix(r.Key, "/ferry/ch/"), "/")
			if a = k.perChannel[name]; a == nil {
				a = &keyAgg{}
				k.perChannel[name] = a
			}
		case strings.HasPrefix(r.Key, "/ferry/local/"):
			a = &k.local
		}
		a.count++
		a.keys += int64(len(r.Key))
		a.value += int64(r.Size)
	}
	return k, nil
}

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
	phaseNote := func(s chanSync) string {
		var parts []string
		for _, p := range []string{"copying", "connecting", "fetching", "merging"} {
			if d, ok := s.phases[p]; ok {
				parts = append(parts, fmt.Sprintf("%s from %s", p, fmtDur(d)))
			}
		}
		return strings.Join(parts, ", ")
	}
	syncNote := func(s chanSync) string {
		return fmt.Sprintf("%s: took %s (phases: %s; CleanSync returned after %s, the fresh node's shutdown included), snapshot %d entries %s, then %d blocks; data dir %s in %d files (store %s); keys: %s; the process ran %d goroutines with the restarted laptop and the office up, %d with the office alone (laptop: %+d)",
			s.name, fmtDur(s.took()), phaseNote(s), fmtDur(s.wall), s.res.Entries, fmtBytes(s.res.Bytes), s.res.Blocks, fmtBytes(s.dir.bytes), s.dir.files, s.disk, s.keys, s.goroutines, s.goroutinesBase, s.goroutines-s.goroutinesBase)
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

// chanPropRun is one propagation setup, measured.
type chanPropRun struct {
	label              string
	two, one, put      latencies
	took               time.Duration
	goroutines         int // the process's during the measured edits (three nodes)
	goroutinesOffice   int // the office alone
	stalls             []string
	officeHeld, l2Held []string
	// bulkOffice and bulkL2: bulk block-sync catch-ups ("caught up in
	// bulk") of the office and laptop2 during the measured edits.
	bulkOffice, bulkL2 int
}

// bulkLogged is what a node logs when it caught up in bulk over block
// sync (node/flow.go catchUpWith): a head it lacked came by the heads
// exchange, and the blocks by /ferry/blocks or /ferry/ch/<c>/blocks.
const bulkLogged = "caught up in bulk"

// logCount is a slog handler that counts one message (logged at Info or
// above) and passes on what its inner handler takes.
type logCount struct {
	msg string
	mu  sync.Mutex
	n   int
}

func (c *logCount) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *logCount) wrap(h slog.Handler) slog.Handler { return &logCountHandler{Handler: h, c: c} }

type logCountHandler struct {
	slog.Handler
	c *logCount
}

func (h *logCountHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.Handler.Enabled(ctx, l)
}

func (h *logCountHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.c.msg {
		h.c.mu.Lock()
		h.c.n++
		h.c.mu.Unlock()
	}
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h *logCountHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCountHandler{Handler: h.Handler.WithAttrs(as), c: h.c}
}

func (h *logCountHandler) WithGroup(name string) slog.Handler {
	return &logCountHandler{Handler: h.Handler.WithGroup(name), c: h.c}
}

// chanPropagation runs propagation on the unrouted schema (the baseline),
// then on the routed one with the laptops granted every channel, then
// (--channels-propagation-one) granted the edited channel only.
func (e *env) chanPropagation(ctx context.Context, routed, flat *schema.Schema) (res result, err error) {
	c := e.cfg
	ch := e.editedChannel()
	base := e.chanContacts(c.channelsPropContacts*c.channels, c.channels)
	mine := inChannel(base, ch)
	eds, want := edits(propWarmup+c.channelsPropEdits, mine, c.seed)
	wantAll := stateOf(base, want)

	type setup struct {
		label     string
		sc        *schema.Schema
		grants    []string
		reconnect bool
	}
	setups := []setup{{"flat", flat, nil, false}, {"routed-all", routed, chanNames(c.channels), false}}
	if c.channelsPropOne {
		setups = append(setups, setup{"routed-one", routed, []string{ch}, false})
	}
	if c.channelsPropReconnect {
		setups = append(setups, setup{"routed-all-reconnected", routed, chanNames(c.channels), true})
	}
	var runs []chanPropRun
	for _, s := range setups {
		r, err := e.chanPropRun(ctx, s.label, s.sc, s.grants, s.reconnect, base, eds, wantAll)
		if err != nil {
			return res, fmt.Errorf("%s: %w", s.label, err)
		}
		runs = append(runs, r)
	}
	fl := runs[0]
	m := len(eds) - propWarmup
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
			propWarmup, m, propSpacing, propPoll, len(base), len(base), c.channelsPropContacts, c.channels, ch, bulkLogged, ch, len(mine), ch),
		"Channels, propagation runs: " + strings.Join(parts, ". ") + ".",
	}
	return result{rows: rows, notes: notes}, nil
}

// chanPropRun is benchPropagation on one setup: schema sc, both laptops
// granted grants (nil: the schema is unrouted).
func (e *env) chanPropRun(ctx context.Context, label string, sc *schema.Schema, grants []string, reconnect bool, base []crdt.ImportRecord, eds []edit, want map[string]map[string]any) (r chanPropRun, err error) {
	r.label = label
	prefix := "chan-prop-" + label
	ch := e.editedChannel()
	bulkOffice, bulkL2 := &logCount{msg: bulkLogged}, &logCount{msg: bulkLogged}
	laps := []chanNode{
		{spec: nodeSpec{name: prefix + "-laptop1", network: true, noListen: true, peerExchange: propExchange, founder: prefix + "-office"}, channels: grants},
		{spec: nodeSpec{name: prefix + "-laptop2", network: true, noListen: true, peerExchange: propExchange, founder: prefix + "-office",
			logger: slog.New(bulkL2.wrap(e.log.Handler()))}, channels: grants},
	}
	e.progress("channels: propagation (%s): office and two laptops on loopback, laptops dial only the office", label)
	office, err := e.startChanOffice(ctx, prefix+"-office", sc, laps, slog.New(bulkOffice.wrap(e.log.Handler())))
	if err != nil {
		return r, err
	}
	defer closeNode(office, &err)
	if _, err := office.Store().Import(ctx, contactsCollection, cloneRecords(base), nil); err != nil {
		return r, err
	}
	if grants != nil {
		if err := waitHeld(ctx, office, chanNames(e.cfg.channels)); err != nil {
			return r, err
		}
	}
	r.officeHeld = office.Store().Held()
	runtime.GC()
	r.goroutinesOffice = runtime.NumGoroutine()
	var nodes [2]*node.Node
	var watches [2]*directWatch
	for i, l := range laps {
		l.spec.peers = office.Addrs()[:1]
		n, err := e.startChanNode(ctx, l)
		if err != nil {
			return r, err
		}
		defer closeNode(n, &err)
		w := &directWatch{office: office.ID()}
		n.Host().Network().Notify(&network.NotifyBundle{ConnectedF: w.connected})
		nodes[i], watches[i] = n, w
	}
	l1, l2 := nodes[0], nodes[1]
	checkDirect := func() error {
		for i, l := range nodes {
			if err := watches[i].check(l); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range nodes {
		if grants != nil {
			if err := waitHeld(ctx, n, grants); err != nil {
				return r, err
			}
		}
	}
	if reconnect {
		// The diagnostic run: each laptop drops its connection to the
		// office once it holds its channels; peering dials again at once.
		for _, n := range nodes {
			if err := n.Host().Network().ClosePeer(office.ID()); err != nil {
				return r, err
			}
		}
		if err := waitFor(ctx, chanSettle, func() bool {
			for _, n := range nodes {
				if n.Host().Network().Connectedness(office.ID()) != network.Connected {
					return false
				}
			}
			return true
		}); err != nil {
			return r, fmt.Errorf("laptops reconnecting: %w", err)
		}
	}
	t0 := time.Now()
	if err := waitChanConverged(ctx, office, nodes[:], grants); err != nil {
		return r, err
	}
	if err := checkDirect(); err != nil {
		return r, err
	}
	e.progress("channels: propagation (%s): %d contacts on all three nodes after %s (laptops hold %v); %d warm-up edits, then %d measured",
		label, len(base), fmtDur(time.Since(t0)), l2.Store().Held(), propWarmup, len(eds)-propWarmup)

	// The store holding the edited records, on a node.
	storeOf := func(n *node.Node) *crdt.Store {
		if grants == nil {
			return n.Store().Everyone()
		}
		return n.Store().Channel(ch)
	}
	shows := func(st *crdt.Store, ed edit) (bool, error) {
		rec, err := st.Get(ctx, contactsCollection, ed.ID)
		if err != nil {
			return false, err
		}
		return reflect.DeepEqual(rec.Fields[ed.Field].Value, ed.Value), nil
	}
	samples := make([]propSample, 0, len(eds)-propWarmup)
	stop := e.profile("channels-propagation-" + label)
	defer stop()
	tPhase := time.Now()
	for i, ed := range eds {
		if i == propWarmup {
			tPhase = time.Now()
			r.goroutines = runtime.NumGoroutine()
			r.bulkOffice, r.bulkL2 = -bulkOffice.get(), -bulkL2.get()
		}
		if m := i - propWarmup; m > 0 && m%100 == 0 {
			e.progress("channels: propagation (%s): %d edits measured", label, m)
		}
		var s propSample
		start := time.Now()
		if _, err := l1.Store().Put(ctx, contactsCollection, ed.ID, map[string]any{ed.Field: ed.Value}); err != nil {
			return r, fmt.Errorf("edit %d on laptop1: %w", i, err)
		}
		s.put = time.Since(start)
		seenO, seenL, late := false, false, false
		for !seenO || !seenL {
			if !seenO {
				if seenO, err = shows(storeOf(office), ed); err != nil {
					return r, fmt.Errorf("office: %w", err)
				}
				if seenO {
					s.officeSeen = time.Since(start)
				}
			}
			if !seenL {
				if seenL, err = shows(storeOf(l2), ed); err != nil {
					return r, fmt.Errorf("laptop2: %w", err)
				}
				if seenL {
					s.laptopSeen = time.Since(start)
				}
			}
			if seenO && seenL {
				break
			}
			poll := propPoll
			if since := time.Since(start); since >= propEditTimeout {
				poll = 10 * time.Millisecond
				if !late {
					late = true
					s.officeLate, s.laptopLate = !seenO, !seenL
					e.progress("channels: propagation (%s): edit %d not seen within %s (office %v, laptop2 %v); waiting for it up to %s",
						label, i, propEditTimeout, seenO, seenL, propStallLimit)
				}
				if since >= propStallLimit {
					e.progress("channels: propagation (%s): edit %d still not seen after %s; going on", label, i, propStallLimit)
					break
				}
			}
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-time.After(poll):
			}
		}
		s.office, s.laptop2 = s.officeSeen, s.laptopSeen
		if s.officeLate {
			s.office = propEditTimeout
		}
		if s.laptopLate {
			s.laptop2 = propEditTimeout
		}
		if i >= propWarmup {
			samples = append(samples, s)
			if late {
				r.stalls = append(r.stalls, fmt.Sprintf("measured edit %d: office after %s, laptop2 after %s", len(samples), seenCell(s.officeSeen), seenCell(s.laptopSeen)))
			}
		}
		if err := checkDirect(); err != nil {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(time.Until(start.Add(propSpacing))):
		}
	}
	r.took = time.Since(tPhase)
	r.bulkOffice += bulkOffice.get()
	r.bulkL2 += bulkL2.get()
	stop()
	if err := waitChanConverged(ctx, office, nodes[:], grants); err != nil {
		return r, err
	}
	for _, n := range []*node.Node{office, l1, l2} {
		st := storeOf(n)
		w := want
		if grants != nil {
			w = stateOf(inChannel(base, ch), want)
		}
		if err := checkState(ctx, st, w); err != nil {
			return r, fmt.Errorf("%s: %w", n.Config().Name, err)
		}
	}
	if err := checkDirect(); err != nil {
		return r, err
	}
	r.two = latStats(samples, func(s propSample) (time.Duration, bool) { return s.laptop2, s.laptopLate })
	r.one = latStats(samples, func(s propSample) (time.Duration, bool) { return s.office, s.officeLate })
	r.put = latStats(samples, func(s propSample) (time.Duration, bool) { return s.put, false })
	r.l2Held = l2.Store().Held()
	e.progress("channels: propagation (%s): laptop1 → office → laptop2 %s; laptop1 → office %s; Put p50 %s", label, r.two, r.one, fmtDur(r.put.p(50)))
	return r, nil
}

// chanCatchOffice is one catch-up office: the edits written, running.
type chanCatchOffice struct {
	label    string
	n        *node.Node
	channels []string // the fresh laptops' (nil: unrouted)
	write    time.Duration
	fresh    []chanNode
	// getRouter and getStore: Get of an edited contact, median, through
	// the router and from the store that holds it.
	getRouter, getStore time.Duration
}

// chanGetPasses is how many times each edited contact is read when timing
// Get on the catch-up offices.
const chanGetPasses = 5

// routerGetLatency reads every record of recs passes times through the
// router and returns the median latency.
func routerGetLatency(ctx context.Context, r *crdt.Router, recs []crdt.ImportRecord, passes int) (time.Duration, error) {
	return getMedian(recs, passes, func(id string) error {
		_, err := r.Get(ctx, contactsCollection, id)
		return err
	})
}

// storeGetLatency is routerGetLatency from one store.
func storeGetLatency(ctx context.Context, st *crdt.Store, recs []crdt.ImportRecord, passes int) (time.Duration, error) {
	return getMedian(recs, passes, func(id string) error {
		_, err := st.Get(ctx, contactsCollection, id)
		return err
	})
}

// getMedian times get on every record of recs, passes times, and returns
// the median.
func getMedian(recs []crdt.ImportRecord, passes int, get func(id string) error) (time.Duration, error) {
	var lat []time.Duration
	for range passes {
		for _, rec := range recs {
			t := time.Now()
			if err := get(rec.ID); err != nil {
				return 0, err
			}
			lat = append(lat, time.Since(t))
		}
	}
	slices.Sort(lat)
	return percentile(lat, 50), nil
}

// chanCatchup: two offices, one routed (--channels-catchup-contacts in
// each channel) and one unrouted (the same contacts), make the same
// single-field edits of the edited channel's contacts; fresh laptops
// (granted that channel, routed) catch up on them, the two offices' taking
// turns, --channels-catchup-rounds each.
func (e *env) chanCatchup(ctx context.Context, routed, flat *schema.Schema) (res result, err error) {
	c := e.cfg
	ch := e.editedChannel()
	base := e.chanContacts(c.channelsCatchupContacts*c.channels, c.channels)
	mine := inChannel(base, ch)
	eds, want := edits(c.channelsCatchupEdits, mine, c.seed)

	offices := make([]*chanCatchOffice, 2)
	for i, s := range []struct {
		label    string
		sc       *schema.Schema
		channels []string
	}{{"flat", flat, nil}, {"routed", routed, []string{ch}}} {
		o := &chanCatchOffice{label: s.label, channels: s.channels}
		for k := range c.channelsCatchupRounds {
			o.fresh = append(o.fresh, chanNode{spec: nodeSpec{name: fmt.Sprintf("chan-cu-%s-fresh%d", s.label, k+1), network: true, founder: "chan-cu-" + s.label + "-office"}, channels: s.channels})
		}
		e.progress("channels: catch-up (%s): office imports %d contacts, then makes %d single-field edits of the %d contacts of %s", s.label, len(base), len(eds), len(mine), ch)
		if o.n, err = e.startChanOffice(ctx, "chan-cu-"+s.label+"-office", s.sc, o.fresh, nil); err != nil {
			return res, err
		}
		defer closeNode(o.n, &err)
		if _, err := o.n.Store().Import(ctx, contactsCollection, cloneRecords(base), nil); err != nil {
			return res, err
		}
		if s.channels != nil {
			if err := waitHeld(ctx, o.n, chanNames(c.channels)); err != nil {
				return res, err
			}
		}
		stop := e.profile("channels-catchup-" + s.label + "-write")
		t0 := time.Now()
		for j, ed := range eds {
			if _, err := o.n.Store().Put(ctx, contactsCollection, ed.ID, map[string]any{ed.Field: ed.Value}); err != nil {
				stop()
				return res, fmt.Errorf("edit %d on the office: %w", j, err)
			}
		}
		o.write = time.Since(t0)
		stop()
		st := o.n.Store().Everyone()
		w := stateOf(base, want)
		if s.channels != nil {
			st = o.n.Store().Channel(ch)
			w = stateOf(mine, want)
		}
		if err := checkState(ctx, st, w); err != nil {
			return res, fmt.Errorf("%s office: %w", s.label, err)
		}
		e.progress("channels: catch-up (%s): %d edits written in %s (%s); DAG height %d", s.label, len(eds), fmtDur(o.write), fmtRate(rate(len(eds), o.write), "edits/s"), st.Stats(ctx).MaxHeight)
		// Reading one of the edited contacts, through the router (what
		// Router.Put does first: it locates the record) and from its store.
		if o.getRouter, err = routerGetLatency(ctx, o.n.Store(), mine, chanGetPasses); err != nil {
			return res, err
		}
		if o.getStore, err = storeGetLatency(ctx, st, mine, chanGetPasses); err != nil {
			return res, err
		}
		offices[i] = o
	}
	runtime.GC()
	goroutinesBoth := runtime.NumGoroutine()

	// Rounds: a fresh laptop of each office in turn.
	runs := map[string][]chanFresh{}
	for k := range c.channelsCatchupRounds {
		for _, o := range offices {
			fr, err := e.chanCatchupFresh(ctx, o, o.fresh[k])
			if err != nil {
				return res, err
			}
			runs[o.label] = append(runs[o.label], fr)
		}
	}
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
		{fmt.Sprintf("channels: fresh laptop catch-up on %d single-field edits in %s (granted %s; office holding %d channels, %d contacts each), median of %d", len(eds), ch, ch, c.channels, c.channelsCatchupContacts, len(runs["routed"])),
			fmtDur(rm.took), fmtDur(fm.took) + " (unrouted schema, one store, same edits)", fmtRatio(float64(rm.took), float64(fm.took))},
		{"channels (info): writing those edits on the office (Router.Put, one delta and one fsync each)",
			fmt.Sprintf("%s (%s)", fmtDur(offices[1].write), fmtRate(rate(len(eds), offices[1].write), "edits/s")),
			fmt.Sprintf("%s (%s, unrouted)", fmtDur(offices[0].write), fmtRate(rate(len(eds), offices[0].write), "edits/s")),
			fmtRatio(float64(offices[1].write), float64(offices[0].write))},
		{fmt.Sprintf("channels (info): reading an edited contact on the office through its router (Router.Get, median of %d), %d channels vs unrouted", chanGetPasses*len(mine), c.channels),
			fmt.Sprintf("%s (from the %s store itself: %s)", fmtDur(offices[1].getRouter), ch, fmtDur(offices[1].getStore)),
			fmt.Sprintf("%s (unrouted; from the everyone store itself: %s)", fmtDur(offices[0].getRouter), fmtDur(offices[0].getStore)),
			fmtRatio(float64(offices[1].getRouter), float64(offices[0].getRouter))},
	}
	notes := []string{
		fmt.Sprintf("Channels, catch-up: two offices on loopback TCP, both up for the whole part: one with the routed schema (%d channels), one unrouted; each enrols its fresh laptops (routed: granted %s), imports the same %d contacts (%d per channel) and then writes the same %d single-field edits with Router.Put (one delta each), on random contacts of channel %s (%d contacts; random field among first_name, phone, stage, amount, active); each office's final state is checked against the expected one. "+
			"Then, %d rounds, each starting a fresh laptop of the unrouted office and then one of the routed office, with that office as its only peer: timed from node.Start until it holds, in the everyone store and (routed) in channel %s, the office's heads with nothing queued and the office's contacts (digest; polled every %s, contacts compared once the heads are equal), then closed. The routed laptop first merges the everyone store (schema, members, grants), then opens %s and catches up on it over the channel's own protocols (/ferry/ch/%s/…). Median of the rounds in the row; every round, with the goroutines the laptop added to the process when it had caught up and when the first of its stores showed the office's heads: unrouted %s; routed %s. The process ran %d goroutines with both offices up and no laptop.",
			c.channels, ch, len(base), c.channelsCatchupContacts, len(eds), ch, len(mine), c.channelsCatchupRounds, ch, pollEvery, ch, ch, list(runs["flat"]), list(runs["routed"]), goroutinesBoth),
	}
	return result{rows: rows, notes: notes}, nil
}

// chanFresh is one fresh laptop catching up.
type chanFresh struct {
	took       time.Duration
	first      time.Duration // until a first store showed the office's heads
	firstStore string
	goroutines int // added to the process by the laptop, once caught up
}

// chanCatchupFresh starts a fresh laptop of o, waits until it shows o's
// state and closes it.
func (e *env) chanCatchupFresh(ctx context.Context, o *chanCatchOffice, lap chanNode) (r chanFresh, err error) {
	runtime.GC()
	before := runtime.NumGoroutine()
	lap.spec.peers = o.n.Addrs()[:1]
	stop := e.profile(lap.spec.name)
	defer stop()
	t0 := time.Now()
	l, err := e.startChanNode(ctx, lap)
	if err != nil {
		return r, err
	}
	defer closeNode(l, &err)
	wctx, cancel := context.WithTimeout(ctx, e.cfg.catchupTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	lastReport := time.Now()
	for {
		if r.first == 0 {
			for _, p := range chanPairs(o.n, l, o.channels) {
				if p.b != nil && p.a != nil {
					if slices.Equal(sortedHeads(p.a.Stats(ctx).Heads), sortedHeads(p.b.Stats(ctx).Heads)) {
						r.first, r.firstStore = time.Since(t0), p.what
						break
					}
				}
			}
		}
		report := time.Since(lastReport) >= progressEvery
		ok, status, err := chanConverged(ctx, o.n, l, o.channels, report)
		if err != nil {
			return r, err
		}
		if ok {
			r.took = time.Since(t0)
			stop()
			r.goroutines = runtime.NumGoroutine() - before
			e.progress("channels: catch-up (%s): %s converged after %s (%s)", o.label, lap.spec.name, fmtDur(r.took), status)
			break
		}
		if report {
			lastReport = time.Now()
			e.progress("channels: catch-up (%s): %s after %s: %s", o.label, lap.spec.name, fmtDur(time.Since(t0)), status)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			return r, fmt.Errorf("%s did not catch up within %s: %s", lap.spec.name, e.cfg.catchupTimeout, status)
		case <-tick.C:
		}
	}
	if o.channels != nil {
		if held := l.Store().Held(); !slices.Equal(held, o.channels) {
			return r, fmt.Errorf("%s holds %v, granted %v", lap.spec.name, held, o.channels)
		}
	}
	return r, nil
}

// heldCell names the channels held ("none": the everyone store only).
func heldCell(held []string) string {
	if len(held) == 0 {
		return "no channel"
	}
	return strings.Join(held, ",")
}

// errChannelCount: --channels is out of range.
var errChannelCount = errors.New("--channels: want 1 to 100 channels")
