package crdt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	ds "github.com/ipfs/go-datastore"
	"google.golang.org/protobuf/encoding/protowire"
)

// Epochs: history that does not grow forever (docs/merge-rules.md,
// "Compaction"). go-ds-crdt v0.6.8 never prunes, so an office starts a new
// epoch: a fresh go-ds-crdt DAG in its own namespace, seeded with the
// visible writes of the current one (same keys, same bytes, same
// signatures) and a manifest saying which writes the seed covers (the cut:
// per writer, the newest op it holds). Every node moves to the latest epoch
// it hears of and carries over what the cut does not cover: its writes and
// those it received that the office had not, with the facts of what they
// superseded. Then it drops the old epoch's keys and blocks.
//
// Why the cut is exact: a writer's writes are committed in the order of
// their timestamps (one write at a time, the clock read under the write
// lock), and each of its deltas links to its previous heads, so any set of
// blocks closed under links (what a complete DAG walk finds, or what a node
// holds) holds, for every writer, all its writes up to some time. The
// office computes the cut from a complete walk of its DAG, and a carried
// write is one newer than the cut for its writer.

// EpochsCollection holds one record per epoch, its manifest (field
// "info"), written by the office that started it.
const EpochsCollection = "_epochs"

// epochInfoField is the field of an epoch record holding its manifest.
const epochInfoField = "info"

// Epoch names one generation of the replicated history. The first is
// Epoch{} ("0"); each compaction starts Number+1, with ID the first 16 hex
// digits of the SHA-256 of its manifest.
type Epoch struct {
	Number uint64
	ID     string
}

// String renders "0" for the first epoch, "<number>-<id>" for the others.
func (e Epoch) String() string {
	if e.Number == 0 && e.ID == "" {
		return "0"
	}
	return strconv.FormatUint(e.Number, 10) + "-" + e.ID
}

// ParseEpoch parses what String renders.
func ParseEpoch(s string) (Epoch, error) {
	if s == "0" {
		return Epoch{}, nil
	}
	num, id, ok := strings.Cut(s, "-")
	n, err := strconv.ParseUint(num, 10, 64)
	if !ok || err != nil || n == 0 || len(id) != 16 {
		return Epoch{}, fmt.Errorf("parse epoch %q: want 0 or <number>-<16 hex digits>", s)
	}
	if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
		return Epoch{}, fmt.Errorf("parse epoch %q: want 0 or <number>-<16 hex digits>", s)
	}
	return Epoch{Number: n, ID: id}, nil
}

// After reports whether e is later than o: every node moves to the latest
// epoch. Two offices that compact the same epoch at once make two epochs
// of the same number; the larger id wins.
func (e Epoch) After(o Epoch) bool {
	if e.Number != o.Number {
		return e.Number > o.Number
	}
	return e.ID > o.ID
}

// namespace is where go-ds-crdt keeps the epoch's state: base for the
// first, base + "-<epoch>" for the others.
func (e Epoch) namespace(base ds.Key) ds.Key {
	if e.Number == 0 {
		return base
	}
	return ds.RawKey(base.String() + "-" + e.String())
}

// EpochInfo is an epoch's manifest.
type EpochInfo struct {
	Epoch Epoch `json:"-"`
	// Number is Epoch.Number.
	Number uint64 `json:"number"`
	// Prev is the epoch it compacted.
	Prev string `json:"prev"`
	// By is the writer (office) that started it; At when.
	By string    `json:"by"`
	At time.Time `json:"at"`
	// Cut: per writer, the newest op the seed covers (16 hex digits). Every
	// op of that writer up to it was known to the office.
	Cut map[string]string `json:"cut"`
	// Keep is the history kept per field by the office (history_keep).
	Keep int `json:"history_keep"`
	// raw is the manifest as stored; Epoch.ID is its hash.
	raw string
}

// covers reports whether the cut holds op (the office knew it).
func (i *EpochInfo) covers(op OpID) bool {
	if i == nil || i.Epoch.Number == 0 {
		return false
	}
	s, ok := i.Cut[op.Writer]
	if !ok {
		return false
	}
	t, err := ParseTimestamp(s)
	return err == nil && op.Time <= t
}

