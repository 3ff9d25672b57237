package node

// Block sync: Ferry's fast catch-up.
//
// go-ds-crdt learns a block's parents only after fetching it, and bitswap
// waits at least 20 ms between messages to a peer, so a replica that is far
// behind walks the DAG at about 48 blocks/s. Block sync moves every missing
// block in one stream instead: the requester gets the blocks reachable from
// the responder's heads that it does not have, checks each against its CID,
// writes them into its blockstore, and only then hands the responder's heads
// to go-ds-crdt, whose walk finds every block locally (the block service
// looks in the blockstore before asking bitswap).
//
// # Protocol (BlocksProtocol, one exchange per stream)
//
// Every message is a frame: a uvarint length n (n >= 1), then n bytes whose
// first byte is the frame type. A "heads list" below is a go-ds-crdt broadcast
// payload (pb.CRDTBroadcast, see EncodeHeads and ValidateHeadsPayload), so at
// most MaxHeads CIDs in at most MaxHeadsPayload bytes.
//
//	requester -> responder
//	  REQUEST  0x01 | heads list          the requester's heads
//	  LOCATOR  0x02 | heads list          only if asked for (NEED_LOCATOR)
//	responder -> requester
//	  NEED_LOCATOR 0x10 | heads list      the requester's heads it lacks
//	  HEADER   0x11 | uvarint blocks | uvarint bytes | heads list (its heads)
//	  BLOCK    0x12 | uvarint len(cid) | cid | block data
//	  END      0x13
//
// 1. The requester opens a stream and sends REQUEST with its heads.
//
// 2. The requester "has" a CID when it sent it (in REQUEST or LOCATOR): it
// then has that block and every block below it. If the responder lacks some
// of the requester's heads (the requester wrote blocks the responder has not
// seen, e.g. a laptop that worked offline), it cannot tell where the two
// DAGs meet, and without help would send its whole DAG. So it answers
// NEED_LOCATOR with the heads it lacks; the requester walks its own DAG down
// from them and answers LOCATOR with blocks found at depths 1 to 16, then
// about every 1/8 deeper (a few per depth, at most MaxHeads, within a walk
// budget of blockSyncLocatorBudget blocks; see locator). This round happens
// at most once, and only when the requester has blocks the responder lacks.
// CIDs the responder does not have are ignored.
//
// 3. The responder computes the blocks to send: those reachable from its
// heads (at most MaxHeads of them) and not reachable from the requester's
// CIDs, within its own blockstore (links of dag-pb nodes; blocks of other
// codecs have none; blocks it lacks are skipped). When every block involved
// carries a go-ds-crdt priority (the DAG height: a block's priority is
// greater than its children's), it walks both sides together from the top,
// highest priority first, and stops as soon as no block left to visit can
// be one to send: in-sync or nearly in-sync peers cost a handful of reads,
// not a walk of the whole DAG. Otherwise it computes the full closure of the
// requester's CIDs, then walks down from its heads without descending below
// that closure. Both give the same set.
//
// 4. The responder sends HEADER (its heads, and the number of blocks and
// bytes that follow), then one BLOCK per block, read from the blockstore as
// it goes (only the list of CIDs is held in memory), newest first, then END,
// and closes the stream. Any order would do: go-ds-crdt runs only after the
// whole transfer.
//
// 5. The requester checks every BLOCK: the CID parses and uses an accepted
// hash (boxo's verifcid default allowlist, as the block service does), the
// data is at most MaxBlockSize, hashing the data with the CID's prefix gives
// the CID, and no more blocks or bytes arrive than announced; END must come
// after exactly the announced blocks and bytes, followed by the end of the
// stream. Verified blocks are written with PutMany in chunks of
// blockSyncChunk. Any bsViolation resets the stream and fails the fetch
// (wrapping ErrBlockSyncViolation); chunks already written stay (they are
// content-addressed and verified, so harmless).
//
// Deadlines are per frame (blockSyncIdle of inactivity), not per exchange,
// except the wait for the responder's first answer (blockSyncPrepare: it may
// wait for a serving slot and walk its DAG first). Frames are bounded in size
// on both sides; the requester's frames are bounded like a heads payload.
//
// # Concurrency
//
// At most one fetch runs per peer: a Fetch while another to the same peer
// runs joins it and returns the same result (its own ourHeads are not sent;
// blocks go to the shared blockstore either way). A running fetch is
// cancelled only when every caller waiting for it has gone, or on Close.
// The responder serves at most blockSyncMaxServing requests at once; others
// wait for a slot up to blockSyncSlotWait, then are reset.

import (
	"bufio"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/verifcid"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"
)

// BlocksProtocol is Ferry's block sync protocol (see the package comment
// above for the frames).
const BlocksProtocol protocol.ID = "/ferry/blocks/1.0.0"

// MaxBlockSize is the largest block accepted (libp2p's and bitswap's limit).
const MaxBlockSize = 2 << 20

