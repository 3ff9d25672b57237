package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"

	badgerdb "github.com/dgraph-io/badger"
	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	ds "github.com/ipfs/go-datastore"
	badger "github.com/ipfs/go-ds-badger"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mh "github.com/multiformats/go-multihash"
)

// The snapshot protocol copies a node's replicated state for a clean sync:
// every key of go-ds-crdt's namespace and of the block store, read in one
// badger read-only transaction (a consistent point in time). go-ds-crdt
// records a block as processed, then moves its heads, only after merging
// it, so a snapshot's heads never point past what it merged; a block merged
// only partly when the snapshot was taken is not marked processed and is
// merged again (merges are idempotent) when the copy next syncs.
//
// Frames: uvarint key length, key, uvarint value length, value; a key
// length of 0 ends the stream, followed by the uvarint entry count.

// SnapshotProtocol is the snapshot copy's protocol id.
const SnapshotProtocol protocol.ID = "/ferry/snapshot/1.0.0"

// snapshotPrefixes are copied; nothing else is accepted from a peer.
var snapshotPrefixes = []string{"/ferry/crdt/", "/ferry/blocks/"}

const (
	snapshotMaxKey   = 4 << 10
	snapshotMaxValue = MaxBlockSize + (64 << 10)
	snapshotIdle     = 30 * time.Second
	snapshotBatch    = 8 << 20 // bytes per write batch on the receiving side
)

// handleSnapshot streams this node's state.
func (n *Node) handleSnapshot(str network.Stream) {
	defer str.Close()
	log := n.log.With("peer", str.Conn().RemotePeer())
	bd, ok := any(n.base).(*badger.Datastore)
	if !ok {
		_ = str.Reset()
		return
	}
	// Badger's own iterator in one read-only transaction: a consistent
	// snapshot, without go-datastore's channel per entry.
	txn := bd.DB.NewTransaction(false)
	defer txn.Discard()
	w := bufio.NewWriterSize(str, 1<<20)
	var buf [binary.MaxVarintLen64]byte
	put := func(b []byte) error {
		if _, err := w.Write(buf[:binary.PutUvarint(buf[:], uint64(len(b)))]); err != nil {
			return err
		}
		_, err := w.Write(b)
		return err
	}
	count := 0
	for _, prefix := range snapshotPrefixes {
		it := txn.NewIterator(badgerdb.DefaultIteratorOptions)
		for it.Seek([]byte(prefix)); it.ValidForPrefix([]byte(prefix)); it.Next() {
			if n.ctx.Err() != nil {
				it.Close()
				_ = str.Reset()
				return
			}
			item := it.Item()
			val, err := item.ValueCopy(nil)
			if err != nil {
				log.Warn("snapshot: read", "err", err)
				it.Close()
				_ = str.Reset()
				return
			}
			if count%4096 == 0 {
				_ = str.SetWriteDeadline(time.Now().Add(snapshotIdle))
			}
			if put(item.Key()) != nil || put(val) != nil {
				it.Close()
				_ = str.Reset()
				return
			}
			count++
		}
		it.Close()
	}
	if _, err := w.Write(buf[:binary.PutUvarint(buf[:], 0)]); err != nil {
		_ = str.Reset()
		return
	}
	if _, err := w.Write(buf[:binary.PutUvarint(buf[:], uint64(count))]); err != nil {
		_ = str.Reset()
		return
	}
	if err := w.Flush(); err != nil {
		_ = str.Reset()
		return
	}
	log.Info("snapshot sent", "entries", count)
}

// fetchSnapshot copies peer p's state into dst, which must hold no state of
// its own. Keys outside the replicated namespaces and blocks whose data do
// not hash to their key are refused. progress (may be nil) gets entries and
// bytes so far.
func fetchSnapshot(ctx context.Context, h host.Host, p peer.ID, dst ds.Batching, progress func(entries int, bytes int64)) (int, int64, error) {
	str, err := h.NewStream(ctx, p, SnapshotProtocol)
	if err != nil {
		return 0, 0, fmt.Errorf("snapshot from %s: %w", p, err)
	}
	defer str.Close()
	stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
	defer stop()
	r := bufio.NewReaderSize(str, 1<<20)
	read := func(max int) ([]byte, error) {
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, err
		}
		if l > uint64(max) {
			return nil, fmt.Errorf("%w: entry of %d bytes", ErrBlockSyncViolation, l)
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
			_ = str.SetReadDeadline(time.Now().Add(snapshotIdle))
		}
		key, err := read(snapshotMaxKey)
		if err != nil {
			return entries, total, fmt.Errorf("snapshot from %s: %w", p, err)
		}
		if len(key) == 0 {
			want, err := binary.ReadUvarint(r)
			if err != nil || want != uint64(entries) {
				return entries, total, fmt.Errorf("snapshot from %s: %w: %d entries announced, %d received", p, ErrBlockSyncViolation, want, entries)
			}
			break
		}
		val, err := read(snapshotMaxValue)
		if err != nil {
			return entries, total, fmt.Errorf("snapshot from %s: %w", p, err)
		}
		if err := checkSnapshotEntry(string(key), val); err != nil {
			return entries, total, fmt.Errorf("snapshot from %s: %w", p, err)
		}
		if err := batch.Put(ctx, ds.RawKey(string(key)), val); err != nil {
			return entries, total, err
		}
		entries++
		total += int64(len(key) + len(val))
		pending += len(key) + len(val)
		if pending >= snapshotBatch {
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

// checkSnapshotEntry refuses keys outside the replicated namespaces and
// blocks whose data do not match their key.
func checkSnapshotEntry(key string, val []byte) error {
	ok := false
	for _, p := range snapshotPrefixes {
		ok = ok || strings.HasPrefix(key, p)
	}
	if !ok {
		return fmt.Errorf("%w: key %q outside the replicated state", ErrBlockSyncViolation, key)
	}
	if rest, isBlock := strings.CutPrefix(key, "/ferry/blocks/blocks/"); isBlock {
		want, err := dshelp.DsKeyToMultihash(ds.NewKey(rest))
		if err != nil {
			return fmt.Errorf("%w: block key %q: %v", ErrBlockSyncViolation, key, err)
		}
		dec, err := mh.Decode(want)
		if err != nil {
			return fmt.Errorf("%w: block key %q: %v", ErrBlockSyncViolation, key, err)
		}
		got, err := mh.Sum(val, dec.Code, dec.Length)
		if err != nil || string(got) != string(want) {
			return fmt.Errorf("%w: block %q does not match its data", ErrBlockSyncViolation, key)
		}
	}
	return nil
}
