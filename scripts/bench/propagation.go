package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
)

const (
	// propPoll is how often the receiving stores are read while an edit
	// propagates.
	propPoll = time.Millisecond
	// propEditTimeout bounds the wait for one edit to show everywhere.
	propEditTimeout = 10 * time.Second
	// propStallLimit bounds the wait for an edit that timed out.
	propStallLimit = 2 * time.Minute
	// propWarmup edits are made and waited for, unmeasured, before the
	// measured ones (GossipSub meshes, bitswap sessions, caches).
	propWarmup = 5
	// propExchange is the peer-exchange interval of the three nodes: longer
	// than the benchmark, so only the exchange on connect happens.
	propExchange = 24 * time.Hour
	// propSpacing is the least time from one Put call to the next: the
	// heads exchanges an edit triggers (50 ms debounce on each node) are
	// over before the next edit, so each edit is measured on its own.
	propSpacing = 100 * time.Millisecond
	// propSetupTimeout bounds connecting and the initial convergence.
	propSetupTimeout = time.Minute
)

// directWatch records every connection a laptop makes or accepts to a peer
// other than the office.
type directWatch struct {
	office peer.ID
	mu     sync.Mutex
	others []string
}

func (w *directWatch) connected(_ network.Network, c network.Conn) {
	if p := c.RemotePeer(); p != w.office {
		w.mu.Lock()
		w.others = append(w.others, p.String())
		w.mu.Unlock()
	}
}

// check fails if the laptop was ever connected to anyone but the office,
// or is not connected to the office now.
func (w *directWatch) check(n *node.Node) error {
	w.mu.Lock()
	others := slices.Clone(w.others)
	w.mu.Unlock()
	for _, p := range n.Host().Network().Peers() {
		if p != w.office {
			others = append(others, p.String())
		}
	}
	if len(others) > 0 {
		return fmt.Errorf("%s connected to %v besides the office: the path must go through the office", n.Config().Name, others)
	}
	if n.Host().Network().Connectedness(w.office) != network.Connected {
		return fmt.Errorf("%s is not connected to the office", n.Config().Name)
	}
	return nil
}

// propSample is one measured edit: time from the Put call until the new
// value shows on the office and on laptop2 (propEditTimeout if it did not
// within that time; officeSeen and laptopSeen are then the real times, or 0
// if it did not show within propStallLimit).
type propSample struct {
	put, office, laptop2   time.Duration
	officeSeen, laptopSeen time.Duration
	officeLate, laptopLate bool
}

// propState describes the sync state of the office and laptop2, for the
// progress line of an edit that timed out.
func propState(ctx context.Context, office, l2 *node.Node) string {
	so, s2 := office.Status(ctx), l2.Status(ctx)
	cu := "none"
	if s2.CatchUp != nil {
		cu = fmt.Sprintf("%+v", *s2.CatchUp)
	}
	return fmt.Sprintf("Office: %d heads, height %d, queued jobs %d. Laptop2: %d heads, height %d, queued jobs %d, heads equal to the office's %v, bulk catch-up in progress %s, blocks fetched in bulk %d, connected peers %d.",
		len(so.Heads), so.DAGHeight, so.QueuedJobs, len(s2.Heads), s2.DAGHeight, s2.QueuedJobs, slices.Equal(so.Heads, s2.Heads), cu, s2.BlocksFetched, s2.ConnectedPeers)
}