// ErrBlockSyncViolation is wrapped by the errors of a fetch that failed
// because the responder broke the protocol (bad block, more blocks than
// announced, malformed frame...), as opposed to network errors.
var ErrBlockSyncViolation = errors.New("block sync: protocol violation")

var errBlockSyncClosed = errors.New("block sync: closed")

// Frame types.
const (
	bsFrameRequest     byte = 0x01
	bsFrameLocator     byte = 0x02
	bsFrameNeedLocator byte = 0x10
	bsFrameHeader      byte = 0x11
	bsFrameBlock       byte = 0x12
	bsFrameEnd         byte = 0x13
)

const (
	// blockSyncMaxServing bounds the requests a responder serves at once.
	blockSyncMaxServing = 4
	// blockSyncSlotWait bounds how long a request waits for a slot.
	blockSyncSlotWait = 30 * time.Second
	// blockSyncIdle is the per-frame inactivity deadline, both roles.
	blockSyncIdle = 30 * time.Second
	// blockSyncWalk bounds the responder's DAG walk before the header.
	blockSyncWalk = 60 * time.Second
	// blockSyncPrepare is how long the requester waits for the responder's
	// first answer (slot wait + walk + margin).
	blockSyncPrepare = blockSyncSlotWait + blockSyncWalk + 30*time.Second
	// blockSyncChunk is the number of blocks per blockstore PutMany.
	blockSyncChunk = 256
	// blockSyncLocatorBudget bounds the blocks the requester reads to build a
	// locator; blockSyncLocatorPerDepth bounds the CIDs taken at one depth.
	blockSyncLocatorBudget   = 1 << 15
	blockSyncLocatorPerDepth = 16
	// blockSyncMaxCID bounds an encoded CID in a BLOCK frame (verifcid allows
	// digests up to 128 bytes).
	blockSyncMaxCID = 256
	// blockSyncMaxAnnounced bounds the block count of a HEADER.
	blockSyncMaxAnnounced = 1 << 26
	// Frame size limits.
	blockSyncMaxRequestFrame  = 1 + MaxHeadsPayload
	blockSyncMaxResponseFrame = 1 + binary.MaxVarintLen64 + blockSyncMaxCID + MaxBlockSize
)

// FetchProgress is the state of a running fetch: blocks and bytes received,
// verified and written so far, and the number of blocks the responder
// announced.
type FetchProgress struct {
	Blocks, Total int
	Bytes         int64
}

// FetchResult is the outcome of a successful fetch.
type FetchResult struct {
	// Heads are the responder's heads: hand them to go-ds-crdt now.
	Heads []cid.Cid
	// Blocks and Bytes were received, verified and written.
	Blocks int
	Bytes  int64
	// Duration is the wall time of the exchange.
	Duration time.Duration
}

// BlockSyncStats are totals since NewBlockSync, and the fetch in progress.
type BlockSyncStats struct {
	FetchedBlocks, FetchedBytes int64
	ServedBlocks, ServedBytes   int64
	// InProgress reports a running fetch; Current and Peer describe it (the
	// oldest one if several peers are being fetched from).
	InProgress bool
	Current    FetchProgress
	Peer       peer.ID
}

// blockSyncConfig holds the limits; tests shorten them.
type blockSyncConfig struct {
	maxServing    int
	slotWait      time.Duration
	idle          time.Duration
	walk          time.Duration
	prepare       time.Duration
	chunk         int
	locatorBudget int
}

func defaultBlockSyncConfig() blockSyncConfig {
	return blockSyncConfig{
		maxServing:    blockSyncMaxServing,
		slotWait:      blockSyncSlotWait,
		idle:          blockSyncIdle,
		walk:          blockSyncWalk,
		prepare:       blockSyncPrepare,
		chunk:         blockSyncChunk,
		locatorBudget: blockSyncLocatorBudget,
	}
}

// BlockSync serves and fetches missing DAG blocks in bulk (BlocksProtocol).
type BlockSync struct {
	h      host.Host
	bstore blockstore.Blockstore
	heads  HeadsFunc
	log    *slog.Logger
	cfg    blockSyncConfig
	slots  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc

	lifecycle   // its mu also guards the fields below
	fetches     map[peer.ID]*bsFetchCall
	seq         uint64
	serving     int // requests being served (holding a slot)
	peakServing int // highest serving seen, for tests

	fetchedBlocks, fetchedBytes atomic.Int64
	servedBlocks, servedBytes   atomic.Int64

	closeOnce sync.Once
}

// bsFetchCall is one running fetch, shared by the callers waiting for it.
type bsFetchCall struct {
	seq     uint64
	peer    peer.ID
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int
	nextID  int
	notify  map[int]func(FetchProgress)
	cur     FetchProgress // guarded by BlockSync.mu
	res     FetchResult   // set before done is closed
	err     error
}

