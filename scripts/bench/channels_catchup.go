package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/schema"
)

// The channels benchmark (channels.go), part 3: catch-up of fresh laptops
// granted one channel, against the same unrouted.

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
	return e.chanCatchupResult(offices, runs, ch, len(base), len(mine), len(eds), goroutinesBoth), nil
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