// benchPropagation: an office and two laptops that only know the office;
// single-field Puts on laptop1, each timed until laptop2 shows the new
// value (two hops) and, as the baseline in the same run, until the office
// shows it (one hop).
func (e *env) benchPropagation(ctx context.Context) (res result, err error) {
	c := e.cfg
	base := e.contacts(c.propContacts)
	eds, want := edits(propWarmup+c.propEdits, base, c.seed)

	e.progress("propagation: office and two laptops on loopback, laptops dial only the office")
	office, err := e.startNode(ctx, nodeSpec{name: "prop-office", network: true, role: node.RoleOffice, peerExchange: propExchange})
	if err != nil {
		return res, err
	}
	defer closeNode(office, &err)
	if err := e.enrol(ctx, office, "prop-laptop1", "prop-laptop2"); err != nil {
		return res, err
	}
	laptops, checkDirect, err := startLaptops(office, func(i int) (*node.Node, error) {
		// A laptop listens on no address: the office's peer exchange only
		// hands out addresses from its peerstore, so it has none of one
		// laptop to give the other, and they cannot connect directly.
		return e.startNode(ctx, nodeSpec{name: fmt.Sprintf("prop-laptop%d", i+1), network: true, role: node.RoleLaptop,
			peers: office.Addrs()[:1], noListen: true, peerExchange: propExchange, founder: "prop-office"})
	})
	if err != nil {
		return res, err
	}
	for _, l := range laptops {
		defer closeNode(l, &err)
	}
	l1, l2 := laptops[0], laptops[1]

	if err := e.applySchema(ctx, office.Store().Everyone()); err != nil {
		return res, err
	}
	if _, err := importAll(ctx, office.Store().Everyone(), base); err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := waitAllConverged(ctx, office, laptops[:]); err != nil {
		return res, err
	}
	if err := checkDirect(); err != nil {
		return res, err
	}
	e.progress("propagation: schema and %d contacts on all three nodes after %s; %d warm-up edits, then %d measured", len(base), fmtDur(time.Since(t0)), propWarmup, c.propEdits)

	var bulkOffice0, bulkL20 int64
	stop := e.profile("propagation")
	defer stop()
	samples, phase, err := e.measurePropagation(ctx, propTrial{
		what: "propagation", office: office, l2: l2, checkDirect: checkDirect, verbose: true,
		put: func(ed edit) error {
			_, err := l1.Store().Everyone().Put(ctx, contactsCollection, ed.ID, map[string]any{ed.Field: ed.Value})
			return err
		},
		storeOf: func(n *node.Node) *crdt.Store { return n.Store().Everyone() },
		measuring: func() {
			bulkOffice0, bulkL20 = office.Status(ctx).BlocksFetched, l2.Status(ctx).BlocksFetched
		},
	}, eds)
	if err != nil {
		return res, err
	}
	stop()
	bulkOffice := office.Status(ctx).BlocksFetched - bulkOffice0
	bulkL2 := l2.Status(ctx).BlocksFetched - bulkL20
	if err := waitAllConverged(ctx, office, laptops[:]); err != nil {
		return res, err
	}
	for _, n := range []*node.Node{office, l1, l2} {
		if err := checkState(ctx, n.Store().Everyone(), want); err != nil {
			return res, fmt.Errorf("%s: %w", n.Config().Name, err)
		}
	}
	if err := checkDirect(); err != nil {
		return res, err
	}

	two, one, put := propLatencies(samples)
	// second is how much later laptop2 showed an edit than the office
	// (negative: earlier), over the edits both showed in time.
	var second []time.Duration
	for _, s := range samples {
		if !s.officeLate && !s.laptopLate {
			second = append(second, s.laptop2-s.office)
		}
	}
	slices.Sort(second)
	e.progress("propagation: laptop1 → office → laptop2 %s; laptop1 → office %s", two, one)

	m := len(samples)
	// A late sample counts as propEditTimeout, so a percentile equal to it
	// and the mean of a run with late samples are lower bounds.
	cell := func(st latencies, d time.Duration, mean bool) string {
		s := fmtDur(d)
		if st.late > 0 && (d == propEditTimeout || mean) {
			s = "≥ " + s
		}
		return s
	}
	suffix := func(st latencies) string {
		if st.late == 0 {
			return ""
		}
		return fmt.Sprintf(" (%d of %d not seen within %s)", st.late, m, propEditTimeout)
	}
	rowFor := func(what string, f func(latencies) time.Duration) row {
		mean := what == "mean"
		return row{fmt.Sprintf("propagation laptop1 → office → laptop2, %s (%d single-field Puts)", what, m),
			cell(two, f(two), mean) + suffix(two), cell(one, f(one), mean) + " (laptop1 → office, one hop)" + suffix(one),
			fmtRatio(float64(f(two)), float64(f(one)))}
	}
	stalls := propStalls(samples)
	notes := []string(nil)
	if len(stalls) > 0 {
		notes = append(notes, fmt.Sprintf("WARNING: %d of %d edits did not show within %s (%s).", len(stalls), m, propEditTimeout, strings.Join(stalls, "; ")))
	}
	return result{
		rows: []row{
			rowFor("p50", func(s latencies) time.Duration { return s.p(50) }),
			rowFor("p99", func(s latencies) time.Duration { return s.p(99) }),
			rowFor("max", func(s latencies) time.Duration { return s.p(100) }),
			rowFor("mean", func(s latencies) time.Duration { return s.mean }),
		},
		notes: append([]string{
			fmt.Sprintf("Propagation: an office (role office) and two laptops on loopback TCP; each laptop has the office as its only configured peer and listens on no address (it only dials out), so the office's peer exchange has no address of one laptop to give the other; peer-exchange interval %s. Every connection either laptop makes or accepts is recorded, and the benchmark fails if one goes to anything but the office (checked after every edit): none did. The office applies the crm schema and imports %d contacts; once all three nodes show the same heads and contacts, laptop1 makes %d warm-up edits and then %d measured single-field Store.Put calls, one at a time, each once the previous one shows on both other nodes (waited for up to %s, unmeasured, after a timeout) and at least %s after the previous Put call (so that the heads exchanges of one edit are over before the next). Each is timed from the Put call (which includes its own fsync, p50 %s) until Store.Get on laptop2 returns the new value (two hops) and, the baseline in the same run and on the same edits, until Store.Get on the office does (one hop); both stores are read every %s, so a latency is up to about that much late. Per-edit timeout %s: an edit not seen in time counts as %s. Final state checked on all three nodes. The measured edits took %s in all.",
				propExchange, len(base), propWarmup, m, propStallLimit, propSpacing, fmtDur(put.p(50)), propPoll, propEditTimeout, propEditTimeout, fmtDur(phase)),
			fmt.Sprintf("Propagation mechanism: go-ds-crdt on laptop1 publishes the new head on GossipSub, and Ferry's heads exchange announces every head change to each connected peer (after a %s debounce) over a direct stream; the office fetches the block (over bitswap from go-ds-crdt's DAG walk, or in bulk over /ferry/blocks/2.0.0 when the heads exchange brings a head it lacks), merges it, and its heads exchange re-announces the new head to laptop2, which fetches the block from the office the same way. GossipSub also relays laptop1's message through the office's mesh to laptop2, so laptop2 can hear of the head about when the office does, before the office holds the block or re-announces it; laptop2 then asks the office for the block over bitswap. The numbers below (laptop2 usually within a millisecond of the office, sometimes before it) fit that path better than a wait for the office's re-announcement. Blocks fetched in bulk during the measured edits: office %d, laptop2 %d (of %d edits). Laptop2 showed an edit p50 %s, p99 %s, min %s after the office did (per edit, laptop2 time minus office time; negative: laptop2 first, within the polling error).",
				50*time.Millisecond, bulkOffice, bulkL2, m, fmtSigned(percentile(second, 50)), fmtSigned(percentile(second, 99)), fmtSigned(percentile(second, 0.0001))),
		}, notes...),
	}, nil
}

