package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/schema"
)

// The channels benchmark (channels.go): starting its nodes, and comparing
// a node's stores with the office's.

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
	return startConfigured(ctx, cfg)
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
