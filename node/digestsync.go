package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"

	"github.com/ferry-crm/ferry/crdt"
)

// The digest protocol compares two nodes' visible state without moving
// records: a request with no buckets is answered with the 256 bucket
// digests (crdt.DigestBuckets); a request naming buckets is answered with
// the hash of every record in them. Frames are uvarint-length-prefixed JSON.

// DigestProtocol is the digest exchange's protocol id.
const DigestProtocol protocol.ID = "/ferry/digest/1.0.0"

const (
	digestMaxRequest  = 4 << 10
	digestMaxResponse = 32 << 20
	digestTimeout     = 30 * time.Second
)

type digestRequest struct {
	Buckets []int `json:"buckets,omitempty"`
}

type digestResponse struct {
	Buckets []string          `json:"buckets,omitempty"`
	Records map[string]string `json:"records,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// handleDigest answers digest requests.
func (n *Node) handleDigest(str network.Stream) {
	defer str.Close()
	_ = str.SetDeadline(time.Now().Add(digestTimeout))
	ctx, cancel := context.WithTimeout(n.ctx, digestTimeout)
	defer cancel()
	req, err := msgio.NewVarintReaderSize(str, digestMaxRequest).ReadMsg()
	if err != nil {
		_ = str.Reset()
		return
	}
	var r digestRequest
	if err := json.Unmarshal(req, &r); err != nil || len(r.Buckets) > 256 {
		n.log.Debug("digest: bad request", "peer", str.Conn().RemotePeer(), "err", err)
		_ = str.Reset()
		return
	}
	var resp digestResponse
	if r.Buckets == nil {
		b, err := n.store.DigestBuckets(ctx)
		if err != nil {
			resp.Error = err.Error()
		}
		for _, d := range b {
			resp.Buckets = append(resp.Buckets, d.String())
		}
	} else {
		for _, b := range r.Buckets {
			if b < 0 || b > 255 {
				_ = str.Reset()
				return
			}
		}
		hashes, err := n.store.RecordHashes(ctx, r.Buckets)
		if err != nil {
			resp.Error = err.Error()
		}
		resp.Records = map[string]string{}
		for k, h := range hashes {
			resp.Records[k] = h.String()
		}
	}
	data, err := json.Marshal(resp)
	if err != nil || len(data) > digestMaxResponse {
		n.log.Warn("digest: response too large", "bytes", len(data))
		_ = str.Reset()
		return
	}
	if err := msgio.NewVarintWriter(str).WriteMsg(data); err != nil {
		_ = str.Reset()
	}
}

// askDigest sends one digest request to p.
func (n *Node) askDigest(ctx context.Context, p peer.ID, req digestRequest) (*digestResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, digestTimeout)
	defer cancel()
	str, err := n.host.NewStream(network.WithNoDial(ctx, "digest"), p, DigestProtocol)
	if err != nil {
		return nil, fmt.Errorf("digest of %s: %w", p, err)
	}
	defer str.Close()
	_ = str.SetDeadline(time.Now().Add(digestTimeout))
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if err := msgio.NewVarintWriter(str).WriteMsg(data); err != nil {
		_ = str.Reset()
		return nil, fmt.Errorf("digest of %s: %w", p, err)
	}
	msg, err := msgio.NewVarintReaderSize(str, digestMaxResponse).ReadMsg()
	if err != nil {
		_ = str.Reset()
		return nil, fmt.Errorf("digest of %s: %w", p, err)
	}
	var resp digestResponse
	if err := json.Unmarshal(msg, &resp); err != nil {
		return nil, fmt.Errorf("digest of %s: bad answer: %w", p, err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("digest of %s: %s", p, resp.Error)
	}
	return &resp, nil
}

// peerBuckets returns p's bucket digests.
func (n *Node) peerBuckets(ctx context.Context, p peer.ID) (crdt.DigestBuckets, error) {
	var out crdt.DigestBuckets
	resp, err := n.askDigest(ctx, p, digestRequest{})
	if err != nil {
		return out, err
	}
	if len(resp.Buckets) != len(out) {
		return out, fmt.Errorf("digest of %s: %d buckets", p, len(resp.Buckets))
	}
	for i, s := range resp.Buckets {
		if out[i], err = parseDigest(s); err != nil {
			return out, fmt.Errorf("digest of %s: %w", p, err)
		}
	}
	return out, nil
}

func parseDigest(s string) (crdt.Digest, error) {
	var d crdt.Digest
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(d) {
		return d, fmt.Errorf("bad digest %q", s)
	}
	copy(d[:], b)
	return d, nil
}

// DiffRecord is a record that differs between this node and a peer.
type DiffRecord struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
	Here       bool   `json:"here"`  // this node has it
	There      bool   `json:"there"` // the peer has it
}

// DiffResult compares this node's visible state with a peer's.
type DiffResult struct {
	Peer       string       `json:"peer_id"`
	PeerName   string       `json:"peer_name,omitempty"`
	Identical  bool         `json:"identical"`
	Digest     string       `json:"digest"`
	PeerDigest string       `json:"peer_digest"`
	Records    []DiffRecord `json:"records"`
}

// Diff compares this node's visible state with connected peer p's: digests
// first, then, for the buckets that differ, the hash of every record.
func (n *Node) Diff(ctx context.Context, p peer.ID) (DiffResult, error) {
	res := DiffResult{Peer: p.String(), Records: []DiffRecord{}}
	if n.host == nil {
		return res, errors.New("node has no network")
	}
	if n.host.Network().Connectedness(p) != network.Connected {
		return res, fmt.Errorf("not connected to %s", p)
	}
	theirs, err := n.peerBuckets(ctx, p)
	if err != nil {
		return res, err
	}
	ours, err := n.store.DigestBuckets(ctx)
	if err != nil {
		return res, err
	}
	res.Digest, res.PeerDigest = ours.Sum().String(), theirs.Sum().String()
	var differ []int
	for i := range ours {
		if ours[i] != theirs[i] {
			differ = append(differ, i)
		}
	}
	res.Identical = len(differ) == 0
	if res.Identical {
		return res, nil
	}
	local, err := n.store.RecordHashes(ctx, differ)
	if err != nil {
		return res, err
	}
	resp, err := n.askDigest(ctx, p, digestRequest{Buckets: differ})
	if err != nil {
		return res, err
	}
	keys := map[string]bool{}
	for k := range local {
		keys[k] = true
	}
	for k := range resp.Records {
		keys[k] = true
	}
	for k := range keys {
		here, hasHere := local[k]
		there, hasThere := resp.Records[k]
		if hasHere && hasThere && here.String() == there {
			continue
		}
		coll, eid, ok := strings.Cut(k, "/")
		if !ok {
			continue
		}
		id, err := crdt.UnescapeID(eid)
		if err != nil {
			continue
		}
		res.Records = append(res.Records, DiffRecord{Collection: coll, ID: id, Here: hasHere, There: hasThere})
	}
	sort.Slice(res.Records, func(i, j int) bool {
		a, b := res.Records[i], res.Records[j]
		return a.Collection < b.Collection || a.Collection == b.Collection && a.ID < b.ID
	})
	return res, nil
}

// PeerSync is a connected peer's sync state.
type PeerSync struct {
	Peer   string `json:"peer_id"`
	Name   string `json:"name,omitempty"`
	InSync bool   `json:"in_sync"`
	Digest string `json:"digest,omitempty"`
	Error  string `json:"error,omitempty"`
}

// SyncState compares this node's digest with every connected Ferry peer's.
func (n *Node) SyncState(ctx context.Context) (string, []PeerSync, error) {
	ours, err := n.store.Digest(ctx)
	if err != nil {
		return "", nil, err
	}
	if n.host == nil {
		return ours.String(), nil, nil
	}
	nodes, _ := n.store.Nodes(ctx)
	var out []PeerSync
	for _, p := range n.ferryPeers() {
		ps := PeerSync{Peer: p.String(), Name: nodes[p.String()].Name}
		b, err := n.peerBuckets(ctx, p)
		if err != nil {
			ps.Error = err.Error()
		} else {
			d := b.Sum()
			ps.Digest, ps.InSync = d.String(), d == ours
		}
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return ours.String(), out, nil
}

// ferryPeers lists connected peers that speak Ferry's digest protocol.
func (n *Node) ferryPeers() []peer.ID {
	var out []peer.ID
	for _, p := range n.host.Network().Peers() {
		if ok, err := n.host.Peerstore().SupportsProtocols(p, DigestProtocol); err == nil && len(ok) > 0 {
			out = append(out, p)
		}
	}
	return out
}

// SyncNow exchanges heads with every connected peer at once.
func (n *Node) SyncNow(ctx context.Context) []PeerSync {
	var out []PeerSync
	if n.host == nil {
		return out
	}
	for _, p := range n.host.Network().Peers() {
		ps := PeerSync{Peer: p.String()}
		if err := n.heads.Exchange(ctx, p); err != nil {
			ps.Error = err.Error()
		}
		out = append(out, ps)
	}
	return out
}

// ResolvePeer finds a peer by id or by the name it recorded in _nodes.
func (n *Node) ResolvePeer(ctx context.Context, s string) (peer.ID, error) {
	if p, err := peer.Decode(s); err == nil {
		return p, nil
	}
	nodes, err := n.store.Nodes(ctx)
	if err != nil {
		return "", err
	}
	var found []peer.ID
	for id, info := range nodes {
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

// syncLoop exchanges heads with every connected peer every interval, on top
// of the exchanges made when connections form and when heads change.
func (n *Node) syncLoop(interval time.Duration) {
	defer n.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.exchangeWithAll(n.ctx)
		}
	}
}
