package crdt

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-crm/ferry/schema"
)

// Grants say which laptop holds which channel, and since when
// (docs/design/channels.md, 2.7). They live in the everyone store:
// collection _grants holds one record per change, never superseded, so the
// whole timeline replicates and survives compactions. A change counts only
// when an office that was a member when it wrote it wrote it (the trust
// view, as for _members). An office holds every channel and is never
// granted one.

// Reserved collections of channels.
const (
	// GrantsCollection holds the grant changes: one record per change, id
	// "<peer>/<channel>/<hlc>" (escaped), fields peer, channel and granted.
	// Only office members write it.
	GrantsCollection = "_grants"
	// ChannelsCollection is the registry of channels: one record per
	// channel, id its name, field created. Only office members write it.
	ChannelsCollection = "_channels"
)

// GrantInterval is a time a peer held a channel: from From (the grant's
// time) until Until (the ungrant's time, excluded; 0: granted still).
type GrantInterval struct {
	From, Until Timestamp
}

// contains reports whether t is inside the interval.
func (i GrantInterval) contains(t Timestamp) bool {
	return t >= i.From && (i.Until == 0 || t < i.Until)
}

// Grants is the folded timeline of _grants: per peer and channel, the
// intervals it was granted. It is shared and never modified.
type Grants struct {
	byPeer map[string]map[string][]GrantInterval
}

// Intervals returns the intervals a peer held a channel, oldest first.
func (g *Grants) Intervals(peer, channel string) []GrantInterval {
	if g == nil {
		return nil
	}
	return slices.Clone(g.byPeer[peer][channel])
}

// At reports whether peer was granted channel at time t.
func (g *Grants) At(peer, channel string, t Timestamp) bool {
	if g == nil {
		return false
	}
	for _, i := range g.byPeer[peer][channel] {
		if i.contains(t) {
			return true
		}
	}
	return false
}

