package p2p

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// sessionMaker is what go-ds-crdt looks for (crdt.SessionDAGService) to use
// one bitswap session per DAG walk.
type sessionMaker interface {
	Session(context.Context) ipld.NodeGetter
}

// DAGOption configures NewDAGService.
type DAGOption func(*dagOptions)

type dagOptions struct {
	prefix protocol.ID
	allow  func(peer.ID) bool
	small  bool
}

// WithProtocolPrefix runs bitswap on prefix + bitswap's protocol ids (e.g.
// "/ferry/ch/west/ipfs/bitswap/1.2.0", see wire.ChannelPrefix) instead of
// the default ones: it only talks to peers running a bitswap with the same
// prefix. Close then also removes its stream handlers from the host.
func WithProtocolPrefix(prefix protocol.ID) DAGOption {
	return func(o *dagOptions) { o.prefix = prefix }
}

// WithAllow makes bitswap serve blocks only to the peers allow accepts: a
// want from any other peer is denied (answered DONT_HAVE if the peer asked
// for that answer), whatever the block. It is checked when the want
// arrives (bitswap.WithPeerBlockRequestFilter), so it is defence in depth
// behind a host that refuses the peer's streams (node/chanhost).
func WithAllow(allow func(peer.ID) bool) DAGOption {
	return func(o *dagOptions) { o.allow = allow }
}

// WithSmallEngine gives bitswap's server few workers (8 blockstore
// workers, 2 task workers, 2 engine task workers, instead of about 150
// goroutines by default), for a node running one bitswap per channel.
func WithSmallEngine() DAGOption {
	return func(o *dagOptions) { o.small = true }
}

// NewDAGService builds the DAG syncer used by go-ds-crdt: bitswap over h (no
// content routing: blocks are only asked from connected peers), a block
// service over bstore with bitswap as its exchange, and a merkledag DAG
// service. Every Get and GetMany, on the service and on its sessions, is
// bounded by timeout (no bound if timeout <= 0). The returned io.Closer stops
// bitswap (safe to call more than once); close it after the crdt store.
// ctx bounds bitswap's lifetime as well. Without options, bitswap runs on
// its default protocols, serves any peer and has its default workers.
func NewDAGService(ctx context.Context, h host.Host, bstore blockstore.Blockstore, timeout time.Duration, opts ...DAGOption) (ipld.DAGService, *Bitswap, error) {
	var o dagOptions
	for _, opt := range opts {
		opt(&o)
	}
	var netOpts []bsnet.NetOpt
	var handlers []protocol.ID
	if o.prefix != "" {
		netOpts = append(netOpts, bsnet.Prefix(o.prefix))
		for _, id := range []protocol.ID{bsnet.ProtocolBitswap, bsnet.ProtocolBitswapOneOne, bsnet.ProtocolBitswapOneZero, bsnet.ProtocolBitswapNoVers} {
			handlers = append(handlers, o.prefix+id)
		}
	}
	var bsOpts []bitswap.Option
	if allow := o.allow; allow != nil {
		bsOpts = append(bsOpts, bitswap.WithPeerBlockRequestFilter(func(p peer.ID, _ cid.Cid) bool { return allow(p) }))
	}
	if o.small {
		bsOpts = append(bsOpts,
			bitswap.EngineBlockstoreWorkerCount(smallBlockstoreWorkers),
			bitswap.TaskWorkerCount(smallTaskWorkers),
			bitswap.EngineTaskWorkerCount(smallEngineTaskWorkers))
	}
	net := bsnet.NewFromIpfsHost(h, netOpts...)
	bs := bitswap.New(ctx, net, nil, bstore, bsOpts...)
	// bitswap hears of connections as they open: the peers connected
	// already (a channel opened on a running node) are told now, or it
	// would never ask them for a block.
	for _, p := range h.Network().Peers() {
		if o.allow == nil || o.allow(p) {
			bs.PeerConnected(p)
		}
	}
	bserv := blockservice.New(bstore, bs)
	dag := merkledag.NewDAGService(bserv)
	return &timeoutDAG{DAGService: dag, timeout: timeout}, &Bitswap{bs: bs, h: h, handlers: handlers}, nil
}

// WithSmallEngine's worker counts.
const (
	smallBlockstoreWorkers = 8
	smallTaskWorkers       = 2
	smallEngineTaskWorkers = 2
)