// sealEpochInfo renders info as stored and sets its id.
func sealEpochInfo(info *EpochInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode epoch manifest: %w", err)
	}
	info.raw = string(b)
	info.Epoch = Epoch{Number: info.Number, ID: epochID(info.raw)}
	return nil
}

func epochID(raw string) string {
	h := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(h[:8])
}

// parseEpochInfo reads a stored manifest.
func parseEpochInfo(raw string) (*EpochInfo, error) {
	var info EpochInfo
	if err := json.Unmarshal([]byte(raw), &info); err != nil {
		return nil, fmt.Errorf("decode epoch manifest: %w", err)
	}
	if info.Number == 0 || info.By == "" {
		return nil, errors.New("decode epoch manifest: no number or author")
	}
	for w, t := range info.Cut {
		if _, err := ParseTimestamp(t); err != nil || w == "" {
			return nil, fmt.Errorf("decode epoch manifest: cut of %q: %q", w, t)
		}
	}
	info.raw = raw
	info.Epoch = Epoch{Number: info.Number, ID: epochID(raw)}
	return &info, nil
}

// loadEpoch reads the epoch this node is in (nil: the first).
func loadEpoch(ctx context.Context, base ds.Read, key ds.Key) (*EpochInfo, error) {
	b, err := base.Get(ctx, key)
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read epoch: %w", err)
	}
	return parseEpochInfo(string(b))
}

// Epoch returns the epoch this node is in.
func (s *Store) Epoch() Epoch {
	if i := s.epochInfo.Load(); i != nil {
		return i.Epoch
	}
	return Epoch{}
}

// EpochInfo returns the manifest of the epoch this node is in (nil: the
// first epoch, never compacted).
func (s *Store) EpochInfo() *EpochInfo {
	i := s.epochInfo.Load()
	if i == nil {
		return nil
	}
	c := *i
	return &c
}

// namespace is where go-ds-crdt keeps the current epoch's state.
func (s *Store) namespace() ds.Key {
	if ns := s.ns.Load(); ns != nil {
		return *ns
	}
	return s.opts.Namespace
}

// Heads payloads carry their epoch: field 15 of the pb.CRDTBroadcast
// message (a string, absent for epoch 0). go-ds-crdt ignores it; a node
// merges only the heads of its own epoch (see lenientBroadcaster.Next).
const epochTagField = 15

// appendEpochTag adds e's tag to a heads payload.
func appendEpochTag(data []byte, e Epoch) []byte {
	if e.Number == 0 {
		return data
	}
	data = protowire.AppendTag(data, epochTagField, protowire.BytesType)
	return protowire.AppendString(data, e.String())
}

// splitEpochTag returns the epoch tag of a heads payload and the payload
// without it. A payload with a bad or repeated tag is an error.
func splitEpochTag(data []byte) (Epoch, []byte, error) {
	var ep Epoch
	var rest []byte
	found := false
	in := data
	for len(in) > 0 {
		num, typ, n := protowire.ConsumeTag(in)
		if n < 0 {
			return ep, nil, errors.New("decode heads payload: bad field")
		}
		m := protowire.ConsumeFieldValue(num, typ, in[n:])
		if m < 0 {
			return ep, nil, errors.New("decode heads payload: bad field")
		}
		if num == epochTagField {
			if typ != protowire.BytesType || found {
				return ep, nil, errors.New("decode heads payload: bad epoch tag")
			}
			v, _ := protowire.ConsumeBytes(in[n:])
			e, err := ParseEpoch(string(v))
			if err != nil || e.Number == 0 {
				return ep, nil, fmt.Errorf("decode heads payload: bad epoch tag %q", v)
			}
			ep, found = e, true
			if rest == nil {
				rest = append([]byte{}, data[:len(data)-len(in)]...)
			}
		} else if found {
			rest = append(rest, in[:n+m]...)
		}
		in = in[n+m:]
	}
	if !found {
		return ep, data, nil
	}
	return ep, rest, nil
}

// HeadsEpoch returns the epoch a heads payload is tagged with (Epoch{} for
// an untagged one, or one that does not decode).
func HeadsEpoch(data []byte) Epoch {
	e, _, err := splitEpochTag(data)
	if err != nil {
		return Epoch{}
	}
	return e
}
