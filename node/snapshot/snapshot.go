// Package snapshot copies a node's replicated state for a clean sync:
// every key of go-ds-crdt's namespace and of the block store, read in one
// badger read-only transaction (a consistent point in time). go-ds-crdt
// records a block as processed, then moves its heads, only after merging
// it, so a snapshot's heads never point past what it merged; a block merged
// only partly when the snapshot was taken is not marked processed and is
// merged again (merges are idempotent) when the copy next syncs.
//
// Frames: uvarint key length, key, uvarint value length, value; a key
// length of 0 ends the stream, followed by the uvarint entry count. The
// whole stream is one zstd stream: keys share long prefixes and blocks are
// kept compressed already, so a copy is a fraction of the store's size.
package snapshot

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	badgerdb "github.com/dgraph-io/badger"
	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	ds "github.com/ipfs/go-datastore"
	badger "github.com/ipfs/go-ds-badger"
	"github.com/klauspost/compress/zstd"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mh "github.com/multiformats/go-multihash"

	"github.com/ferry-crm/ferry/internal/lifecycle"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/wire"
)

// ProtocolBase is the snapshot copy's protocol id without its version.
const ProtocolBase = "/ferry/snapshot/"

// Protocol is the snapshot copy's protocol id. Its version is the store
// format (wire.Version): the copy is the store as it is on disk.
const Protocol protocol.ID = ProtocolBase + wire.Version

// ErrViolation: the peer sent what the protocol does not allow (a key
// outside the replicated state, a block that does not match its key, an
// oversized entry, a wrong count). Nothing after it is kept.
var ErrViolation = errors.New("snapshot: protocol violation")

const (
	maxKey   = 4 << 10
	maxValue = (2 << 20) + (64 << 10) // a block of at most 2 MiB, and room
	idle     = 30 * time.Second
	batchMax = 8 << 20 // bytes per write batch on the receiving side
)

// Layout is which keys a snapshot carries: every key under one of
// Prefixes ("/ns/"-shaped), and nothing else; keys under Blocks are blocks
// (their key is their multihash) and must hash to their key.
type Layout struct {
	Prefixes []string
	Blocks   string
	// Channels, if set, is the root of the channels' keys ("/ferry/ch/"):
	// a receiver accepts every key under it, the ones under
	// Channels + "<channel>/" + ChannelBlocks being blocks; a server adds,
	// per requester, the prefixes its Extra returns.
	Channels      string
	ChannelBlocks string
	// Skip, if set, tells a receiver the channels whose keys it checks
	// but does not store (granted, not taken offline).
	Skip func(channel string) bool
}

// skipped reports whether a receiver drops key (checked already).
func (l Layout) skipped(key string) bool {
	if l.Skip == nil || l.Channels == "" {
		return false
	}
	rest, ok := strings.CutPrefix(key, l.Channels)
	if !ok {
		return false
	}
	name, _, _ := strings.Cut(rest, "/")
	return l.Skip(name)
}

// Check refuses keys outside the layout and blocks whose data do not match
// their key.
func (l Layout) Check(key string, val []byte) error {
	ok := false
	for _, p := range l.Prefixes {
		ok = ok || strings.HasPrefix(key, p)
	}
	blocks := l.Blocks
	if rest, isChannel := strings.CutPrefix(key, l.Channels); isChannel && l.Channels != "" {
		name, _, _ := strings.Cut(rest, "/")
		if name == "" {
			return fmt.Errorf("%w: key %q: no channel", ErrViolation, key)
		}
		ok, blocks = true, l.Channels+name+"/"+l.ChannelBlocks
	}
	if !ok {
		return fmt.Errorf("%w: key %q outside the replicated state", ErrViolation, key)
	}
	if rest, isBlock := strings.CutPrefix(key, blocks); isBlock && blocks != "" {
		want, err := dshelp.DsKeyToMultihash(ds.NewKey(rest))
		if err != nil {
			return fmt.Errorf("%w: block key %q: %v", ErrViolation, key, err)
		}
		dec, err := mh.Decode(want)
		if err != nil {
			return fmt.Errorf("%w: block key %q: %v", ErrViolation, key, err)
		}
		raw, err := datadir.DecompressBlock(val)
		if err != nil {
			return fmt.Errorf("%w: block %q: %v", ErrViolation, key, err)
		}
		got, err := mh.Sum(raw, dec.Code, dec.Length)
		if err != nil || string(got) != string(want) {
			return fmt.Errorf("%w: block %q does not match its data", ErrViolation, key)
		}
	}
	return nil
}

// Server answers snapshot requests from one badger store.
type Server struct {
	h      host.Host
	db     *badger.Datastore
	layout Layout
	log    *slog.Logger
	life   *lifecycle.Group
	// extra returns the prefixes a requester gets besides the layout's
	// (the channels it is granted); nil: none.
	extra func(peer.ID) []string
}

// SetExtra makes the server send each requester, after the layout's
// prefixes, the prefixes extra returns for it (its channels). Call it
// before the server serves.
func (s *Server) SetExtra(extra func(peer.ID) []string) { s.extra = extra }

// NewServer serves db's replicated state (the keys of layout) on h.
func NewServer(h host.Host, db *badger.Datastore, layout Layout, log *slog.Logger) *Server {
	s := &Server{h: h, db: db, layout: layout, log: log, life: lifecycle.New()}
	h.SetStreamHandler(Protocol, s.handle)
	return s
}

// Close stops serving and waits for the copies in progress to end. Safe to
// call twice.
func (s *Server) Close() error {
	s.life.Close(func() { s.h.RemoveStreamHandler(Protocol) })
	return nil
}

// handle streams this node's state.
func (s *Server) handle(str network.Stream) {
	if !s.life.Enter() {
		_ = str.Reset()
		return
	}
	defer s.life.Leave()
	defer str.Close()
	ctx := s.life.Context()
	log := s.log.With("peer", str.Conn().RemotePeer())
	// Badger's own iterator in one read-only transaction: a consistent
	// snapshot, without go-datastore's channel per entry.
	txn := s.db.DB.NewTransaction(false)
	defer txn.Discard()
	zw, err := zstd.NewWriter(str, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		log.Warn("snapshot: compressor", "err", err)
		_ = str.Reset()
		return
	}
	w := bufio.NewWriterSize(zw, 1<<20)
	var buf [binary.MaxVarintLen64]byte
	put := func(b []byte) error {
		if _, err := w.Write(buf[:binary.PutUvarint(buf[:], uint64(len(b)))]); err != nil {
			return err
		}
		_, err := w.Write(b)
		return err
	}
	count := 0
	prefixes := s.layout.Prefixes
	if s.extra != nil {
		prefixes = append(slices.Clone(prefixes), s.extra(str.Conn().RemotePeer())...)
	}
	for _, prefix := range prefixes {
		it := txn.NewIterator(badgerdb.DefaultIteratorOptions)
		for it.Seek([]byte(prefix)); it.ValidForPrefix([]byte(prefix)); it.Next() {
			if ctx.Err() != nil {
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
				_ = str.SetWriteDeadline(time.Now().Add(idle))
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
	if err := zw.Close(); err != nil {
		_ = str.Reset()
		return
	}
	log.Info("snapshot sent", "entries", count)
}
