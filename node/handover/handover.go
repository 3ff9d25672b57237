// Package handover is how a laptop whose grant of a channel ended delivers
// its edits of that channel that no office holds yet, before it purges the
// channel (docs/channels.md, "When a grant ends"): it sends an office the
// DAG blocks of the channel the office does not hold, then its heads; the
// office stores the blocks, merges the heads and answers once they are
// merged. Nothing of the channel goes back: the laptop is no longer granted
// it, so the protocol runs on the member host, not on the channel's.
//
// A request is a sequence of frames, each a type byte, a uvarint length
// and a body: one channel frame, block frames (uvarint CID length, CID,
// data), one heads frame (a heads payload, see package heads), then the
// end frame. The answer is one frame: accepted (uvarint blocks stored),
// refused (a message), or want-all: the office is missing blocks below the
// heads (it compacted the channel since the laptop last heard of it, and
// dropped the old epoch's blocks) and wants the request again with every
// block below them.
package handover

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/internal/lifecycle"
	"github.com/ferry-crm/ferry/node/wire"
	"github.com/ferry-crm/ferry/schema"
)

// Protocol is the hand-over protocol id.
const Protocol protocol.ID = "/ferry/handover/" + wire.Version

// Limits of one hand-over.
const (
	// MaxBytes bounds the block bytes of one hand-over.
	MaxBytes = 256 << 20
	// MaxBlockSize bounds one block (go-ds-crdt's deltas stay under 1 MiB).
	MaxBlockSize = 2 << 20
	// maxHeads bounds the heads payload.
	maxHeads = 64 << 10
	// Timeout bounds a whole hand-over, merge included.
	Timeout = 5 * time.Minute
)

// Frame types.
const (
	frameChannel  = 'C'
	frameBlock    = 'B'
	frameHeads    = 'H'
	frameEnd      = 'E'
	frameAccepted = 'A'
	frameRefused  = 'X'
	frameWantAll  = 'W'
)

// ErrWantAll is returned by Receiver.Merge when blocks below the heads are
// missing, and by Send when the office answered so: send every block
// below the heads again.
var ErrWantAll = errors.New("hand-over: the office wants every block below the heads")

// Receiver is the office's side of a hand-over.
type Receiver interface {
	// Accept returns nil when from may hand channel over, or why not.
	Accept(ctx context.Context, from peer.ID, channel string) error
	// Put stores one verified block of the channel.
	Put(ctx context.Context, channel string, blk blocks.Block) error
	// Merge merges the channel's heads from the peer and returns once
	// they and every block received with them (received) are merged (an
	// error when they could not be): the peer purges the channel after.
	Merge(ctx context.Context, from peer.ID, channel string, heads []byte, received []cid.Cid) error
}

// Server answers hand-overs.
type Server struct {
	h    host.Host
	recv Receiver
	log  *slog.Logger
	life *lifecycle.Group
}

// NewServer serves hand-overs on h until Close.
func NewServer(h host.Host, recv Receiver, log *slog.Logger) *Server {
	s := &Server{h: h, recv: recv, log: log, life: lifecycle.New()}
	h.SetStreamHandler(Protocol, s.handle)
	return s
}

// Close stops serving and waits for the hand-overs in progress.
func (s *Server) Close() error {
	s.h.RemoveStreamHandler(Protocol)
	s.life.Close()
	return nil
}

func (s *Server) handle(str network.Stream) {
	if !s.life.Enter() {
		_ = str.Reset()
		return
	}
	defer s.life.Leave()
	defer str.Close()
	ctx, cancel := context.WithTimeout(s.life.Context(), Timeout)
	defer cancel()
	_ = str.SetDeadline(time.Now().Add(Timeout))
	from := str.Conn().RemotePeer()
	n, err := s.receive(ctx, from, bufio.NewReader(str))
	if errors.Is(err, ErrWantAll) {
		s.log.Info("hand-over: blocks missing below the heads, asked for all", "peer", from)
		_ = writeFrame(str, frameWantAll, nil)
		return
	}
	if err != nil {
		s.log.Warn("hand-over refused", "peer", from, "err", err)
		_ = writeFrame(str, frameRefused, []byte(err.Error()))
		return
	}
	_ = writeFrame(str, frameAccepted, binary.AppendUvarint(nil, uint64(n)))
}

