package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
)

// What the local API (package api) serves, as methods of the node.

// errNoNetwork: the request needs a running node (this one was opened
// without network by a CLI command).
var errNoNetwork = api.ErrNoNode

// Handler returns the node's local API, for in-process clients
// (api.NewClient).
func (n *Node) Handler() http.Handler { return api.NewServer(apiBackend{n}, n.log) }

// Serve serves the local API on the data dir's socket until ctx is done.
func (n *Node) Serve(ctx context.Context) error {
	return api.NewServer(apiBackend{n}, n.log).Serve(ctx, n.cfg.Dir)
}

// apiBackend is the node as api.Backend sees it: the methods whose answer
// is a JSON shape rather than a Go value.
type apiBackend struct{ *Node }

var (
	_ api.Backend    = apiBackend{}
	_ api.SpoolDirer = apiBackend{}
)

// SpoolDir is where the API spools import request bodies: the data dir's
// tmp/, on the store's disk rather than in a tmpfs /tmp (api.SpoolDirer).
func (b apiBackend) SpoolDir() string { return filepath.Join(b.cfg.Dir, "tmp") }

func (b apiBackend) Invite(ctx context.Context, name, role string, ttl time.Duration) (apijson.InviteResponse, error) {
	if role == "" {
		role = RoleLaptop
	}
	t, err := b.Node.Invite(ctx, name, role, ttl)
	if err != nil {
		return apijson.InviteResponse{}, api.BadRequest(err)
	}
	return apijson.InviteResponse{Token: t.Encode(), Name: t.Name, Role: t.Role, Expires: t.Expires, Office: t.Office, Addrs: t.Addrs}, nil
}

func (b apiBackend) SyncNow(ctx context.Context) ([]apijson.PeerSync, error) {
	if b.net == nil {
		return nil, api.BadRequest(errNoNetwork)
	}
	if b.Offline() {
		return nil, api.BadRequest(api.ErrOffline)
	}
	return b.Node.SyncNow(ctx), nil
}

// SyncNow exchanges heads with every connected peer at once; one result
// per peer.
func (n *Node) SyncNow(ctx context.Context) []apijson.PeerSync {
	out := []apijson.PeerSync{}
	if !n.netUp() {
		return out
	}
	for _, r := range n.net.heads.ExchangeAll(ctx) {
		ps := apijson.PeerSync{Peer: r.Peer.String()}
		if r.Err != nil {
			ps.Error = r.Err.Error()
		}
		out = append(out, ps)
	}
	return out
}

// SyncState compares this node's digest with every connected Ferry peer's.
func (n *Node) SyncState(ctx context.Context) (apijson.SyncState, error) {
	ours, err := n.store.Digest(ctx)
	if err != nil {
		return apijson.SyncState{}, err
	}
	st := apijson.SyncState{Digest: ours.String(), Online: !n.Offline(), Peers: []apijson.PeerSync{}}
	if !n.netUp() {
		return st, nil
	}
	names := n.Names(ctx)
	for _, p := range n.net.digests.Peers() {
		ps := apijson.PeerSync{Peer: p.String(), Name: names[p.String()].Name}
		if b, err := n.net.digests.Buckets(ctx, p); err != nil {
			ps.Error = err.Error()
		} else {
			d := b.Sum()
			ps.Digest, ps.InSync = d.String(), d == ours
		}
		n.channelSync(ctx, p, &ps)
		st.Peers = append(st.Peers, ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Peer < st.Peers[j].Peer })
	return st, nil
}