// NewBlockSync registers the BlocksProtocol responder on h. bstore is the
// blockstore go-ds-crdt's DAG service uses; heads returns this node's
// current heads (the caller passes the crdt store's Heads).
func NewBlockSync(h host.Host, bstore blockstore.Blockstore, heads HeadsFunc, log *slog.Logger) *BlockSync {
	return newBlockSync(h, bstore, heads, log, defaultBlockSyncConfig())
}

func newBlockSync(h host.Host, bstore blockstore.Blockstore, heads HeadsFunc, log *slog.Logger, cfg blockSyncConfig) *BlockSync {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &BlockSync{
		h:       h,
		bstore:  bstore,
		heads:   heads,
		log:     log,
		cfg:     cfg,
		slots:   make(chan struct{}, cfg.maxServing),
		ctx:     ctx,
		cancel:  cancel,
		fetches: make(map[peer.ID]*bsFetchCall),
	}
	h.SetStreamHandler(BlocksProtocol, s.handle)
	return s
}

// Close removes the protocol handler, cancels running fetches and serves
// (their streams are reset) and waits for them. Safe to call more than once.
func (s *BlockSync) Close() error {
	s.closeOnce.Do(func() {
		s.h.RemoveStreamHandler(BlocksProtocol)
		s.shut(s.cancel)
	})
	return nil
}

// Stats returns totals since start and the fetch in progress, if any.
func (s *BlockSync) Stats() BlockSyncStats {
	st := BlockSyncStats{
		FetchedBlocks: s.fetchedBlocks.Load(),
		FetchedBytes:  s.fetchedBytes.Load(),
		ServedBlocks:  s.servedBlocks.Load(),
		ServedBytes:   s.servedBytes.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest *bsFetchCall
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

// Fetch gets from peer p, over an existing connection (it does not dial),
// every block reachable from p's heads that is not reachable from ourHeads,
// verifies each against its CID and writes it into the blockstore. It
// returns p's heads (give them to go-ds-crdt afterwards) and what was
// transferred. progress, if not nil, is called from the fetch's goroutine
// (keep it quick) with the counts so far, after the header and after every
// chunk written.
//
// If a fetch from p is already running, Fetch joins it and returns its
// result (ourHeads is then unused). If ctx ends first, Fetch returns
// ctx.Err(); the fetch itself is cancelled when no caller waits for it.
func (s *BlockSync) Fetch(ctx context.Context, p peer.ID, ourHeads []cid.Cid, progress func(FetchProgress)) (FetchResult, error) {
	if err := ctx.Err(); err != nil {
		return FetchResult{}, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return FetchResult{}, errBlockSyncClosed
	}
	call := s.fetches[p]
	if call == nil {
		cctx, cancel := context.WithCancel(s.ctx)
		s.seq++
		call = &bsFetchCall{seq: s.seq, peer: p, done: make(chan struct{}), cancel: cancel, notify: map[int]func(FetchProgress){}}
		s.fetches[p] = call
		heads := append([]cid.Cid(nil), ourHeads...)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			res, err := s.fetch(cctx, call, p, heads)
			cancel()
			s.mu.Lock()
			call.res, call.err = res, err
			if s.fetches[p] == call {
				delete(s.fetches, p)
			}
			s.mu.Unlock()
			close(call.done)
		}()
	}
	call.waiters++
	id := call.nextID
	call.nextID++
	if progress != nil {
		call.notify[id] = progress
	}
	s.mu.Unlock()

	select {
	case <-call.done:
		return call.res, call.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(call.notify, id)
		if call.waiters--; call.waiters == 0 {
			call.cancel()
		}
		s.mu.Unlock()
		return FetchResult{}, ctx.Err()
	}
}

// report records a fetch's progress and calls the waiters' callbacks.
func (s *BlockSync) report(call *bsFetchCall, prog FetchProgress) {
	s.mu.Lock()
	call.cur = prog
	fns := make([]func(FetchProgress), 0, len(call.notify))
	for _, fn := range call.notify {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(prog)
	}
}

func bsViolation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBlockSyncViolation, fmt.Sprintf(format, args...))
}