// Current returns the channels peer is granted now, sorted.
func (g *Grants) Current(peer string) []string {
	if g == nil {
		return nil
	}
	var out []string
	for c, is := range g.byPeer[peer] {
		if n := len(is); n > 0 && is[n-1].Until == 0 {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// Peers returns the peers granted channel now, sorted.
func (g *Grants) Peers(channel string) []string {
	if g == nil {
		return nil
	}
	var out []string
	for p, cs := range g.byPeer {
		if is := cs[channel]; len(is) > 0 && is[len(is)-1].Until == 0 {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// All returns, for every peer granted some channel now, its channels
// (sorted).
func (g *Grants) All() map[string][]string {
	out := map[string][]string{}
	if g == nil {
		return out
	}
	for p := range g.byPeer {
		if cur := g.Current(p); len(cur) > 0 {
			out[p] = cur
		}
	}
	return out
}

// ever returns every channel some peer was granted at some time.
func (g *Grants) ever() []string {
	set := map[string]bool{}
	for _, cs := range g.byPeer {
		for c := range cs {
			set[c] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// grantState caches the folded grants of the everyone store.
type grantState struct {
	mu    sync.Mutex
	cache *Grants
	stale atomic.Bool
}

// grantChange is one change of the timeline.
type grantChange struct {
	peer, channel string
	granted       bool
	id            OpID
}

// grants folds _grants (of the authority) into intervals. Only changes
// that count (written by an office member valid at the time, with a good
// signature) are folded. The result is shared: do not modify it.
func (s *Store) grants(ctx context.Context) (*Grants, error) {
	if a := s.auth(); a != s {
		return a.grants(ctx)
	}
	if s.opts.Trust == nil {
		return &Grants{}, nil
	}
	g := &s.grantState
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cache != nil && !g.stale.Load() {
		return g.cache, nil
	}
	// Cleared before reading: a change merged during the read marks the
	// cache stale again.
	g.stale.Store(false)
	var changes []grantChange
	err := s.scanRecords(ctx, GrantsCollection, func(rec *recordOps) error {
		byOp := map[OpID]map[string]any{}
		for field, ops := range rec.fields {
			for _, op := range ops {
				if byOp[op.ID] == nil {
					byOp[op.ID] = map[string]any{}
				}
				byOp[op.ID][field] = op.Value
			}
		}
		for id, f := range byOp {
			peer, _ := f["peer"].(string)
			channel, _ := f["channel"].(string)
			granted, ok := f["granted"].(bool)
			if !ok || peer == "" || schema.CheckChannelName(channel) != nil {
				continue
			}
			changes = append(changes, grantChange{peer: peer, channel: channel, granted: granted, id: id})
		}
		return nil
	})
	if err != nil {
		g.stale.Store(true)
		return nil, fmt.Errorf("load grants: %w", err)
	}
	g.cache = foldGrants(changes)
	return g.cache, nil
}

// foldGrants turns the changes into intervals: in time order, a grant
// opens an interval unless one is open, an ungrant closes the open one.
func foldGrants(changes []grantChange) *Grants {
	sort.Slice(changes, func(i, j int) bool { return changes[j].id.Newer(changes[i].id) })
	out := &Grants{byPeer: map[string]map[string][]GrantInterval{}}
	for _, c := range changes {
		cs := out.byPeer[c.peer]
		if cs == nil {
			cs = map[string][]GrantInterval{}
			out.byPeer[c.peer] = cs
		}
		is := cs[c.channel]
		open := len(is) > 0 && is[len(is)-1].Until == 0
		switch {
		case c.granted && !open:
			cs[c.channel] = append(is, GrantInterval{From: c.id.Time})
		case !c.granted && open:
			is[len(is)-1].Until = c.id.Time
		}
	}
	return out
}

// Grants returns the grants as this node knows them now (empty in an open
// network). On a channel store, its authority's.
func (s *Store) Grants(ctx context.Context) (*Grants, error) {
	return s.grants(ctx)
}

// Granted reports whether peer may hold channel now: a current member that
// is an office (an office holds every channel) or is granted it. In an
// open network every peer holds every channel.
func (s *Store) Granted(ctx context.Context, peer, channel string) bool {
	if s.opts.Trust == nil {
		return true
	}
	m, ok, err := s.Member(ctx, peer)
	if err != nil || !ok || m.Revoked {
		return false
	}
	if m.Role == RoleOffice {
		return true
	}
	g, err := s.grants(ctx)
	return err == nil && slices.Contains(g.Current(peer), channel)
}

// Grant grants a laptop member channels: one _grants record per channel
// it does not hold yet, in one delta. Only an office grants, and only in a
// network with a trust model. On a channel store, its authority grants.
func (s *Store) Grant(ctx context.Context, peer string, channels ...string) error {
	return s.auth().writeGrants(ctx, peer, channels, true)
}

// Ungrant ends a laptop's grants of channels (those it holds now): its
// writes into them made later count nowhere.
func (s *Store) Ungrant(ctx context.Context, peer string, channels ...string) error {
	return s.auth().writeGrants(ctx, peer, channels, false)
}

func (s *Store) writeGrants(ctx context.Context, peer string, channels []string, granted bool) error {
	verb := "grant"
	if !granted {
		verb = "ungrant"
	}
	if s.opts.Trust == nil {
		return fmt.Errorf("%s: channels are granted only in a secured network (this one has no founder): here every node holds every channel", verb)
	}
	if len(channels) == 0 {
		return fmt.Errorf("%s: name at least one channel", verb)
	}
	for _, c := range channels {
		if err := schema.CheckChannelName(c); err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
	}
	if peer == "" || strings.Contains(peer, "/") {
		return fmt.Errorf("%s: bad peer id %q", verb, peer)
	}
	if err := s.checkWritable(ctx, GrantsCollection, ""); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	m, ok, err := s.Member(ctx, peer)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		return fmt.Errorf("%s %s: not a member of the network (enrol it first)", verb, peer)
	case granted && m.Revoked:
		return fmt.Errorf("%s %s: not a current member of the network: it was revoked", verb, peer)
	case m.Role == RoleOffice:
		return fmt.Errorf("%s %s: an office holds every channel: only laptops are granted channels", verb, peer)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	g, err := s.grants(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	cur := g.Current(peer)
	var todo []string
	for _, c := range channels {
		if slices.Contains(cur, c) != granted && !slices.Contains(todo, c) {
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	b, err := s.openBatch(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	defer b.end(ctx)
	for _, c := range todo {
		id := OpID{Time: s.clock.Now(), Writer: s.opts.Writer}
		eid, err := EscapeID(peer + "/" + c + "/" + id.Time.String())
		if err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
		// A new record: it supersedes nothing, so every change stays.
		w := &write{ID: id, Ops: []Op{
			{ID: id, Field: "channel", Value: c},
			{ID: id, Field: "granted", Value: granted},
			{ID: id, Field: "peer", Value: peer},
		}}
		p, err := s.planElement(ctx, GrantsCollection, eid, newRecordOps(eid), w)
		if err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
		if err := s.sign(p); err != nil {
			return err
		}
		if err := p.stage(ctx, b); err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
	}
	if err := s.commit(ctx, b); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	s.grantState.stale.Store(true)
	return nil
}

// RegisterChannel records a channel in _channels (nothing when it is
// already there). Only an office registers one. On a channel store, its
// authority does.
func (s *Store) RegisterChannel(ctx context.Context, name string) error {
	if a := s.auth(); a != s {
		return a.RegisterChannel(ctx, name)
	}
	if err := schema.CheckChannelName(name); err != nil {
		return fmt.Errorf("register channel: %w", err)
	}
	eid, err := EscapeID(name)
	if err != nil {
		return err
	}
	if err := s.checkWritable(ctx, ChannelsCollection, eid); err != nil {
		return fmt.Errorf("register channel %s: %w", name, err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, err := s.readRecord(ctx, ChannelsCollection, eid)
	if err != nil {
		return fmt.Errorf("register channel %s: %w", name, err)
	}
	if exists, _ := cur.exists(newestRules); exists {
		return nil
	}
	created := s.opts.Now().UTC().Format(time.RFC3339)
	if _, err := s.writeRecord(ctx, ChannelsCollection, eid, cur, map[string]any{"created": created}, newestRules); err != nil {
		return fmt.Errorf("register channel %s: %w", name, err)
	}
	return nil
}

// Channels returns every channel the network knows of, sorted: those
// registered in _channels, every channel ever granted, and those routed
// collections name (the values of an enum routing field, and the default
// channel). On a channel store, its authority's.
func (s *Store) Channels(ctx context.Context) ([]string, error) {
	if a := s.auth(); a != s {
		return a.Channels(ctx)
	}
	set := map[string]bool{}
	err := s.List(ctx, ChannelsCollection, func(r *Record) error {
		if schema.CheckChannelName(r.ID) == nil {
			set[r.ID] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	g, err := s.grants(ctx)
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	for _, c := range g.ever() {
		set[c] = true
	}
	sc, err := s.Schema(ctx)
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	for _, c := range sc.Collections {
		r := c.Channel
		if r == nil {
			continue
		}
		def := r.Default
		if def == "" {
			def = schema.DefaultChannel
		}
		set[def] = true
		if f := c.Fields[r.Field]; f != nil && f.Type == schema.TypeEnum {
			for _, v := range f.Values {
				if schema.CheckChannelName(v) == nil {
					set[v] = true
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}
