package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/schema"
)

// The channels benchmark (channels.go), part 2: propagation laptop1 →
// office → laptop2 of Puts into one channel, against the same unrouted.

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
	return e.chanPropagationResult(runs, ch, len(base), len(mine), len(eds)-propWarmup), nil
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
	nodes, checkDirect, err := startLaptops(office, func(i int) (*node.Node, error) {
		l := laps[i]
		l.spec.peers = office.Addrs()[:1]
		return e.startChanNode(ctx, l)
	})
	if err != nil {
		return r, err
	}
	for _, n := range nodes {
		defer closeNode(n, &err)
	}
	l1, l2 := nodes[0], nodes[1]
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
	stop := e.profile("channels-propagation-" + label)
	defer stop()
	samples, took, err := e.measurePropagation(ctx, propTrial{
		what: fmt.Sprintf("channels: propagation (%s)", label), office: office, l2: l2, checkDirect: checkDirect,
		put: func(ed edit) error {
			_, err := l1.Store().Put(ctx, contactsCollection, ed.ID, map[string]any{ed.Field: ed.Value})
			return err
		},
		storeOf: storeOf,
		measuring: func() {
			r.goroutines = runtime.NumGoroutine()
			r.bulkOffice, r.bulkL2 = -bulkOffice.get(), -bulkL2.get()
		},
	}, eds)
	if err != nil {
		return r, err
	}
	r.took = took
	r.bulkOffice += bulkOffice.get()
	r.bulkL2 += bulkL2.get()
	stop()
	r.stalls = propStalls(samples)
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
	r.two, r.one, r.put = propLatencies(samples)
	r.l2Held = l2.Store().Held()
	e.progress("channels: propagation (%s): laptop1 → office → laptop2 %s; laptop1 → office %s; Put p50 %s", label, r.two, r.one, fmtDur(r.put.p(50)))
	return r, nil
}