// fetch is the requester side.
func (s *BlockSync) fetch(ctx context.Context, call *bsFetchCall, p peer.ID, ourHeads []cid.Cid) (FetchResult, error) {
	start := time.Now()
	if len(ourHeads) > MaxHeads {
		s.log.Warn("block sync: too many heads for one request, sending a subset", "heads", len(ourHeads), "max", MaxHeads)
		ourHeads = ourHeads[:MaxHeads]
	}
	req, err := EncodeHeads(ourHeads)
	if err != nil {
		return FetchResult{}, err
	}

	octx, ocancel := context.WithTimeout(ctx, s.cfg.idle)
	str, err := s.h.NewStream(network.WithNoDial(octx, "block sync"), p, BlocksProtocol)
	ocancel()
	if err != nil {
		return FetchResult{}, fmt.Errorf("open block sync stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	fail := func(err error) (FetchResult, error) {
		stop()
		_ = str.Reset()
		if ctx.Err() != nil && !errors.Is(err, ErrBlockSyncViolation) {
			return FetchResult{}, fmt.Errorf("block sync: %w", ctx.Err())
		}
		return FetchResult{}, err
	}
	r := bufio.NewReaderSize(str, 64<<10)
	// read reads a frame; a clean end of stream, an empty or oversized
	// frame are violations (what says what we wait for).
	read := func(timeout time.Duration, what string) (byte, []byte, error) {
		_ = str.SetReadDeadline(time.Now().Add(timeout))
		typ, body, err := bsReadFrame(r, blockSyncMaxResponseFrame)
		switch {
		case err == nil:
			return typ, body, nil
		case errors.Is(err, io.EOF):
			return 0, nil, bsViolation("stream ended before %s", what)
		case errors.Is(err, errBSFrameTooLarge) || errors.Is(err, errBSEmptyFrame):
			return 0, nil, bsViolation("%v", err)
		}
		return 0, nil, fmt.Errorf("read %s: %w", what, err)
	}

	_ = str.SetWriteDeadline(time.Now().Add(s.cfg.idle))
	if err := bsWriteFrame(str, bsFrameRequest, req); err != nil {
		return fail(fmt.Errorf("send request: %w", err))
	}
	typ, body, err := read(s.cfg.prepare, "the header")
	if err != nil {
		return fail(err)
	}
	if typ == bsFrameNeedLocator {
		unknown, err := ValidateHeadsPayload(body)
		if err != nil {
			return fail(bsViolation("bad locator request: %v", err))
		}
		loc, err := s.locator(ctx, bsIntersect(unknown, ourHeads))
		if err != nil {
			return fail(err)
		}
		payload, err := EncodeHeads(loc)
		if err != nil {
			return fail(err)
		}
		_ = str.SetWriteDeadline(time.Now().Add(s.cfg.idle))
		if err := bsWriteFrame(str, bsFrameLocator, payload); err != nil {
			return fail(fmt.Errorf("send locator: %w", err))
		}
		if typ, body, err = read(s.cfg.prepare, "the header"); err != nil {
			return fail(err)
		}
	}
	if typ != bsFrameHeader {
		return fail(bsViolation("frame type %#x, want header", typ))
	}
	total, totalBytes, heads, err := bsParseHeader(body)
	if err != nil {
		return fail(err)
	}
	_ = str.CloseWrite()
	s.report(call, FetchProgress{Total: total})

	var (
		got      int
		gotBytes int64
		written  int
		wBytes   int64
		batch    = make([]blocks.Block, 0, min(total, s.cfg.chunk))
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.bstore.PutMany(ctx, batch); err != nil {
			return fmt.Errorf("write blocks: %w", err)
		}
		var n int64
		for _, b := range batch {
			n += int64(len(b.RawData()))
		}
		written += len(batch)
		wBytes += n
		s.fetchedBlocks.Add(int64(len(batch)))
		s.fetchedBytes.Add(n)
		clear(batch)
		batch = batch[:0]
		s.report(call, FetchProgress{Blocks: written, Total: total, Bytes: wBytes})
		return nil
	}
	for {
		typ, body, err := read(s.cfg.idle, "the end frame")
		if err != nil {
			return fail(fmt.Errorf("%w (after %d of %d blocks)", err, got, total))
		}
		switch typ {
		case bsFrameBlock:
			if got >= total {
				return fail(bsViolation("more blocks than the %d announced", total))
			}
			blk, err := bsParseBlock(body)
			if err != nil {
				return fail(err)
			}
			gotBytes += int64(len(blk.RawData()))
			if gotBytes > totalBytes {
				return fail(bsViolation("more bytes than the %d announced", totalBytes))
			}
			got++
			batch = append(batch, blk)
			if len(batch) >= s.cfg.chunk {
				if err := flush(); err != nil {
					return fail(err)
				}
			}
		case bsFrameEnd:
			if len(body) != 0 {
				return fail(bsViolation("end frame with %d bytes", len(body)))
			}
			if got != total || gotBytes != totalBytes {
				return fail(bsViolation("got %d blocks (%d bytes), %d (%d bytes) announced", got, gotBytes, total, totalBytes))
			}
			if err := flush(); err != nil {
				return fail(err)
			}
			_ = str.SetReadDeadline(time.Now().Add(s.cfg.idle))
			if n, err := r.Read(make([]byte, 1)); n > 0 || !errors.Is(err, io.EOF) {
				if n > 0 {
					return fail(bsViolation("data after end frame"))
				}
				return fail(fmt.Errorf("after end frame: %w", err))
			}
			if !stop() {
				return FetchResult{}, fmt.Errorf("block sync: %w", ctx.Err())
			}
			_ = str.Close()
			res := FetchResult{Heads: heads, Blocks: written, Bytes: wBytes, Duration: time.Since(start)}
			s.log.Debug("block sync: fetched", "peer", p, "blocks", res.Blocks, "bytes", res.Bytes, "heads", len(heads), "took", res.Duration)
			return res, nil
		default:
			return fail(bsViolation("frame type %#x, want block or end", typ))
		}
	}
}

func bsIntersect(a, b []cid.Cid) []cid.Cid {
	in := make(map[string]struct{}, len(b))
	for _, c := range b {
		in[string(c.Hash())] = struct{}{}
	}
	var out []cid.Cid
	for _, c := range a {
		if _, ok := in[string(c.Hash())]; ok {
			out = append(out, c)
			delete(in, string(c.Hash()))
		}
	}
	return out
}

func bsParseHeader(body []byte) (blocks int, bytes int64, heads []cid.Cid, err error) {
	nb, n := binary.Uvarint(body)
	if n <= 0 {
		return 0, 0, nil, bsViolation("header: bad block count")
	}
	body = body[n:]
	ns, n := binary.Uvarint(body)
	if n <= 0 {
		return 0, 0, nil, bsViolation("header: bad byte count")
	}
	body = body[n:]
	if nb > blockSyncMaxAnnounced {
		return 0, 0, nil, bsViolation("header: %d blocks announced (max %d)", nb, blockSyncMaxAnnounced)
	}
	if ns > nb*MaxBlockSize {
		return 0, 0, nil, bsViolation("header: %d bytes announced for %d blocks", ns, nb)
	}
	heads, err = ValidateHeadsPayload(body)
	if err != nil {
		return 0, 0, nil, bsViolation("header: %v", err)
	}
	return int(nb), int64(ns), heads, nil
}

// bsParseBlock decodes a BLOCK frame body and verifies the block.
func bsParseBlock(body []byte) (blocks.Block, error) {
	cl, n := binary.Uvarint(body)
	if n <= 0 || cl == 0 || cl > blockSyncMaxCID || cl > uint64(len(body)-n) {
		return nil, bsViolation("block frame: bad CID length")
	}
	c, err := cid.Cast(body[n : n+int(cl)])
	if err != nil {
		return nil, bsViolation("block frame: %v", err)
	}
	data := body[n+int(cl):]
	if err := bsVerifyBlock(c, data); err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// bsVerifyBlock checks that data is the block c names.
func bsVerifyBlock(c cid.Cid, data []byte) error {
	if len(data) > MaxBlockSize {
		return bsViolation("block %s: %d bytes (max %d)", c, len(data), MaxBlockSize)
	}
	if err := verifcid.ValidateCid(verifcid.DefaultAllowlist, c); err != nil {
		return bsViolation("block %s: %v", c, err)
	}
	sum, err := c.Prefix().Sum(data)
	if err != nil {
		return bsViolation("block %s: %v", c, err)
	}
	if !sum.Equals(c) {
		return bsViolation("block %s: data hashes to %s", c, sum)
	}
	return nil
}

// handle is the responder side.
func (s *BlockSync) handle(str network.Stream) {
	p := str.Conn().RemotePeer()
	if !s.enter() {
		_ = str.Reset()
		return
	}
	defer s.wg.Done()

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	fail := func(level slog.Level, msg string, err error) {
		stop()
		_ = str.Reset()
		if s.ctx.Err() == nil {
			s.log.Log(s.ctx, level, msg, "peer", p, "err", err)
		}
	}

	// Wait for a slot.
	t := time.NewTimer(s.cfg.slotWait)
	select {
	case s.slots <- struct{}{}:
		t.Stop()
	case <-t.C:
		fail(slog.LevelInfo, "block sync: busy, dropping request", errors.New("no free slot"))
		return
	case <-ctx.Done():
		t.Stop()
		fail(slog.LevelDebug, "block sync: closed", ctx.Err())
		return
	}
	s.mu.Lock()
	s.serving++
	s.peakServing = max(s.peakServing, s.serving)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.serving--
		s.mu.Unlock()
		<-s.slots
	}()

	start := time.Now()
	r := bufio.NewReaderSize(str, 4<<10)
	// readHeads reads a REQUEST or LOCATOR frame; a malformed one is
	// logged as a warning, a failed read (peer gone, deadline) as info.
	readHeads := func(want byte, what string) ([]cid.Cid, bool) {
		_ = str.SetReadDeadline(time.Now().Add(s.cfg.idle))
		typ, body, err := bsReadFrame(r, blockSyncMaxRequestFrame)
		switch {
		case errors.Is(err, errBSFrameTooLarge) || errors.Is(err, errBSEmptyFrame):
		case err != nil:
			fail(slog.LevelInfo, "block sync: reading "+what+" failed", err)
			return nil, false
		case typ != want:
			err = fmt.Errorf("frame type %#x, want %#x", typ, want)
		default:
			var heads []cid.Cid
			if heads, err = ValidateHeadsPayload(body); err == nil {
				return heads, true
			}
		}
		fail(slog.LevelWarn, "block sync: dropping malformed "+what, err)
		return nil, false
	}
	theirs, ok := readHeads(bsFrameRequest, "request")
	if !ok {
		return
	}
	ours, err := s.heads(ctx)
	if err != nil {
		fail(slog.LevelWarn, "block sync: cannot list our heads", err)
		return
	}
	if len(ours) > MaxHeads {
		ours = ours[:MaxHeads]
	}
	w := bufio.NewWriterSize(str, 64<<10)
	write := func(typ byte, parts ...[]byte) error {
		_ = str.SetWriteDeadline(time.Now().Add(s.cfg.idle))
		return bsWriteFrame(w, typ, parts...)
	}

	var unknown []cid.Cid
	for _, c := range theirs {
		ok, err := s.bstore.Has(ctx, c)
		if err != nil {
			fail(slog.LevelWarn, "block sync: blockstore", err)
			return
		}
		if !ok {
			unknown = append(unknown, c)
		}
	}
	if len(unknown) > 0 && len(ours) > 0 {
		payload, err := EncodeHeads(unknown)
		if err == nil {
			err = write(bsFrameNeedLocator, payload)
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			fail(slog.LevelInfo, "block sync: send locator request", err)
			return
		}
		loc, ok := readHeads(bsFrameLocator, "locator")
		if !ok {
			return
		}
		theirs = append(theirs, loc...)
	}

	wctx, wcancel := context.WithTimeout(ctx, s.cfg.walk)
	plan, method, err := bsPlanBlocks(wctx, s.bstore, ours, theirs)
	wcancel()
	if err != nil {
		fail(slog.LevelWarn, "block sync: walking the DAG failed", err)
		return
	}
	if len(plan.refs) > blockSyncMaxAnnounced {
		s.log.Warn("block sync: too many blocks for one exchange, sending a part", "blocks", len(plan.refs), "max", blockSyncMaxAnnounced)
		plan.refs = plan.refs[:blockSyncMaxAnnounced]
		plan.bytes = 0
		for _, r := range plan.refs {
			plan.bytes += int64(r.size)
		}
	}
	headsPayload, err := EncodeHeads(ours)
	if err != nil {
		fail(slog.LevelWarn, "block sync: encode heads", err)
		return
	}
	var hdr []byte
	hdr = binary.AppendUvarint(hdr, uint64(len(plan.refs)))
	hdr = binary.AppendUvarint(hdr, uint64(plan.bytes))
	if err := write(bsFrameHeader, hdr, headsPayload); err != nil {
		fail(slog.LevelInfo, "block sync: send header", err)
		return
	}
	var sent int
	var sentBytes int64
	for _, ref := range plan.refs {
		blk, err := s.bstore.Get(ctx, ref.c)
		if err == nil && len(blk.RawData()) != ref.size {
			err = fmt.Errorf("block %s changed size", ref.c)
		}
		if err != nil {
			fail(slog.LevelWarn, "block sync: reading a block to send", err)
			return
		}
		cb := ref.c.Bytes()
		if err := write(bsFrameBlock, binary.AppendUvarint(nil, uint64(len(cb))), cb, blk.RawData()); err != nil {
			fail(slog.LevelInfo, "block sync: send block", err)
			return
		}
		sent++
		sentBytes += int64(ref.size)
		s.servedBlocks.Add(1)
		s.servedBytes.Add(int64(ref.size))
	}
	if err := write(bsFrameEnd); err != nil {
		fail(slog.LevelInfo, "block sync: send end", err)
		return
	}
	if err := w.Flush(); err != nil {
		fail(slog.LevelInfo, "block sync: send end", err)
		return
	}
	if !stop() {
		return
	}
	_ = str.Close()
	s.log.Debug("block sync: served", "peer", p, "blocks", sent, "bytes", sentBytes, "walk", method,
		"their_cids", len(theirs), "took", time.Since(start))
}

// locator returns CIDs below from (which we have), to tell a responder that
// lacks them where our DAG meets its own. It walks breadth-first and takes
// the blocks (at most blockSyncLocatorPerDepth) at depths 1, 2, ..., 16,
// then about every 1/8 more (18, 20, 22, 24, 27, 30, ...), and the deepest
// level reached when the walk ends (DAG exhausted or budget spent); at most
// MaxHeads CIDs. The responder then resends at most the blocks between
// where the DAGs fork and the next locator depth below: about 1/8 of the
// fork's depth, unless it lies deeper than the walk budget.
func (s *BlockSync) locator(ctx context.Context, from []cid.Cid) ([]cid.Cid, error) {
	var out []cid.Cid
	seen := make(map[string]struct{})
	level := make([]cid.Cid, 0, len(from))
	for _, c := range from {
		if _, ok := seen[string(c.Hash())]; !ok {
			seen[string(c.Hash())] = struct{}{}
			level = append(level, c)
		}
	}
	taken := false // level was taken already
	take := func(lvl []cid.Cid) {
		for _, c := range lvl[:min(len(lvl), blockSyncLocatorPerDepth)] {
			if len(out) < MaxHeads {
				out = append(out, c)
			}
		}
		taken = true
	}
	visits, depth, next := 0, 0, 1
	for len(out) < MaxHeads {
		var below []cid.Cid
		for _, c := range level {
			if visits >= s.cfg.locatorBudget {
				below = nil
				break
			}
			if visits%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
			visits++
			b, found, err := bsLoadBlock(ctx, s.bstore, c)
			if err != nil {
				return nil, err
			}
			if !found {
				continue
			}
			for _, l := range b.links {
				if _, ok := seen[string(l.Hash())]; !ok {
					seen[string(l.Hash())] = struct{}{}
					below = append(below, l)
				}
			}
		}
		if len(below) == 0 {
			// The bottom of the DAG, or as deep as the budget allows.
			if depth > 0 && !taken {
				take(level)
			}
			break
		}
		depth++
		level = below
		taken = false
		if depth == next {
			take(level)
			next = max(next+1, next+next/8)
		}
	}
	return out, nil
}

// Frames.

var (
	errBSFrameTooLarge = errors.New("frame too large")
	errBSEmptyFrame    = errors.New("empty frame")
)

// bsWriteFrame writes one frame: uvarint length, type, parts. Unless w is
// buffered, the frame goes in one Write.
func bsWriteFrame(w io.Writer, typ byte, parts ...[]byte) error {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	hdr := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+1), uint64(n))
	hdr = append(hdr, typ)
	if _, ok := w.(*bufio.Writer); !ok {
		hdr = slices.Grow(hdr, n-1)
		for _, p := range parts {
			hdr = append(hdr, p...)
		}
		_, err := w.Write(hdr)
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// bsReadFrame reads one frame of at most max bytes. It returns io.EOF only at
// a frame boundary.
func bsReadFrame(r *bufio.Reader, max int) (byte, []byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, err
	}
	if n == 0 {
		return 0, nil, errBSEmptyFrame
	}
	if n > uint64(max) {
		return 0, nil, fmt.Errorf("%w: %d bytes (max %d)", errBSFrameTooLarge, n, max)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

// DAG walks.

// bsBlockGetter is the part of a blockstore the walks use.
type bsBlockGetter interface {
	Get(context.Context, cid.Cid) (blocks.Block, error)
}

// bsDAGBlock is what the walks need of a block.
type bsDAGBlock struct {
	links []cid.Cid
	size  int
	prio  uint64 // go-ds-crdt delta priority, 0 if none
}

// bsLoadBlock reads c from bs; found is false if bs lacks it. Links come from
// dag-pb nodes only; a dag-pb block that does not decode has none.
func bsLoadBlock(ctx context.Context, bs bsBlockGetter, c cid.Cid) (b bsDAGBlock, found bool, err error) {
	blk, err := bs.Get(ctx, c)
	if ipld.IsNotFound(err) {
		return b, false, nil
	}
	if err != nil {
		return b, false, err
	}
	raw := blk.RawData()
	b.size = len(raw)
	if c.Type() != cid.DagProtobuf {
		return b, true, nil
	}
	nd, err := merkledag.DecodeProtobuf(raw)
	if err != nil {
		return b, true, nil
	}
	for _, l := range nd.Links() {
		if l.Cid.Defined() {
			b.links = append(b.links, l.Cid)
		}
	}
	b.prio = bsDeltaPriority(nd.Data())
	return b, true, nil
}

// bsDeltaPriority returns the priority of a go-ds-crdt delta (pb.Delta: 1 and
// 2 repeated elements, 3 the priority), or 0 if data is not one.
func bsDeltaPriority(data []byte) uint64 {
	var prio uint64
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0
		}
		data = data[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.BytesType:
			n = protowire.ConsumeFieldValue(num, typ, data)
		case num == 3 && typ == protowire.VarintType:
			prio, n = protowire.ConsumeVarint(data)
		default:
			return 0
		}
		if n < 0 {
			return 0
		}
		data = data[n:]
	}
	return prio
}

