package blocksync

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-crm/ferry/internal/lifecycle"
	"github.com/ferry-crm/ferry/node/wire"
	"github.com/ipfs/boxo/blockstore"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocol is Ferry's block sync protocol (see the package comment for the
// frames). Its version is the store format (wire.Version): the blocks are
// in it.
const Protocol protocol.ID = "/ferry/blocks/" + wire.Version

// MaxBlockSize is the largest block accepted (libp2p's and bitswap's limit).
const MaxBlockSize = 2 << 20

// ErrViolation is wrapped by the errors of a fetch that failed because the
// responder broke the protocol (bad block, more blocks than announced,
// malformed frame...), as opposed to network errors.
var ErrViolation = errors.New("block sync: protocol violation")

var errClosed = errors.New("block sync: closed")

// HeadsFunc returns this node's current heads (the caller passes the crdt
// store's Heads).
type HeadsFunc func(ctx context.Context) ([]cid.Cid, error)

const (
	// defaultMaxServing bounds the requests a responder serves at once
	// (unless WithServingSlots gives it slots shared with other Syncers).
	defaultMaxServing = 4
	// defaultSlotWait bounds how long a request waits for a slot.
	defaultSlotWait = 30 * time.Second
	// defaultIdle is the per-frame inactivity deadline, both roles.
	defaultIdle = 30 * time.Second
	// defaultWalk bounds the responder's DAG walk before the header.
	defaultWalk = 60 * time.Second
	// defaultPrepare is how long the requester waits for the responder's
	// first answer (slot wait + walk + margin).
	defaultPrepare = defaultSlotWait + defaultWalk + 30*time.Second
	// defaultChunk is the number of blocks per blockstore PutMany.
	defaultChunk = 256
	// defaultLocatorBudget bounds the blocks the requester reads to build a
	// locator.
	defaultLocatorBudget = 1 << 15
)

// Progress is the state of a running fetch: blocks and bytes received,
// verified and written so far, and the number of blocks the responder
// announced.
type Progress struct {
	Blocks, Total int
	Bytes         int64
}

// Result is the outcome of a successful fetch.
type Result struct {
	// Heads are the responder's heads: hand them to go-ds-crdt now.
	Heads []cid.Cid
	// Blocks and Bytes were received, verified and written.
	Blocks int
	Bytes  int64
	// Duration is the wall time of the exchange.
	Duration time.Duration
}

// Stats are totals since New, and the fetch in progress.
type Stats struct {
	FetchedBlocks, FetchedBytes int64
	ServedBlocks, ServedBytes   int64
	// InProgress reports a running fetch; Current and Peer describe it (the
	// oldest one if several peers are being fetched from).
	InProgress bool
	Current    Progress
	Peer       peer.ID
}

// config holds the limits; tests shorten them.
type config struct {
	maxServing    int
	slotWait      time.Duration
	idle          time.Duration
	walk          time.Duration
	prepare       time.Duration
	chunk         int
	locatorBudget int
	protocol      protocol.ID // "": Protocol
	slots         *Slots      // nil: NewSlots(maxServing) of its own
}

func defaultConfig() config {
	return config{
		maxServing:    defaultMaxServing,
		slotWait:      defaultSlotWait,
		idle:          defaultIdle,
		walk:          defaultWalk,
		prepare:       defaultPrepare,
		chunk:         defaultChunk,
		locatorBudget: defaultLocatorBudget,
	}
}

// Syncer serves and fetches missing DAG blocks in bulk (Protocol, or
// WithProtocol's).
type Syncer struct {
	h      host.Host
	bstore blockstore.Blockstore
	heads  HeadsFunc
	log    *slog.Logger
	cfg    config
	slots  *Slots
	life   *lifecycle.Group

	mu          sync.Mutex // guards the fields below
	fetches     map[peer.ID]*fetchCall
	seq         uint64
	serving     int // requests being served (holding a slot)
	peakServing int // highest serving seen, for tests

	fetchedBlocks, fetchedBytes atomic.Int64
	servedBlocks, servedBytes   atomic.Int64
}

// fetchCall is one running fetch, shared by the callers waiting for it.
type fetchCall struct {
	seq     uint64
	peer    peer.ID
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int
	nextID  int
	notify  map[int]func(Progress)
	cur     Progress // guarded by Syncer.mu
	res     Result   // set before done is closed
	err     error
}

// New starts a Syncer: it registers the Protocol responder (or
// WithProtocol's) on h. bstore is the blockstore go-ds-crdt's DAG service
// uses; heads returns this node's current heads. log may be nil
// (slog.Default).
func New(h host.Host, bstore blockstore.Blockstore, heads HeadsFunc, log *slog.Logger, opts ...Option) *Syncer {
	return newSyncer(h, bstore, heads, log, defaultConfig(), opts...)
}

func newSyncer(h host.Host, bstore blockstore.Blockstore, heads HeadsFunc, log *slog.Logger, cfg config, opts ...Option) *Syncer {
	if log == nil {
		log = slog.Default()
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.protocol == "" {
		cfg.protocol = Protocol
	}
	if cfg.slots == nil {
		cfg.slots = NewSlots(cfg.maxServing)
	}
	s := &Syncer{
		h:       h,
		bstore:  bstore,
		heads:   heads,
		log:     log,
		cfg:     cfg,
		slots:   cfg.slots,
		life:    lifecycle.New(),
		fetches: make(map[peer.ID]*fetchCall),
	}
	h.SetStreamHandler(cfg.protocol, s.handle)
	return s
}

// Close removes the protocol handler, cancels running fetches and serves
// (their streams are reset) and waits for them. It always returns nil. Safe
// to call more than once.
func (s *Syncer) Close() error {
	s.life.Close(func() { s.h.RemoveStreamHandler(s.cfg.protocol) })
	return nil
}

// Stats returns totals since New and the fetch in progress, if any.
func (s *Syncer) Stats() Stats {
	st := Stats{
		FetchedBlocks: s.fetchedBlocks.Load(),
		FetchedBytes:  s.fetchedBytes.Load(),
		ServedBlocks:  s.servedBlocks.Load(),
		ServedBytes:   s.servedBytes.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest *fetchCall
	for _, c := range s.fetches {
		if oldest == nil || c.seq < oldest.seq {
			oldest = c
		}
	}
	if oldest != nil {
		st.InProgress = true
		st.Current = oldest.cur
		st.Peer = oldest.peer
	}
	return st
}