// Bitswap stops bitswap (Close, safe to call twice) and tells it of
// blocks written to the blockstore behind its back, so that peers waiting
// for them get them.
type Bitswap struct {
	bs       *bitswap.Bitswap
	h        host.Host
	handlers []protocol.ID // removed on Close (WithProtocolPrefix only)
	once     sync.Once
}

// Close stops bitswap and, if it runs on a protocol prefix, removes its
// stream handlers.
func (b *Bitswap) Close() error {
	var err error
	b.once.Do(func() {
		err = b.bs.Close()
		for _, id := range b.handlers {
			b.h.RemoveStreamHandler(id)
		}
		if err != nil {
			err = fmt.Errorf("close bitswap: %w", err)
		}
	})
	return err
}

// NotifyNewBlocks announces blocks that were written to the blockstore
// directly (the bulk block sync does): bitswap answers peers that want them.
func (b *Bitswap) NotifyNewBlocks(ctx context.Context, blks ...blocks.Block) error {
	return b.bs.NotifyNewBlocks(ctx, blks...)
}

// Notifying returns bstore telling bitswap of every block put through it
// (blocks fetched in bulk: a peer may be waiting for one of them already).
func (b *Bitswap) Notifying(bstore blockstore.Blockstore) blockstore.Blockstore {
	return notifyingBlockstore{Blockstore: bstore, bitswap: b}
}

type notifyingBlockstore struct {
	blockstore.Blockstore
	bitswap *Bitswap
}

func (b notifyingBlockstore) Put(ctx context.Context, blk blocks.Block) error {
	if err := b.Blockstore.Put(ctx, blk); err != nil {
		return err
	}
	return b.bitswap.NotifyNewBlocks(ctx, blk)
}

func (b notifyingBlockstore) PutMany(ctx context.Context, blks []blocks.Block) error {
	if err := b.Blockstore.PutMany(ctx, blks); err != nil {
		return err
	}
	return b.bitswap.NotifyNewBlocks(ctx, blks...)
}

// NewOfflineDAGService returns a DAG service over bstore without network (an
// offline exchange): blocks missing locally are not found. For CLI use
// without a running node, and tests.
func NewOfflineDAGService(bstore blockstore.Blockstore) ipld.DAGService {
	return merkledag.NewDAGService(blockservice.New(bstore, offline.Exchange(bstore)))
}

// timeoutDAG bounds every fetch. go-ds-crdt v0.6.8's priority lookup for a
// replica without heads has no timeout of its own.
type timeoutDAG struct {
	ipld.DAGService
	timeout time.Duration
}

func (d *timeoutDAG) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	return timeoutGet(ctx, d.DAGService, d.timeout, c)
}

func (d *timeoutDAG) GetMany(ctx context.Context, keys []cid.Cid) <-chan *ipld.NodeOption {
	return timeoutGetMany(ctx, d.DAGService, d.timeout, keys)
}

// Session returns a session NodeGetter (one bitswap session) whose fetches
// are bounded like the service's.
func (d *timeoutDAG) Session(ctx context.Context) ipld.NodeGetter {
	var ng ipld.NodeGetter = d.DAGService
	if sm, ok := d.DAGService.(sessionMaker); ok {
		ng = sm.Session(ctx)
	}
	return &timeoutGetter{ng: ng, timeout: d.timeout}
}

type timeoutGetter struct {
	ng      ipld.NodeGetter
	timeout time.Duration
}

func (g *timeoutGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	return timeoutGet(ctx, g.ng, g.timeout, c)
}

func (g *timeoutGetter) GetMany(ctx context.Context, keys []cid.Cid) <-chan *ipld.NodeOption {
	return timeoutGetMany(ctx, g.ng, g.timeout, keys)
}

func timeoutGet(ctx context.Context, ng ipld.NodeGetter, timeout time.Duration, c cid.Cid) (ipld.Node, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return ng.Get(ctx, c)
}

// timeoutGetMany bounds the whole batch by timeout. The results are relayed
// through a channel buffered for every possible result, so the relay never
// blocks and never leaks even if the caller stops reading.
func timeoutGetMany(ctx context.Context, ng ipld.NodeGetter, timeout time.Duration, keys []cid.Cid) <-chan *ipld.NodeOption {
	if timeout <= 0 {
		return ng.GetMany(ctx, keys)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	in := ng.GetMany(ctx, keys)
	out := make(chan *ipld.NodeOption, len(keys)+1)
	go func() {
		defer cancel()
		defer close(out)
		for opt := range in {
			select {
			case out <- opt:
			default:
				// More results than keys: only possible after an
				// error was already delivered; drop the extra.
			}
		}
	}()
	return out
}
