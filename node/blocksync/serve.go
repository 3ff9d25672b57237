package blocksync

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ferry-crm/ferry/node/heads"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
)

// locatorPerDepth bounds the CIDs a locator takes at one depth.
const locatorPerDepth = 16

// handle is the responder side.
func (s *Syncer) handle(str network.Stream) {
	p := str.Conn().RemotePeer()
	if !s.life.Enter() {
		_ = str.Reset()
		return
	}
	defer s.life.Leave()

	lctx := s.life.Context()
	ctx, cancel := context.WithCancel(lctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	fail := func(level slog.Level, msg string, err error) {
		stop()
		_ = str.Reset()
		if lctx.Err() == nil {
			s.log.Log(lctx, level, msg, "peer", p, "err", err)
		}
	}

	// Wait for a slot.
	t := time.NewTimer(s.cfg.slotWait)
	select {
	case s.slots.ch <- struct{}{}:
		s.slots.take()
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
		s.slots.release()
	}()

	start := time.Now()
	r := bufio.NewReaderSize(str, 4<<10)
	// readHeads reads a REQUEST or LOCATOR frame; a malformed one is
	// logged as a warning, a failed read (peer gone, deadline) as info.
	readHeads := func(want byte, what string) ([]cid.Cid, bool) {
		_ = str.SetReadDeadline(time.Now().Add(s.cfg.idle))
		typ, body, err := readFrame(r, maxRequestFrame)
		switch {
		case errors.Is(err, errFrameTooLarge) || errors.Is(err, errEmptyFrame):
		case err != nil:
			fail(slog.LevelInfo, "block sync: reading "+what+" failed", err)
			return nil, false
		case typ != want:
			err = fmt.Errorf("frame type %#x, want %#x", typ, want)
		default:
			var got []cid.Cid
			if got, err = heads.Decode(body); err == nil {
				return got, true
			}
		}
		fail(slog.LevelWarn, "block sync: dropping malformed "+what, err)
		return nil, false
	}
	theirs, ok := readHeads(frameRequest, "request")
	if !ok {
		return
	}
	ours, err := s.heads(ctx)
	if err != nil {
		fail(slog.LevelWarn, "block sync: cannot list our heads", err)
		return
	}
	if len(ours) > heads.MaxHeads {
		ours = ours[:heads.MaxHeads]
	}
	w := bufio.NewWriterSize(str, 64<<10)
	write := func(typ byte, parts ...[]byte) error {
		_ = str.SetWriteDeadline(time.Now().Add(s.cfg.idle))
		return writeFrame(w, typ, parts...)
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
		payload, err := heads.Encode(unknown)
		if err == nil {
			err = write(frameNeedLocator, payload)
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			fail(slog.LevelInfo, "block sync: send locator request", err)
			return
		}
		loc, ok := readHeads(frameLocator, "locator")
		if !ok {
			return
		}
		theirs = append(theirs, loc...)
	}

	wctx, wcancel := context.WithTimeout(ctx, s.cfg.walk)
	plan, method, err := planBlocks(wctx, s.bstore, ours, theirs)
	wcancel()
	if err != nil {
		fail(slog.LevelWarn, "block sync: walking the DAG failed", err)
		return
	}
	if len(plan.refs) > maxAnnounced {
		s.log.Warn("block sync: too many blocks for one exchange, sending a part", "blocks", len(plan.refs), "max", maxAnnounced)
		plan.refs = plan.refs[:maxAnnounced]
		plan.bytes = 0
		for _, r := range plan.refs {
			plan.bytes += int64(r.size)
		}
	}
	headsPayload, err := heads.Encode(ours)
	if err != nil {
		fail(slog.LevelWarn, "block sync: encode heads", err)
		return
	}
	var hdr []byte
	hdr = binary.AppendUvarint(hdr, uint64(len(plan.refs)))
	hdr = binary.AppendUvarint(hdr, uint64(plan.bytes))
	if err := write(frameHeader, hdr, headsPayload); err != nil {
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
		if err := write(frameBlock, binary.AppendUvarint(nil, uint64(len(cb))), cb, blk.RawData()); err != nil {
			fail(slog.LevelInfo, "block sync: send block", err)
			return
		}
		sent++
		sentBytes += int64(ref.size)
		s.servedBlocks.Add(1)
		s.servedBytes.Add(int64(ref.size))
	}
	if err := write(frameEnd); err != nil {
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
// the blocks (at most locatorPerDepth) at depths 1, 2, ..., 16,
// then about every 1/8 more (18, 20, 22, 24, 27, 30, ...), and the deepest
// level reached when the walk ends (DAG exhausted or budget spent); at most
// heads.MaxHeads CIDs. The responder then resends at most the blocks between
// where the DAGs fork and the next locator depth below: about 1/8 of the
// fork's depth, unless it lies deeper than the walk budget. The requester
// sends it when the responder asks (NEED_LOCATOR).
func (s *Syncer) locator(ctx context.Context, from []cid.Cid) ([]cid.Cid, error) {
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
		for _, c := range lvl[:min(len(lvl), locatorPerDepth)] {
			if len(out) < heads.MaxHeads {
				out = append(out, c)
			}
		}
		taken = true
	}
	visits, depth, next := 0, 0, 1
	for len(out) < heads.MaxHeads {
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
			b, found, err := loadBlock(ctx, s.bstore, c)
			if err != nil {
				return nil, err
			}
			if !found {
				continue
			}
			for _, l := range b.Links {
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
