// Package digestsync compares two nodes' visible state without moving
// records: a request with no buckets is answered with the 256 bucket
// digests (crdt.DigestBuckets); a request naming buckets is answered with
// the hash of every record in them. Frames are uvarint-length-prefixed
// JSON. `ferry sync` and `ferry diff` are built on it.
package digestsync

import (
	"context"
	"encoding/hex"
	"encoding/json"

	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/lifecycle"
	"github.com/ferry-crm/ferry/node/wire"
)

// Protocol is the digest exchange's protocol id. Its version is the store
// format (wire.Version): digests of different formats are not comparable.
const Protocol protocol.ID = protocolBase + wire.Version

const protocolBase = "/ferry/digest/"

const (
	maxRequest  = 4 << 10
	maxResponse = 32 << 20
	timeout     = 30 * time.Second
)

// Digests is what the protocol reads of the store.
type Digests interface {
	DigestBuckets(ctx context.Context) (crdt.DigestBuckets, error)
	RecordHashes(ctx context.Context, buckets []int) (map[string]crdt.Digest, error)
}

type request struct {
	Buckets []int `json:"buckets,omitempty"`
}

type response struct {
	Buckets []string          `json:"buckets,omitempty"`
	Records map[string]string `json:"records,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// Service answers digest requests and asks peers for theirs.
type Service struct {
	h     host.Host
	store Digests
	log   *slog.Logger
	proto protocol.ID
	life  *lifecycle.Group
}

// Option configures New.
type Option func(*Service)

// WithProtocol runs the service on id instead of Protocol, answering and
// asking: it only compares with peers running it on the same id (a
// channel's digests run on one under wire.ChannelPrefix).
func WithProtocol(id protocol.ID) Option {
	return func(s *Service) { s.proto = id }
}

// New serves store's digests on h. log may be nil (slog.Default).
func New(h host.Host, store Digests, log *slog.Logger, opts ...Option) *Service {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{h: h, store: store, log: log, proto: Protocol, life: lifecycle.New()}
	for _, opt := range opts {
		opt(s)
	}
	h.SetStreamHandler(s.proto, s.handle)
	return s
}

// Close stops answering and waits for the answers in progress. Safe to
// call twice.
func (s *Service) Close() error {
	s.life.Close(func() { s.h.RemoveStreamHandler(s.proto) })
	return nil
}

// Peers lists connected peers that speak the service's protocol (Ferry
// nodes; on a channel's protocol, those that hold the channel), as their
// identify told.
func (s *Service) Peers() []peer.ID {
	var out []peer.ID
	for _, p := range s.h.Network().Peers() {
		if ok, err := s.h.Peerstore().SupportsProtocols(p, s.proto); err == nil && len(ok) > 0 {
			out = append(out, p)
		}
	}
	return out
}

// handle answers one digest request.
func (s *Service) handle(str network.Stream) {
	if !s.life.Enter() {
		_ = str.Reset()
		return
	}
	defer s.life.Leave()
	defer str.Close()
	_ = str.SetDeadline(time.Now().Add(timeout))
	ctx, cancel := context.WithTimeout(s.life.Context(), timeout)
	defer cancel()
	msg, err := msgio.NewVarintReaderSize(str, maxRequest).ReadMsg()
	if err != nil {
		_ = str.Reset()
		return
	}
	var req request
	if err := json.Unmarshal(msg, &req); err != nil || len(req.Buckets) > 256 {
		s.log.Debug("digest: bad request", "peer", str.Conn().RemotePeer(), "err", err)
		_ = str.Reset()
		return
	}
	var resp response
	if req.Buckets == nil {
		b, err := s.store.DigestBuckets(ctx)
		if err != nil {
			resp.Error = err.Error()
		}
		for _, d := range b {
			resp.Buckets = append(resp.Buckets, d.String())
		}
	} else {
		for _, b := range req.Buckets {
			if b < 0 || b > 255 {
				_ = str.Reset()
				return
			}
		}
		hashes, err := s.store.RecordHashes(ctx, req.Buckets)
		if err != nil {
			resp.Error = err.Error()
		}
		resp.Records = map[string]string{}
		for k, h := range hashes {
			resp.Records[k] = h.String()
		}
	}
	data, err := json.Marshal(resp)
	if err != nil || len(data) > maxResponse {
		s.log.Warn("digest: response too large", "bytes", len(data))
		_ = str.Reset()
		return
	}
	if err := msgio.NewVarintWriter(str).WriteMsg(data); err != nil {
		_ = str.Reset()
	}
}

// ask sends one digest request to p (never dialing it).
func (s *Service) ask(ctx context.Context, p peer.ID, req request) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	str, err := s.h.NewStream(network.WithNoDial(ctx, "digest"), p, s.proto)
	if err != nil {
		// Only the default protocol's versions are store formats.
		if format, ours, known := wire.PeerFormat(s.h.Peerstore(), p, protocolBase); s.proto == Protocol && known && !ours {
			return nil, fmt.Errorf("digest: %s (%w)", wire.Mismatch(p.String(), format), err)
		}
		return nil, fmt.Errorf("digest of %s: %w", p, err)
	}
	defer str.Close()
	_ = str.SetDeadline(time.Now().Add(timeout))
	data, err := json.Marshal(req)
	if err != nil {
		_ = str.Reset()
		return nil, fmt.Errorf("digest of %s: %w", p, err)
	}
	if err := msgio.NewVarintWriter(str).WriteMsg(data); err != nil {
		_ = str.Reset()
		return nil, fmt.Errorf("digest of %s: %w", p, err)
	}
	msg, err := msgio.NewVarintReaderSize(str, maxResponse).ReadMsg()
	if err != nil {
		_ = str.Reset()
		return nil, fmt.Errorf("digest of %s: %w", p, err)
	}
	var resp response
	if err := json.Unmarshal(msg, &resp); err != nil {
		return nil, fmt.Errorf("digest of %s: bad answer: %w", p, err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("digest of %s: %s", p, resp.Error)
	}
	return &resp, nil
}

// Buckets returns p's bucket digests.
func (s *Service) Buckets(ctx context.Context, p peer.ID) (crdt.DigestBuckets, error) {
	var out crdt.DigestBuckets
	resp, err := s.ask(ctx, p, request{})
	if err != nil {
		return out, err
	}
	if len(resp.Buckets) != len(out) {
		return out, fmt.Errorf("digest of %s: %d buckets", p, len(resp.Buckets))
	}
	for i, str := range resp.Buckets {
		if out[i], err = parseDigest(str); err != nil {
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

// Record is a record that differs between this node and a peer.
type Record struct {
	Collection string
	ID         string
	Here       bool // this node has it
	There      bool // the peer has it
}

// Comparison is this node's visible state compared with a peer's.
type Comparison struct {
	Digest, PeerDigest crdt.Digest
	Records            []Record // sorted by collection, then id
}

// Compare compares this node's visible state with connected peer p's:
// digests first, then, for the buckets that differ, the hash of every
// record.
func (s *Service) Compare(ctx context.Context, p peer.ID) (Comparison, error) {
	var res Comparison
	if s.h.Network().Connectedness(p) != network.Connected {
		return res, fmt.Errorf("not connected to %s", p)
	}
	theirs, err := s.Buckets(ctx, p)
	if err != nil {
		return res, err
	}
	ours, err := s.store.DigestBuckets(ctx)
	if err != nil {
		return res, err
	}
	res.Digest, res.PeerDigest = ours.Sum(), theirs.Sum()
	var differ []int
	for i := range ours {
		if ours[i] != theirs[i] {
			differ = append(differ, i)
		}
	}
	if len(differ) == 0 {
		return res, nil
	}
	local, err := s.store.RecordHashes(ctx, differ)
	if err != nil {
		return res, err
	}
	resp, err := s.ask(ctx, p, request{Buckets: differ})
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
		res.Records = append(res.Records, Record{Collection: coll, ID: id, Here: hasHere, There: hasThere})
	}
	sort.Slice(res.Records, func(i, j int) bool {
		a, b := res.Records[i], res.Records[j]
		return a.Collection < b.Collection || a.Collection == b.Collection && a.ID < b.ID
	})
	return res, nil
}
