package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/schema"
)

// What the local API serves of channels: ferry channels, grant, ungrant,
// subscribe, unsubscribe.

// Channels lists the channels this node holds or is leaving, its grants,
// its subscription and every channel of the network.
func (n *Node) Channels(ctx context.Context) (apijson.Channels, error) {
	out := apijson.Channels{Held: []apijson.Channel{}, Subscribed: n.subscription()}
	known, err := n.store.Channels(ctx)
	if err != nil {
		return out, err
	}
	out.Known = append([]string{}, known...)
	g, err := n.store.Grants(ctx)
	if err != nil {
		return out, err
	}
	switch {
	case !n.cfg.secured():
	case n.cfg.Role == RoleOffice:
		out.Granted = []string{"*"}
	default:
		out.Granted = append([]string{}, g.Current(n.self.String())...)
	}
	names := n.Names(ctx)
	for _, ch := range n.chans.all() {
		c := apijson.Channel{Name: ch.name, State: stateHeld, Epoch: ch.store.Epoch().Number}
		// The count comes from the digest, brought up to date first (a
		// first build reads the channel once, in the background).
		if _, ok, err := ch.store.TryDigest(ctx); err == nil && ok {
			if d, ok := ch.store.RecordCount(ctx); ok {
				c.Records = &d
			}
		}
		c.Keys, c.Bytes = n.channelSize(ctx, ch.name)
		if u, err := ch.acks.unacked(ctx); err == nil && n.cfg.Role != RoleOffice {
			c.Unacked = &u
		}
		if n.cfg.Role == RoleOffice {
			for _, p := range g.Peers(ch.name) {
				if nm := names[p].Name; nm != "" {
					p = nm
				}
				c.Peers = append(c.Peers, p)
			}
		}
		out.Held = append(out.Held, c)
	}
	for name, l := range n.leavingChannels() {
		c := apijson.Channel{Name: name, State: stateLeaving, Waiting: l.err}
		since := l.since.UTC()
		c.LeavingSince = &since
		c.Keys, c.Bytes = n.channelSize(ctx, name)
		if l.unacked >= 0 {
			c.Unacked = &apijson.Unacked{Known: true, Count: l.unacked}
		}
		out.Held = append(out.Held, c)
	}
	slices.SortFunc(out.Held, func(a, b apijson.Channel) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

// channelSize counts a channel's keys and their bytes (blocks included).
func (n *Node) channelSize(ctx context.Context, name string) (int, int64) {
	k, b, err := datadir.PrefixSize(ctx, n.base, channelsRoot.ChildString(name).String()+"/")
	if err != nil {
		n.log.Debug("channel size", "channel", name, "err", err)
	}
	return k, b
}

// Grant grants a member channels, or with grant false ends its grants of
// them (an office only); it returns the member's grants after.
func (n *Node) Grant(ctx context.Context, member string, channels []string, grant bool) (apijson.GrantResult, error) {
	for _, c := range channels {
		if err := schema.CheckChannelName(c); err != nil {
			return apijson.GrantResult{}, api.BadRequest(err)
		}
	}
	id, err := n.resolveMember(ctx, member)
	if err != nil {
		return apijson.GrantResult{}, err
	}
	if grant {
		err = n.store.Grant(ctx, id, channels...)
	} else {
		err = n.store.Ungrant(ctx, id, channels...)
	}
	if err != nil {
		if errors.Is(err, crdt.ErrForbidden) || errors.Is(err, crdt.ErrNotMember) {
			return apijson.GrantResult{}, err
		}
		return apijson.GrantResult{}, api.BadRequest(err)
	}
	g, err := n.store.Grants(ctx)
	if err != nil {
		return apijson.GrantResult{}, err
	}
	n.channelsChanged()
	return apijson.GrantResult{Member: id, Channels: append([]string{}, g.Current(id)...)}, nil
}

// subscription returns the channels this laptop takes offline (nil: every
// channel granted).
func (n *Node) subscription() []string {
	n.subMu.Lock()
	defer n.subMu.Unlock()
	return slices.Clone(n.cfg.Channels)
}

// Subscribe takes channels offline again (subscribe true) or stops taking
// them (false), on a laptop; the subscription is kept in config.yaml when
// the data dir has one. It returns the subscription after (nil: every
// channel granted).
func (n *Node) Subscribe(ctx context.Context, channels []string, subscribe bool) ([]string, error) {
	if n.cfg.Role == RoleOffice {
		return nil, api.BadRequest(errors.New("an office holds every channel: subscribe and unsubscribe are for laptops"))
	}
	for _, c := range channels {
		if err := schema.CheckChannelName(c); err != nil {
			return nil, api.BadRequest(err)
		}
	}
	var granted []string
	if n.cfg.secured() {
		g, err := n.store.Grants(ctx)
		if err != nil {
			return nil, err
		}
		granted = g.Current(n.self.String())
	} else {
		all, err := n.store.Channels(ctx)
		if err != nil {
			return nil, err
		}
		granted = all
	}
	n.subMu.Lock()
	sub := slices.Clone(n.cfg.Channels)
	switch {
	case subscribe && sub == nil:
		// Every channel granted is taken already.
	case subscribe:
		for _, c := range channels {
			if !slices.Contains(sub, c) {
				sub = append(sub, c)
			}
		}
	default:
		if sub == nil {
			sub = slices.Clone(granted)
		}
		sub = slices.DeleteFunc(sub, func(c string) bool { return slices.Contains(channels, c) })
		if sub == nil {
			sub = []string{}
		}
	}
	slices.Sort(sub)
	if err := n.saveSubscription(sub); err != nil {
		n.subMu.Unlock()
		return nil, err
	}
	n.cfg.Channels = sub
	n.subMu.Unlock()
	if subscribe {
		var missing []string
		for _, c := range channels {
			if !slices.Contains(granted, c) {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			n.log.Warn("subscribed to channels not granted: they are taken once granted", "channels", missing)
		}
	}
	n.channelsChanged()
	return slices.Clone(sub), nil
}

// saveSubscription writes the subscription into config.yaml, if the data
// dir has one.
func (n *Node) saveSubscription(sub []string) error {
	if _, err := os.Stat(filepath.Join(n.cfg.Dir, datadir.SettingsFile)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	s, err := datadir.ReadSettings(n.cfg.Dir)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	s.Channels = &sub
	if err := s.Write(n.cfg.Dir); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}

// channelStatus fills the channel part of Status.
func (n *Node) channelStatus(ctx context.Context, s *apijson.Status) {
	held := n.chans.all()
	for _, ch := range held {
		s.Channels = append(s.Channels, ch.name)
		if n.cfg.Role == RoleOffice {
			continue
		}
		u, err := ch.acks.unacked(ctx)
		if err != nil {
			continue
		}
		if s.UnackedByChannel == nil {
			s.UnackedByChannel = map[string]apijson.Unacked{}
		}
		s.UnackedByChannel[ch.name] = u
		if s.Unacked != nil {
			s.Unacked.Count += u.Count
			if !u.Oldest.IsZero() && (s.Unacked.Oldest.IsZero() || u.Oldest.Before(s.Unacked.Oldest)) {
				s.Unacked.Oldest = u.Oldest
			}
		}
	}
	for name := range n.leavingChannels() {
		s.ChannelsLeaving = append(s.ChannelsLeaving, name)
	}
	slices.Sort(s.ChannelsLeaving)
	if n.cfg.Role == RoleOffice || !n.cfg.secured() {
		return
	}
	if g, err := n.store.Grants(ctx); err == nil {
		for _, c := range g.Current(n.self.String()) {
			if n.chans.get(c) == nil {
				s.ChannelsNotTaken = append(s.ChannelsNotTaken, c)
			}
		}
	}
}

// grantsOf returns a member's grants for ferry members ("*" for an office).
func grantsOf(g *crdt.Grants, m crdt.Member) []string {
	if m.Role == RoleOffice {
		return []string{"*"}
	}
	return g.Current(m.ID)
}