// bsBlockRef is a block to send.
type bsBlockRef struct {
	c    cid.Cid
	size int
}

type bsPlan struct {
	refs  []bsBlockRef
	bytes int64
}

func (p *bsPlan) add(c cid.Cid, size int) {
	p.refs = append(p.refs, bsBlockRef{c: c, size: size})
	p.bytes += int64(size)
}

const (
	bsWalkPriority = "priority"
	bsWalkClosure  = "closure"
)

// errBSNoPriorities stops the priority walk: some block has no usable
// priority (not a go-ds-crdt delta, or not above its children's).
var errBSNoPriorities = errors.New("blocks without usable priorities")

// bsPlanBlocks returns the blocks reachable from ours and not from theirs in
// bs (blocks bs lacks are skipped), top-down, and the walk used. Blocks
// larger than MaxBlockSize are left out (a requester would refuse them).
func bsPlanBlocks(ctx context.Context, bs bsBlockGetter, ours, theirs []cid.Cid) (bsPlan, string, error) {
	plan, err := bsPlanByPriority(ctx, bs, ours, theirs)
	if errors.Is(err, errBSNoPriorities) {
		plan, err = bsPlanByClosure(ctx, bs, ours, theirs)
		return plan, bsWalkClosure, err
	}
	return plan, bsWalkPriority, err
}

