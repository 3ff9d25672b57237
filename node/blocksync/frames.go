package blocksync

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/ferry-crm/ferry/node/heads"
	"github.com/ipfs/boxo/verifcid"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// Frame types.
const (
	frameRequest     byte = 0x01
	frameLocator     byte = 0x02
	frameNeedLocator byte = 0x10
	frameHeader      byte = 0x11
	frameBlock       byte = 0x12
	frameEnd         byte = 0x13
)

const (
	// maxCIDLen bounds an encoded CID in a BLOCK frame (verifcid allows
	// digests up to 128 bytes).
	maxCIDLen = 256
	// maxAnnounced bounds the block count of a HEADER.
	maxAnnounced = 1 << 26
	// Frame size limits.
	maxRequestFrame  = 1 + heads.MaxPayload
	maxResponseFrame = 1 + binary.MaxVarintLen64 + maxCIDLen + MaxBlockSize
)

var (
	errFrameTooLarge = errors.New("frame too large")
	errEmptyFrame    = errors.New("empty frame")
)

// violation returns an error wrapping ErrViolation.
func violation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrViolation, fmt.Sprintf(format, args...))
}

// writeFrame writes one frame: uvarint length, type, parts. Unless w is
// buffered, the frame goes in one Write.
func writeFrame(w io.Writer, typ byte, parts ...[]byte) error {
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

// readFrame reads one frame of at most max bytes. It returns io.EOF only at
// a frame boundary.
func readFrame(r *bufio.Reader, max int) (byte, []byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, err
	}
	if n == 0 {
		return 0, nil, errEmptyFrame
	}
	if n > uint64(max) {
		return 0, nil, fmt.Errorf("%w: %d bytes (max %d)", errFrameTooLarge, n, max)
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

// parseHeader decodes a HEADER frame body.
func parseHeader(body []byte) (blocks int, bytes int64, theirs []cid.Cid, err error) {
	nb, n := binary.Uvarint(body)
	if n <= 0 {
		return 0, 0, nil, violation("header: bad block count")
	}
	body = body[n:]
	ns, n := binary.Uvarint(body)
	if n <= 0 {
		return 0, 0, nil, violation("header: bad byte count")
	}
	body = body[n:]
	if nb > maxAnnounced {
		return 0, 0, nil, violation("header: %d blocks announced (max %d)", nb, maxAnnounced)
	}
	if ns > nb*MaxBlockSize {
		return 0, 0, nil, violation("header: %d bytes announced for %d blocks", ns, nb)
	}
	theirs, err = heads.Decode(body)
	if err != nil {
		return 0, 0, nil, violation("header: %v", err)
	}
	return int(nb), int64(ns), theirs, nil
}

// parseBlock decodes a BLOCK frame body and verifies the block.
func parseBlock(body []byte) (blocks.Block, error) {
	cl, n := binary.Uvarint(body)
	if n <= 0 || cl == 0 || cl > maxCIDLen || cl > uint64(len(body)-n) {
		return nil, violation("block frame: bad CID length")
	}
	c, err := cid.Cast(body[n : n+int(cl)])
	if err != nil {
		return nil, violation("block frame: %v", err)
	}
	data := body[n+int(cl):]
	if err := verifyBlock(c, data); err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// verifyBlock checks that data is the block c names.
func verifyBlock(c cid.Cid, data []byte) error {
	if len(data) > MaxBlockSize {
		return violation("block %s: %d bytes (max %d)", c, len(data), MaxBlockSize)
	}
	if err := verifcid.ValidateCid(verifcid.DefaultAllowlist, c); err != nil {
		return violation("block %s: %v", c, err)
	}
	sum, err := c.Prefix().Sum(data)
	if err != nil {
		return violation("block %s: %v", c, err)
	}
	if !sum.Equals(c) {
		return violation("block %s: data hashes to %s", c, sum)
	}
	return nil
}
