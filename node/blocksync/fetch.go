package blocksync

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ferry-crm/ferry/node/heads"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

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
// After Close, Fetch fails.
func (s *Syncer) Fetch(ctx context.Context, p peer.ID, ourHeads []cid.Cid, progress func(Progress)) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	s.mu.Lock()
	if s.life.Closed() {
		s.mu.Unlock()
		return Result{}, errClosed
	}
	call := s.fetches[p]
	if call == nil {
		cctx, cancel := context.WithCancel(s.life.Context())
		call = &fetchCall{seq: s.seq + 1, peer: p, done: make(chan struct{}), cancel: cancel, notify: map[int]func(Progress){}}
		heads := append([]cid.Cid(nil), ourHeads...)
		started := s.life.Go(func(context.Context) {
			res, err := s.fetch(cctx, call, p, heads)
			cancel()
			s.mu.Lock()
			call.res, call.err = res, err
			if s.fetches[p] == call {
				delete(s.fetches, p)
			}
			s.mu.Unlock()
			close(call.done)
		})
		if !started { // Close began
			cancel()
			s.mu.Unlock()
			return Result{}, errClosed
		}
		s.seq++
		s.fetches[p] = call
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
		return Result{}, ctx.Err()
	}
}

// report records a fetch's progress and calls the waiters' callbacks.
func (s *Syncer) report(call *fetchCall, prog Progress) {
	s.mu.Lock()
	call.cur = prog
	fns := make([]func(Progress), 0, len(call.notify))
	for _, fn := range call.notify {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(prog)
	}
}

// fetch is the requester side.
func (s *Syncer) fetch(ctx context.Context, call *fetchCall, p peer.ID, ourHeads []cid.Cid) (Result, error) {
	start := time.Now()
	if len(ourHeads) > heads.MaxHeads {
		s.log.Warn("block sync: too many heads for one request, sending a subset", "heads", len(ourHeads), "max", heads.MaxHeads)
		ourHeads = ourHeads[:heads.MaxHeads]
	}
	req, err := heads.Encode(ourHeads)
	if err != nil {
		return Result{}, err
	}

	octx, ocancel := context.WithTimeout(ctx, s.cfg.idle)
	str, err := s.h.NewStream(network.WithNoDial(octx, "block sync"), p, s.cfg.protocol)
	ocancel()
	if err != nil {
		return Result{}, fmt.Errorf("open block sync stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	fail := func(err error) (Result, error) {
		stop()
		_ = str.Reset()
		if ctx.Err() != nil && !errors.Is(err, ErrViolation) {
			return Result{}, fmt.Errorf("block sync: %w", ctx.Err())
		}
		return Result{}, err
	}
	r := bufio.NewReaderSize(str, 64<<10)
	// read reads a frame; a clean end of stream, an empty or oversized
	// frame are violations (what says what we wait for).
	read := func(timeout time.Duration, what string) (byte, []byte, error) {
		_ = str.SetReadDeadline(time.Now().Add(timeout))
		typ, body, err := readFrame(r, maxResponseFrame)
		switch {
		case err == nil:
			return typ, body, nil
		case errors.Is(err, io.EOF):
			return 0, nil, violation("stream ended before %s", what)
		case errors.Is(err, errFrameTooLarge) || errors.Is(err, errEmptyFrame):
			return 0, nil, violation("%v", err)
		}
		return 0, nil, fmt.Errorf("read %s: %w", what, err)
	}

	_ = str.SetWriteDeadline(time.Now().Add(s.cfg.idle))
	if err := writeFrame(str, frameRequest, req); err != nil {
		return fail(fmt.Errorf("send request: %w", err))
	}
	typ, body, err := read(s.cfg.prepare, "the header")
	if err != nil {
		return fail(err)
	}
	if typ == frameNeedLocator {
		unknown, err := heads.Decode(body)
		if err != nil {
			return fail(violation("bad locator request: %v", err))
		}
		loc, err := s.locator(ctx, intersect(unknown, ourHeads))
		if err != nil {
			return fail(err)
		}
		payload, err := heads.Encode(loc)
		if err != nil {
			return fail(err)
		}
		_ = str.SetWriteDeadline(time.Now().Add(s.cfg.idle))
		if err := writeFrame(str, frameLocator, payload); err != nil {
			return fail(fmt.Errorf("send locator: %w", err))
		}
		if typ, body, err = read(s.cfg.prepare, "the header"); err != nil {
			return fail(err)
		}
	}
	if typ != frameHeader {
		return fail(violation("frame type %#x, want header", typ))
	}
	total, totalBytes, heads, err := parseHeader(body)
	if err != nil {
		return fail(err)
	}
	_ = str.CloseWrite()
	s.report(call, Progress{Total: total})

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
		s.report(call, Progress{Blocks: written, Total: total, Bytes: wBytes})
		return nil
	}
	for {
		typ, body, err := read(s.cfg.idle, "the end frame")
		if err != nil {
			return fail(fmt.Errorf("%w (after %d of %d blocks)", err, got, total))
		}
		switch typ {
		case frameBlock:
			if got >= total {
				return fail(violation("more blocks than the %d announced", total))
			}
			blk, err := parseBlock(body)
			if err != nil {
				return fail(err)
			}
			gotBytes += int64(len(blk.RawData()))
			if gotBytes > totalBytes {
				return fail(violation("more bytes than the %d announced", totalBytes))
			}
			got++
			batch = append(batch, blk)
			if len(batch) >= s.cfg.chunk {
				if err := flush(); err != nil {
					return fail(err)
				}
			}
		case frameEnd:
			if len(body) != 0 {
				return fail(violation("end frame with %d bytes", len(body)))
			}
			if got != total || gotBytes != totalBytes {
				return fail(violation("got %d blocks (%d bytes), %d (%d bytes) announced", got, gotBytes, total, totalBytes))
			}
			if err := flush(); err != nil {
				return fail(err)
			}
			_ = str.SetReadDeadline(time.Now().Add(s.cfg.idle))
			if n, err := r.Read(make([]byte, 1)); n > 0 || !errors.Is(err, io.EOF) {
				if n > 0 {
					return fail(violation("data after end frame"))
				}
				return fail(fmt.Errorf("after end frame: %w", err))
			}
			if !stop() {
				return Result{}, fmt.Errorf("block sync: %w", ctx.Err())
			}
			_ = str.Close()
			res := Result{Heads: heads, Blocks: written, Bytes: wBytes, Duration: time.Since(start)}
			s.log.Debug("block sync: fetched", "peer", p, "blocks", res.Blocks, "bytes", res.Bytes, "heads", len(heads), "took", res.Duration)
			return res, nil
		default:
			return fail(violation("frame type %#x, want block or end", typ))
		}
	}
}

// intersect returns the CIDs of a that are also in b, once each.
func intersect(a, b []cid.Cid) []cid.Cid {
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