const (
	bsWant uint8 = 1 << iota // reachable from our heads
	bsHave                   // reachable from the requester's CIDs
)

type bsPrioNode struct {
	c       cid.Cid
	key     string
	prio    uint64
	size    int
	links   []cid.Cid
	flags   uint8
	missing bool
	popped  bool
}

type bsPrioHeap []*bsPrioNode

func (h bsPrioHeap) Len() int { return len(h) }
func (h bsPrioHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio > h[j].prio
	}
	return h[i].key < h[j].key
}
func (h bsPrioHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *bsPrioHeap) Push(x any)   { *h = append(*h, x.(*bsPrioNode)) }
func (h *bsPrioHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return n
}

// bsPlanByPriority walks both sides at once, highest priority first. Since a
// block's priority is above its children's, when a block is popped every
// block linking to it has been popped already, so its flags are final: it
// is sent if it is reachable from ours only. The walk stops when no block
// left to visit is reachable from ours only (nothing below can be sent).
//
// It fails with errBSNoPriorities on a block without a priority or a link
// it follows to a child whose priority is not lower. Links it does not
// follow are not checked: with priorities wrong there (e.g. a CID of theirs
// linking to a block of higher priority) it may send blocks the requester
// has, but never misses one (a block reachable from ours only is reached
// through blocks reachable from ours only, which are all visited).
func bsPlanByPriority(ctx context.Context, bs bsBlockGetter, ours, theirs []cid.Cid) (bsPlan, error) {
	var plan bsPlan
	nodes := make(map[string]*bsPrioNode)
	var h bsPrioHeap
	pendingWant := 0 // nodes in h whose flags are exactly bsWant

	add := func(c cid.Cid, flags uint8, parent *bsPrioNode) error {
		k := string(c.Hash())
		if n, ok := nodes[k]; ok {
			if n.missing {
				return nil
			}
			if parent != nil && n.prio >= parent.prio {
				return errBSNoPriorities
			}
			if n.popped {
				return nil
			}
			if n.flags == bsWant && flags&bsHave != 0 {
				pendingWant--
			}
			n.flags |= flags
			return nil
		}
		b, found, err := bsLoadBlock(ctx, bs, c)
		if err != nil {
			return err
		}
		if !found {
			nodes[k] = &bsPrioNode{missing: true}
			return nil
		}
		if b.prio == 0 || (parent != nil && b.prio >= parent.prio) {
			return errBSNoPriorities
		}
		n := &bsPrioNode{c: c, key: k, prio: b.prio, size: b.size, links: b.links, flags: flags}
		nodes[k] = n
		heap.Push(&h, n)
		if flags == bsWant {
			pendingWant++
		}
		return nil
	}
	for _, c := range theirs {
		if err := add(c, bsHave, nil); err != nil {
			return plan, err
		}
	}
	for _, c := range ours {
		if err := add(c, bsWant, nil); err != nil {
			return plan, err
		}
	}
	for i := 0; pendingWant > 0; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return plan, err
			}
		}
		n := heap.Pop(&h).(*bsPrioNode)
		n.popped = true
		if n.flags == bsWant {
			pendingWant--
			if n.size <= MaxBlockSize {
				plan.add(n.c, n.size)
			}
		}
		for _, l := range n.links {
			if err := add(l, n.flags, n); err != nil {
				return plan, err
			}
		}
		n.links = nil
	}
	return plan, nil
}

