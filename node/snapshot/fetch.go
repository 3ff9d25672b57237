package snapshot

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/klauspost/compress/zstd"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/node/wire"
)

// Fetch copies peer p's state into dst, which must hold no state of its
// own. Every entry is checked against layout (Layout.Check): a violation
// stops the copy. progress (may be nil) gets entries and bytes so far.
func Fetch(ctx context.Context, h host.Host, p peer.ID, dst ds.Batching, layout Layout, progress func(entries int, bytes int64)) (int, int64, error) {
	str, err := h.NewStream(ctx, p, Protocol)
	if err != nil {
		if format, ours, known := wire.PeerFormat(h.Peerstore(), p, ProtocolBase); known && !ours {
			return 0, 0, fmt.Errorf("snapshot: %s (%w)", wire.Mismatch(p.String(), format), err)
		}
		return 0, 0, fmt.Errorf("snapshot from %s: %w", p, err)
	}
	defer str.Close()
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	defer stop()
	zr, err := zstd.NewReader(str, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderLowmem(true))
	if err != nil {
		return 0, 0, fmt.Errorf("snapshot from %s: %w", p, err)
	}
	defer zr.Close()
	r := bufio.NewReaderSize(zr, 1<<20)
	read := func(max int) ([]byte, error) {
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, err
		}
		if l > uint64(max) {
			return nil, fmt.Errorf("%w: entry of %d bytes", ErrViolation, l)
		}
		b := make([]byte, l)
		_, err = io.ReadFull(r, b)
		return b, err
	}
	batch, err := dst.Batch(ctx)
	if err != nil {
		return 0, 0, err
	}
	entries, pending := 0, 0
	var total int64
	for {
		if entries%4096 == 0 {
			_ = str.SetReadDeadline(time.Now().Add(idle))
		}
		key, err := read(maxKey)
		if err != nil {
			return entries, total, fmt.Errorf("snapshot from %s: %w", p, err)
		}
		if len(key) == 0 {
			want, err := binary.ReadUvarint(r)
			if err != nil || want != uint64(entries) {
				return entries, total, fmt.Errorf("snapshot from %s: %w: %d entries announced, %d received", p, ErrViolation, want, entries)
			}
			break
		}
		val, err := read(maxValue)
		if err != nil {
			return entries, total, fmt.Errorf("snapshot from %s: %w", p, err)
		}
		if err := layout.Check(string(key), val); err != nil {
			return entries, total, fmt.Errorf("snapshot from %s: %w", p, err)
		}
		entries++
		if layout.skipped(string(key)) {
			continue
		}
		if err := batch.Put(ctx, ds.RawKey(string(key)), val); err != nil {
			return entries, total, err
		}
		total += int64(len(key) + len(val))
		pending += len(key) + len(val)
		if pending >= batchMax {
			if err := batch.Commit(ctx); err != nil {
				return entries, total, err
			}
			if batch, err = dst.Batch(ctx); err != nil {
				return entries, total, err
			}
			pending = 0
			if progress != nil {
				progress(entries, total)
			}
		}
	}
	if err := batch.Commit(ctx); err != nil {
		return entries, total, err
	}
	if err := dst.Sync(ctx, ds.NewKey("/")); err != nil {
		return entries, total, err
	}
	if progress != nil {
		progress(entries, total)
	}
	return entries, total, nil
}