// startLaptops starts laptop1 and laptop2 (start(i) starts laptop i+1,
// with the office as its only peer) and records every connection each
// makes or accepts (directWatch); checkDirect fails if one went to anything
// but the office, or a laptop is not connected to it now. The caller
// closes the laptops (on error, those started are closed).
func startLaptops(office *node.Node, start func(i int) (*node.Node, error)) (laptops [2]*node.Node, checkDirect func() error, err error) {
	var watches [2]*directWatch
	for i := range laptops {
		l, err := start(i)
		if err != nil {
			for _, n := range laptops[:i] {
				_ = n.Close()
			}
			return laptops, nil, err
		}
		w := &directWatch{office: office.ID()}
		l.Host().Network().Notify(&network.NotifyBundle{ConnectedF: w.connected})
		laptops[i], watches[i] = l, w
	}
	checkDirect = func() error {
		for i, l := range laptops {
			if err := watches[i].check(l); err != nil {
				return err
			}
		}
		return nil
	}
	return laptops, checkDirect, nil
}

// propTrial is what measurePropagation measures on: an office and two
// laptops, connected and converged, laptop1 writing.
type propTrial struct {
	// what starts the progress lines.
	what       string
	office, l2 *node.Node
	// put makes an edit on laptop1.
	put func(edit) error
	// storeOf is the store of a node that holds the edited records, read
	// to see an edit.
	storeOf     func(*node.Node) *crdt.Store
	checkDirect func() error
	// measuring, if set, is called as the first measured edit (after the
	// warm-up ones) starts.
	measuring func()
	// verbose: the progress lines of an edit that timed out give the
	// nodes' sync state (propState) and, at the end, when it showed.
	verbose bool
}