func (s *Server) receive(ctx context.Context, from peer.ID, r *bufio.Reader) (int, error) {
	typ, body, err := readFrame(r, 64)
	if err != nil {
		return 0, err
	}
	if typ != frameChannel {
		return 0, fmt.Errorf("hand-over: want the channel first, got frame %q", typ)
	}
	channel := string(body)
	if err := schema.CheckChannelName(channel); err != nil {
		return 0, fmt.Errorf("hand-over: %w", err)
	}
	if err := s.recv.Accept(ctx, from, channel); err != nil {
		return 0, err
	}
	n, total := 0, 0
	var received []cid.Cid
	for {
		typ, body, err := readFrame(r, MaxBlockSize+128)
		if err != nil {
			return n, err
		}
		switch typ {
		case frameBlock:
			blk, err := parseBlock(body)
			if err != nil {
				return n, err
			}
			if total += len(blk.RawData()); total > MaxBytes {
				return n, fmt.Errorf("hand-over: more than %d bytes of blocks", MaxBytes)
			}
			if err := s.recv.Put(ctx, channel, blk); err != nil {
				return n, fmt.Errorf("hand-over: store block: %w", err)
			}
			received = append(received, blk.Cid())
			n++
		case frameHeads:
			if len(body) > maxHeads {
				return n, errors.New("hand-over: heads too large")
			}
			if typ, _, err := readFrame(r, 0); err != nil || typ != frameEnd {
				return n, fmt.Errorf("hand-over: want the end after the heads (%v)", err)
			}
			if err := s.recv.Merge(ctx, from, channel, body, received); errors.Is(err, ErrWantAll) {
				return n, err
			} else if err != nil {
				return n, fmt.Errorf("hand-over: merge: %w", err)
			}
			s.log.Info("hand-over merged", "peer", from, "channel", channel, "blocks", n, "bytes", total)
			return n, nil
		default:
			return n, fmt.Errorf("hand-over: unexpected frame %q", typ)
		}
	}
}

// Send hands a channel's blocks and heads over to peer p, and returns the
// number of blocks the office stored once it merged the heads.
func Send(ctx context.Context, h host.Host, p peer.ID, channel string, blks []blocks.Block, heads []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	str, err := h.NewStream(ctx, p, Protocol)
	if err != nil {
		return 0, fmt.Errorf("hand-over to %s: %w", p, err)
	}
	defer str.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = str.SetDeadline(dl)
	}
	w := bufio.NewWriter(str)
	err = writeFrame(w, frameChannel, []byte(channel))
	for _, b := range blks {
		if err != nil {
			break
		}
		cb := b.Cid().Bytes()
		body := binary.AppendUvarint(nil, uint64(len(cb)))
		body = append(body, cb...)
		err = writeFrame(w, frameBlock, append(body, b.RawData()...))
	}
	if err == nil {
		err = writeFrame(w, frameHeads, heads)
	}
	if err == nil {
		err = writeFrame(w, frameEnd, nil)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = str.CloseWrite()
	}
	if err != nil {
		_ = str.Reset()
		return 0, fmt.Errorf("hand-over to %s: %w", p, err)
	}
	typ, body, err := readFrame(bufio.NewReader(str), 4096)
	if err != nil {
		return 0, fmt.Errorf("hand-over to %s: %w", p, err)
	}
	switch typ {
	case frameAccepted:
		n, k := binary.Uvarint(body)
		if k <= 0 {
			return 0, fmt.Errorf("hand-over to %s: bad answer", p)
		}
		return int(n), nil
	case frameRefused:
		return 0, fmt.Errorf("hand-over to %s: refused: %s", p, body)
	case frameWantAll:
		return 0, fmt.Errorf("hand-over to %s: %w", p, ErrWantAll)
	}
	return 0, fmt.Errorf("hand-over to %s: unexpected answer %q", p, typ)
}

func writeFrame(w io.Writer, typ byte, body []byte) error {
	hdr := binary.AppendUvarint([]byte{typ}, uint64(len(body)))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

func readFrame(r *bufio.Reader, max int) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, fmt.Errorf("hand-over: read: %w", err)
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, fmt.Errorf("hand-over: read: %w", err)
	}
	if n > uint64(max) {
		return 0, nil, fmt.Errorf("hand-over: frame %q of %d bytes (max %d)", typ, n, max)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("hand-over: read: %w", err)
	}
	return typ, body, nil
}

// parseBlock reads a block frame's body and checks that its data hashes to
// its CID.
func parseBlock(body []byte) (blocks.Block, error) {
	n, k := binary.Uvarint(body)
	if k <= 0 || n > uint64(len(body)-k) {
		return nil, errors.New("hand-over: bad block frame")
	}
	c, err := cid.Cast(body[k : k+int(n)])
	if err != nil {
		return nil, fmt.Errorf("hand-over: block cid: %w", err)
	}
	data := body[k+int(n):]
	sum, err := c.Prefix().Sum(data)
	if err != nil {
		return nil, fmt.Errorf("hand-over: block %s: %w", c, err)
	}
	if !sum.Equals(c) {
		return nil, fmt.Errorf("hand-over: block %s: data hashes to %s", c, sum)
	}
	return blocks.NewBlockWithCid(data, c)
}