// bsPlanByClosure computes the closure of theirs, then walks down from ours
// (breadth-first) without descending below it.
func bsPlanByClosure(ctx context.Context, bs bsBlockGetter, ours, theirs []cid.Cid) (bsPlan, error) {
	var plan bsPlan
	have := make(map[string]struct{})
	stack := append([]cid.Cid(nil), theirs...)
	for i := 0; len(stack) > 0; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return plan, err
			}
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		k := string(c.Hash())
		if _, ok := have[k]; ok {
			continue
		}
		have[k] = struct{}{} // also when missing: not walked twice
		b, found, err := bsLoadBlock(ctx, bs, c)
		if err != nil {
			return plan, err
		}
		if found {
			stack = append(stack, b.links...)
		}
	}
	seen := make(map[string]struct{})
	queue := append([]cid.Cid(nil), ours...)
	for i := 0; len(queue) > 0; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return plan, err
			}
		}
		c := queue[0]
		queue = queue[1:]
		k := string(c.Hash())
		if _, ok := have[k]; ok {
			continue
		}
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		b, found, err := bsLoadBlock(ctx, bs, c)
		if err != nil {
			return plan, err
		}
		if !found {
			continue
		}
		if b.size <= MaxBlockSize {
			plan.add(c, b.size)
		}
		queue = append(queue, b.links...)
	}
	return plan, nil
}