// Diff compares this node's visible state with a connected peer's, named
// by peer id or by the name it recorded in _nodes.
func (n *Node) Diff(ctx context.Context, name string) (apijson.DiffResult, error) {
	if !n.netUp() {
		return apijson.DiffResult{}, api.BadRequest(errNoNetwork)
	}
	p, err := n.ResolvePeer(ctx, name)
	if err != nil {
		return apijson.DiffResult{}, api.BadRequest(err)
	}
	cmp, err := n.net.digests.Compare(ctx, p)
	if err != nil {
		return apijson.DiffResult{}, err
	}
	res := apijson.DiffResult{Peer: p.String(), PeerName: n.Names(ctx)[p.String()].Name, Identical: len(cmp.Records) == 0 && cmp.Digest == cmp.PeerDigest,
		Digest: cmp.Digest.String(), PeerDigest: cmp.PeerDigest.String(), Records: []apijson.DiffRecord{}, Epoch: n.store.Epoch().String()}
	if ep, ok := n.net.heads.PeerEpoch(p); ok {
		res.PeerEpoch = ep.String()
	}
	for _, r := range cmp.Records {
		res.Records = append(res.Records, apijson.DiffRecord{Collection: r.Collection, ID: r.ID, Here: r.Here, There: r.There})
	}
	for _, ch := range n.chans.all() {
		if ch.digests == nil || !slices.Contains(ch.digests.Peers(), p) {
			continue
		}
		cmp, err := ch.digests.Compare(ctx, p)
		if err != nil {
			return apijson.DiffResult{}, fmt.Errorf("channel %s: %w", ch.name, err)
		}
		res.Channels = append(res.Channels, ch.name)
		res.Identical = res.Identical && len(cmp.Records) == 0 && cmp.Digest == cmp.PeerDigest
		for _, r := range cmp.Records {
			res.Records = append(res.Records, apijson.DiffRecord{Channel: ch.name, Collection: r.Collection, ID: r.ID, Here: r.Here, There: r.There})
		}
	}
	return res, nil
}

// channelSync compares each channel this node and peer p both hold: p is
// in sync only when every one of them is.
func (n *Node) channelSync(ctx context.Context, p peer.ID, ps *apijson.PeerSync) {
	for _, ch := range n.chans.all() {
		if ch.digests == nil || !slices.Contains(ch.digests.Peers(), p) {
			continue
		}
		ours, err := ch.store.Digest(ctx)
		if err != nil {
			ps.InSync = false
			continue
		}
		same := false
		if b, err := ch.digests.Buckets(ctx, p); err == nil {
			same = b.Sum() == ours
		}
		if ps.Channels == nil {
			ps.Channels = map[string]bool{}
		}
		ps.Channels[ch.name] = same
		ps.InSync = ps.InSync && same
	}
}

// ResolvePeer finds a peer by id or by the name it recorded in _nodes.
func (n *Node) ResolvePeer(ctx context.Context, s string) (peer.ID, error) {
	if p, err := peer.Decode(s); err == nil {
		return p, nil
	}
	var found []peer.ID
	for id, info := range n.Names(ctx) {
		if info.Name == s {
			if p, err := peer.Decode(id); err == nil {
				found = append(found, p)
			}
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no peer with id or name %q", s)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d peers are named %q: give the peer id", len(found), s)
}

// Members lists the network's members with what this node knows of them.
func (n *Node) Members(ctx context.Context) ([]apijson.Member, error) {
	ms, err := n.store.Members(ctx)
	if err != nil {
		return nil, err
	}
	names := n.Names(ctx)
	g, err := n.store.Grants(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]apijson.Member, 0, len(ms))
	for _, m := range ms {
		j := apijson.Member{PeerID: m.ID, Name: m.Name, Role: m.Role, Founder: m.Founder, Revoked: m.Revoked, By: m.By, Self: m.ID == n.self.String(),
			Grants: grantsOf(g, m)}
		if j.Name == "" {
			j.Name = names[m.ID].Name
		}
		if m.Revoked {
			t := m.RevokedAt.Wall()
			j.RevokedAt = &t
		}
		if p, err := peer.Decode(m.ID); err == nil && n.net != nil {
			j.Connected = len(n.net.raw.Network().ConnsToPeer(p)) > 0
		}
		out = append(out, j)
	}
	return out, nil
}

// Revoke revokes a member, named by peer id or by name (unambiguous), and
// returns its peer id. Its connections close at once.
func (n *Node) Revoke(ctx context.Context, member string) (string, error) {
	id, err := n.resolveMember(ctx, member)
	if err != nil {
		return "", err
	}
	if id == n.self.String() {
		return "", api.BadRequest(errors.New("a node cannot revoke itself"))
	}
	if err := n.store.RevokeMember(ctx, id); err != nil {
		return "", err
	}
	if n.net != nil && n.net.admission != nil {
		n.net.admission.Changed()
	}
	return id, nil
}

// resolveMember finds a member by peer id or by name (which must be
// unambiguous).
func (n *Node) resolveMember(ctx context.Context, s string) (string, error) {
	ms, err := n.Members(ctx)
	if err != nil {
		return "", err
	}
	var found []string
	for _, m := range ms {
		if m.PeerID == s {
			return s, nil
		}
		if m.Name == s {
			found = append(found, m.PeerID)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("member %q: %w (see ferry members)", s, crdt.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return "", api.BadRequest(fmt.Errorf("%d members are named %q: give the peer id", len(found), s))
}
