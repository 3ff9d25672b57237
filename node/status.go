package node

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

// Status reports the node's identity, network and replication state.
func (n *Node) Status(ctx context.Context) apijson.Status {
	st := n.store.Stats(ctx)
	s := apijson.Status{
		PeerID:       n.self.String(),
		Name:         n.cfg.Name,
		Role:         n.cfg.Role,
		Dir:          n.cfg.Dir,
		Running:      n.net != nil,
		Online:       !n.Offline(),
		ListenAddrs:  []string{},
		Heads:        make([]string, len(st.Heads)),
		DAGHeight:    st.MaxHeight,
		Dirty:        st.Dirty,
		RepairReason: st.RepairReason,
		FailedWrites: st.FailedWrites,
		QueuedJobs:   st.QueuedJobs,
		MalformedOps: st.Malformed,
		Secured:      n.cfg.secured(),
		Private:      n.cfg.SwarmKey != nil,
		Founder:      n.cfg.Founder,
		Epoch:        n.epochStatus(),
	}
	if sp, err := n.disk.Space(); err == nil {
		s.Disk = &sp
	}
	if s.Running {
		// Without a running node, this process is the CLI command's.
		s.Memory = memoryStatus()
	}
	for i, h := range st.Heads {
		s.Heads[i] = h.String()
	}
	sort.Strings(s.Heads)
	if u, err := n.acks.unacked(ctx); err == nil {
		s.Unacked = &u
	} else {
		n.log.Warn("status: unacknowledged edits", "err", err)
	}
	n.channelStatus(ctx, &s)
	if n.cfg.secured() {
		m := n.store.IsCurrentMember(ctx, n.self.String())
		s.Member = &m
	}
	n.workflowStatus(ctx, &s)
	for _, a := range n.Addrs() {
		s.ListenAddrs = append(s.ListenAddrs, a.String())
	}
	if !n.netUp() {
		// Without a running node (a CLI command opened the store) the
		// digest is not computed: a first one reads the whole store.
		return s
	}
	bs := n.net.blocks.Stats()
	s.BlocksFetched = bs.FetchedBlocks
	if bs.InProgress {
		s.CatchUp = &apijson.CatchUp{Peer: bs.Peer.String(), Blocks: bs.Current.Blocks,
			Remaining: max(0, bs.Current.Total-bs.Current.Blocks), Bytes: bs.Current.Bytes}
	}
	switch d, ok, err := n.store.TryDigest(ctx); {
	case err != nil:
		n.log.Warn("status: digest", "err", err)
	case ok:
		s.Digest = d.String()
		if ig, err := n.router.Ignored(ctx); err != nil { // every channel too
			n.log.Warn("status: ignored operations", "err", err)
		} else if s.IgnoredOps = len(ig); len(ig) > 0 {
			s.Ignored = apijson.FromIgnored(ig)
		}
	default:
		s.DigestPending = true
	}
	if n.net.admission != nil {
		s.RefusedStreams = n.net.admission.Refused()
	}
	s.ConnectedPeers = len(n.net.host.Network().Peers())
	return s
}

// Peers lists configured, connected and known peers (those that wrote their
// name into the replicated _nodes collection), sorted by id.
func (n *Node) Peers(ctx context.Context) ([]apijson.PeerInfo, error) {
	byID := map[string]*apijson.PeerInfo{}
	get := func(id string) *apijson.PeerInfo {
		if p := byID[id]; p != nil {
			return p
		}
		p := &apijson.PeerInfo{ID: id}
		byID[id] = p
		return p
	}
	nodes, err := n.store.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	for id, info := range nodes {
		if id == n.self.String() {
			continue
		}
		p := get(id)
		p.Name, p.Role = info.Name, info.Role
		if pid, err := peer.Decode(id); err == nil && n.cfg.secured() {
			p.Role = n.roleOf(ctx, pid) // the membership's, not what it says
		}
	}
	for _, a := range n.cfg.Peers {
		if info, err := peer.AddrInfoFromP2pAddr(a); err == nil && info.ID != n.self {
			get(info.ID.String()).Configured = true
		}
	}
	if n.netUp() {
		for _, i := range n.net.peering.Learned() {
			get(i.ID.String()).Learned = true
		}
		for _, id := range n.net.host.Network().Peers() {
			get(id.String()).Connected = true
		}
		for id, p := range byID {
			pid, err := peer.Decode(id)
			if err != nil {
				continue
			}
			for _, a := range n.net.host.Peerstore().Addrs(pid) {
				p.Addrs = append(p.Addrs, a.String())
			}
			slices.Sort(p.Addrs) // the peerstore's order changes from call to call
			if t, ok := n.net.heads.LastExchange(pid); ok {
				p.LastSync = t
			}
			if inc, ok := n.net.formats.Peer(pid); ok {
				p.Incompatible = inc.Reason
			}
			if ep, ok := n.net.heads.PeerEpoch(pid); ok {
				p.Epoch = ep.String()
			}
		}
	}
	out := make([]apijson.PeerInfo, 0, len(byID))
	for _, p := range byID {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// roleOf is a peer's role: the one its membership gives it, or in an open
// network the one it recorded itself in _nodes ("" when unknown).
func (n *Node) roleOf(ctx context.Context, p peer.ID) string {
	if n.cfg.secured() {
		if m, ok, err := n.store.Member(ctx, p.String()); err == nil && ok && !m.Revoked {
			return m.Role
		}
		return ""
	}
	return n.Names(ctx)[p.String()].Role
}

// Names maps writer ids to what the nodes recorded of themselves in _nodes
// (name and role), for output. It is read once and kept until _nodes
// changes: callers must not modify the map.
func (n *Node) Names(ctx context.Context) map[string]crdt.NodeInfo {
	return n.names.get(ctx, n)
}

// nameCache holds _nodes between its changes.
type nameCache struct {
	mu    sync.Mutex
	gen   uint64 // bumped by invalidate
	valid bool
	nodes map[string]crdt.NodeInfo
}

func (c *nameCache) invalidate() {
	c.mu.Lock()
	c.gen++
	c.valid = false
	c.mu.Unlock()
}

func (c *nameCache) get(ctx context.Context, n *Node) map[string]crdt.NodeInfo {
	c.mu.Lock()
	if c.valid {
		defer c.mu.Unlock()
		return c.nodes
	}
	gen := c.gen
	c.mu.Unlock()
	nodes, err := n.store.Nodes(ctx)
	if err != nil {
		n.log.Warn("list node names", "err", err)
		return nodes
	}
	c.mu.Lock()
	if c.gen == gen { // no change while reading
		c.nodes, c.valid = nodes, true
	}
	c.mu.Unlock()
	return nodes
}