// measurePropagation makes the edits eds (the first propWarmup of them
// warm-up, not measured) with t.put, one at a time, each at least
// propSpacing after the previous Put call, and times each from the Put
// call until the office and laptop2 show the new value (polled every
// propPoll; an edit not seen within propEditTimeout counts as that, and is
// waited for up to propStallLimit). checkDirect runs after every edit. It
// returns the measured samples and the time the measured edits took.
func (e *env) measurePropagation(ctx context.Context, t propTrial, eds []edit) (samples []propSample, took time.Duration, err error) {
	shows := func(st *crdt.Store, ed edit) (bool, error) {
		r, err := st.Get(ctx, contactsCollection, ed.ID)
		if err != nil {
			return false, err
		}
		return reflect.DeepEqual(r.Fields[ed.Field].Value, ed.Value), nil
	}
	state := func() string {
		if !t.verbose {
			return ""
		}
		return ". " + propState(ctx, t.office, t.l2)
	}
	samples = make([]propSample, 0, len(eds)-propWarmup)
	tPhase := time.Now()
	for i, ed := range eds {
		if i == propWarmup {
			if t.measuring != nil {
				t.measuring()
			}
			tPhase = time.Now()
		}
		if m := i - propWarmup; m > 0 && m%100 == 0 {
			e.progress("%s: %d edits measured", t.what, m)
		}
		var s propSample
		start := time.Now()
		if err := t.put(ed); err != nil {
			return nil, 0, fmt.Errorf("edit %d on laptop1: %w", i, err)
		}
		s.put = time.Since(start)
		seenO, seenL, late := false, false, false
		for !seenO || !seenL {
			if !seenO {
				if seenO, err = shows(t.storeOf(t.office), ed); err != nil {
					return nil, 0, fmt.Errorf("office: %w", err)
				}
				if seenO {
					s.officeSeen = time.Since(start)
				}
			}
			if !seenL {
				if seenL, err = shows(t.storeOf(t.l2), ed); err != nil {
					return nil, 0, fmt.Errorf("laptop2: %w", err)
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
				// Timed out: the sample is recorded as propEditTimeout, but
				// the next edit waits (up to propStallLimit) until this one
				// shows, so that the stall is measured once and its length
				// known.
				poll = 10 * time.Millisecond
				if !late {
					late = true
					s.officeLate, s.laptopLate = !seenO, !seenL
					e.progress("%s: edit %d not seen within %s (office %v, laptop2 %v); waiting for it up to %s%s",
						t.what, i, propEditTimeout, seenO, seenL, propStallLimit, state())
				}
				if since >= propStallLimit {
					if t.verbose {
						e.progress("%s: edit %d still not seen after %s (office %v, laptop2 %v); going on%s",
							t.what, i, propStallLimit, seenO, seenL, state())
					} else {
						e.progress("%s: edit %d still not seen after %s; going on", t.what, i, propStallLimit)
					}
					break
				}
			}
			select {
			case <-ctx.Done():
				return nil, 0, ctx.Err()
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
		if late && t.verbose {
			e.progress("%s: edit %d showed on the office after %s, on laptop2 after %s (0: not within %s)",
				t.what, i, fmtDur(s.officeSeen), fmtDur(s.laptopSeen), propStallLimit)
		}
		if i >= propWarmup {
			samples = append(samples, s)
		}
		if err := t.checkDirect(); err != nil {
			return nil, 0, err
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(time.Until(start.Add(propSpacing))):
		}
	}
	return samples, time.Since(tPhase), nil
}

// propLatencies are the latencies of samples: until laptop2 showed an
// edit (two hops), until the office did (one hop), and of the Put call.
func propLatencies(samples []propSample) (two, one, put latencies) {
	two = latStats(samples, func(s propSample) (time.Duration, bool) { return s.laptop2, s.laptopLate })
	one = latStats(samples, func(s propSample) (time.Duration, bool) { return s.office, s.officeLate })
	put = latStats(samples, func(s propSample) (time.Duration, bool) { return s.put, false })
	return two, one, put
}

// propStalls describes the samples that timed out.
func propStalls(samples []propSample) []string {
	var stalls []string
	for i, s := range samples {
		if s.officeLate || s.laptopLate {
			stalls = append(stalls, fmt.Sprintf("measured edit %d: office after %s, laptop2 after %s", i+1, seenCell(s.officeSeen), seenCell(s.laptopSeen)))
		}
	}
	return stalls
}

// latencies summarises one latency of a run of samples.
type latencies struct {
	sorted []time.Duration
	mean   time.Duration
	late   int // samples that hit the timeout
}

func (l latencies) p(pct float64) time.Duration { return percentile(l.sorted, pct) }
func (l latencies) String() string {
	return fmt.Sprintf("p50 %s, p99 %s, max %s, mean %s", fmtDur(l.p(50)), fmtDur(l.p(99)), fmtDur(l.p(100)), fmtDur(l.mean))
}

func latStats(samples []propSample, f func(propSample) (time.Duration, bool)) latencies {
	var l latencies
	var sum time.Duration
	for _, s := range samples {
		d, late := f(s)
		l.sorted = append(l.sorted, d)
		sum += d
		if late {
			l.late++
		}
	}
	slices.Sort(l.sorted)
	if len(samples) > 0 {
		l.mean = sum / time.Duration(len(samples))
	}
	return l
}

// waitAllConverged waits until every node shows the office's heads, has no
// queued DAG work and lists the same contacts.
func waitAllConverged(ctx context.Context, office *node.Node, others []*node.Node) error {
	wctx, cancel := context.WithTimeout(ctx, propSetupTimeout)
	defer cancel()
	status := ""
	for {
		all := true
		for _, n := range others {
			ok, st, err := converged(ctx, office, n, false)
			if err != nil {
				return err
			}
			if !ok || n.Store().Everyone().Stats(ctx).QueuedJobs > 0 {
				all, status = false, n.Config().Name+": "+st
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errors.New("nodes did not converge within " + propSetupTimeout.String() + ": " + status)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// seenCell formats when a late edit showed (0: not within propStallLimit).
func seenCell(d time.Duration) string {
	if d == 0 {
		return "more than " + fmtDur(propStallLimit)
	}
	return fmtDur(d)
}

// fmtSigned is fmtDur for a duration that may be negative.
func fmtSigned(d time.Duration) string {
	if d < 0 {
		return "−" + fmtDur(-d)
	}
	return fmtDur(d)
}
