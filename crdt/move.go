package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pb "github.com/ipfs/go-ds-crdt/pb"
)

// Moves (docs/channels.md, "A record changing channel"): a record of a
// routed collection whose routing field is edited to name another channel
// stays where it is until an office moves it: the office copies every
// write of the record (history included) into the new channel's store as
// stored (same key, op id and writer), each vouched for by the office so
// that it counts there whoever wrote it, then writes a MovedField op in
// the old channel. That op hides the record there, on every node; writes
// it did not see (made meanwhile on a node holding only the old channel)
// are carried over the same way by the next move.

// MovedField is the pseudo-field of the operation by which an office takes
// a record out of a channel's store: its value is the channel the record
// went to, then the heads of that channel's store once the copies were
// written, and their epoch ("west bafy... bafy... @1-5f0c1e9a7d3b2a61").
// An empty value (the record came back) only supersedes earlier ones.
const MovedField = "_moved"

// MovedError is what Get answers for a record an office moved to another
// channel. It wraps ErrNotFound.
type MovedError struct {
	Collection, ID string
	// To is the channel the record went to; Heads the heads of its store
	// once it held the record, in epoch Epoch of that store (nil: not
	// said, a move made before moves said it).
	To    string
	Heads []cid.Cid
	Epoch *Epoch
	// At is when the move was made.
	At Timestamp
}

// movedError is the MovedError of move op mv.
func movedError(collection, id string, mv Op) *MovedError {
	to, heads, ep := parseMoved(mv.Value)
	return &MovedError{Collection: collection, ID: id, To: to, Heads: heads, Epoch: ep, At: mv.ID.Time}
}

// HeadsGone reports whether the heads of the move belong to an epoch of
// the target store older than its current one: they will never be merged
// there, and the copies are there if the compaction's office had them (or
// come with the move's office when it adopts the new epoch).
func (e *MovedError) HeadsGone(target *Store) bool {
	cur := target.EpochInfo()
	if cur == nil || cur.Epoch.Number == 0 {
		return false
	}
	if e.Epoch != nil {
		return cur.Epoch.After(*e.Epoch)
	}
	return e.At.Wall().Before(cur.At)
}

func (e *MovedError) Error() string {
	return fmt.Sprintf("%s/%s moved to channel %s", e.Collection, e.ID, e.To)
}

// Unwrap makes a moved record a record not found.
func (e *MovedError) Unwrap() error { return ErrNotFound }

// parseMoved reads a MovedField value: the channel, then its heads, and an
// "@<epoch>" token naming their epoch.
func parseMoved(v any) (to string, heads []cid.Cid, ep *Epoch) {
	s, _ := v.(string)
	parts := strings.Fields(s)
	if len(parts) == 0 {
		return "", nil, nil
	}
	for _, p := range parts[1:] {
		if e, ok := strings.CutPrefix(p, "@"); ok {
			if got, err := ParseEpoch(e); err == nil {
				ep = &got
			}
			continue
		}
		if c, err := cid.Decode(p); err == nil {
			heads = append(heads, c)
		}
	}
	return parts[0], heads, ep
}

// movedTo returns the move that hides a record, if any: the newest visible
// MovedField op with a target.
func (r *recordOps) movedTo() (op Op, ok bool) {
	for _, m := range r.moved {
		if to, _, _ := parseMoved(m.Value); to != "" && (!ok || m.ID.Newer(op.ID)) {
			op, ok = m, true
		}
	}
	return op, ok
}

// unseen lists the visible field and delete ops the move op did not see:
// writes merged after it (stragglers).
func (r *recordOps) unseen(move Op) []Op {
	var out []Op
	for _, ops := range r.fields {
		for _, op := range ops {
			if !slices.Contains(move.Seen, op.Ref()) {
				out = append(out, op)
			}
		}
	}
	for _, op := range r.deletes {
		if !slices.Contains(move.Seen, op.Ref()) {
			out = append(out, op)
		}
	}
	return out
}

// MoveResult is what a move did.
type MoveResult struct {
	// Copied is the number of writes put into the new channel's store.
	Copied int
	// Op is the MovedField op written in the old one.
	Op OpID
}

// Move moves a record of a routed collection from this channel store to
// dst, another channel store of the same node: an office only. Both stores
// are locked for writing meanwhile. Moving a record hidden here by an
// earlier move carries the writes that move did not see.
func (s *Store) Move(ctx context.Context, dst *Store, collection, id string) (MoveResult, error) {
	var res MoveResult
	switch {
	case s.opts.Channel == "" || dst.opts.Channel == "" || s.auth() != dst.auth():
		return res, errors.New("move: both stores must be channel stores of one node")
	case s.opts.Channel == dst.opts.Channel:
		return res, fmt.Errorf("move %s/%s: already in channel %s", collection, id, s.opts.Channel)
	}
	eid, err := EscapeID(id)
	if err != nil {
		return res, fmt.Errorf("move: %w", err)
	}
	if err := s.checkOffice(ctx); err != nil {
		return res, fmt.Errorf("move %s/%s: %w", collection, id, err)
	}
	for _, st := range []*Store{s, dst} {
		if err := st.checkWritable(ctx, collection, eid); err != nil {
			return res, fmt.Errorf("move %s/%s: %w", collection, id, err)
		}
	}
	first, second := s, dst
	if dst.opts.Channel < s.opts.Channel {
		first, second = dst, s
	}
	first.writeMu.Lock()
	defer first.writeMu.Unlock()
	second.writeMu.Lock()
	defer second.writeMu.Unlock()

	cur, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return res, fmt.Errorf("move %s/%s: %w", collection, id, err)
	}
	puts, err := s.recordCopies(ctx, dst, collection, eid)
	if err != nil {
		return res, fmt.Errorf("move %s/%s: %w", collection, id, err)
	}
	// 1. The copies, in deltas of at most BatchOps writes.
	for len(puts) > 0 {
		n := min(len(puts), dst.opts.BatchOps)
		if err := dst.putAsStored(ctx, s, puts[:n]); err != nil {
			return res, fmt.Errorf("move %s/%s: copy into %s: %w", collection, id, dst.opts.Channel, err)
		}
		res.Copied += n
		puts = puts[n:]
	}
	// A record that had left dst before comes back: its move ops there
	// are superseded.
	if back, err := dst.readRecord(ctx, collection, eid); err != nil {
		return res, err
	} else if len(back.moved) > 0 {
		dst.clock.Observe(back.maxTime())
		op := Op{ID: OpID{Time: dst.clock.Now(), Writer: dst.opts.Writer}, Field: MovedField, Value: ""}
		for _, m := range back.moved {
			op.Supersedes = append(op.Supersedes, m.Ref())
		}
		p, err := dst.planElement(ctx, collection, eid, back, &write{ID: op.ID, Ops: []Op{op}})
		if err != nil {
			return res, err
		}
		if err := dst.writePlanned(ctx, collection, eid, p); err != nil {
			return res, fmt.Errorf("move %s/%s back into %s: %w", collection, id, dst.opts.Channel, err)
		}
	}
	// 2. The move op: it saw every visible op, and supersedes the moves
	// before it.
	heads, err := dst.Heads(ctx)
	if err != nil {
		return res, err
	}
	value := dst.opts.Channel
	for _, h := range heads {
		value += " " + h.String()
	}
	value += " @" + dst.Epoch().String()
	s.clock.Observe(cur.maxTime())
	mv := Op{ID: OpID{Time: s.clock.Now(), Writer: s.opts.Writer}, Field: MovedField, Value: value}
	for _, op := range cur.moved {
		mv.Supersedes = append(mv.Supersedes, op.Ref())
	}
	for _, ops := range cur.fields {
		for _, op := range ops {
			mv.Seen = append(mv.Seen, op.Ref())
		}
	}
	for _, op := range cur.deletes {
		mv.Seen = append(mv.Seen, op.Ref())
	}
	sort.Strings(mv.Seen)
	p, err := s.planElement(ctx, collection, eid, cur, &write{ID: mv.ID, Ops: []Op{mv}})
	if err != nil {
		return res, err
	}
	if err := s.writePlanned(ctx, collection, eid, p); err != nil {
		return res, fmt.Errorf("move %s/%s: %w", collection, id, err)
	}
	res.Op = mv.ID
	return res, nil
}

// checkOffice refuses a move by a node that is not an office (in a secured
// network).
func (s *Store) checkOffice(ctx context.Context) error {
	if s.opts.Trust == nil {
		return nil
	}
	m, ok, err := s.Member(ctx, s.opts.Writer)
	if err != nil {
		return err
	}
	if !ok || m.Revoked || m.Role != RoleOffice {
		return fmt.Errorf("%w: only an office moves records between channels", ErrForbidden)
	}
	return nil
}

// recordCopies returns, as stored here, every write of a record that dst
// does not hold yet (move ops excepted): key and value, vouched for by
// this office when signed by another node.
func (s *Store) recordCopies(ctx context.Context, dst *Store, collection, eid string) ([][2]string, error) {
	l := s.layout()
	elems := l.elems().String()
	res, err := s.base.Query(ctx, query.Query{Prefix: elems + recordPrefix(collection, eid).String() + "/", KeysOnly: true})
	if err != nil {
		return nil, err
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, err
	}
	dstValues := dst.layout().values()
	deltas := map[string]*pb.Delta{}
	seen := map[string]bool{}
	var out [][2]string
	for _, e := range entries {
		rest := strings.TrimPrefix(e.Key, elems)
		i := strings.LastIndex(rest, "/")
		if i <= 0 {
			continue
		}
		key, blockKey := rest[:i], rest[i+1:]
		if seen[key] {
			continue
		}
		seen[key] = true
		kp, err := parseOpKey(key)
		if err != nil {
			continue
		}
		if ok, err := dst.base.Has(ctx, dstValues.ChildString(strings.TrimPrefix(key, "/")).ChildString("v")); err != nil {
			return nil, err
		} else if ok {
			continue // copied by an earlier move
		}
		v, err := s.base.Get(ctx, l.values().ChildString(strings.TrimPrefix(key, "/")).ChildString("v"))
		if errors.Is(err, ds.ErrNotFound) {
			// Tombstoned here: its value is in the block that carried it.
			d, _, derr := s.blockDelta(ctx, blockKey, deltas)
			if derr != nil {
				continue // not held: nothing to copy
			}
			v, err = elementValue(d, key), nil
		}
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		w, err := decodeWrite(kp, v)
		if err != nil {
			continue // malformed: nothing to copy
		}
		if slices.ContainsFunc(w.Ops, func(op Op) bool { return op.Field == MovedField }) {
			continue
		}
		// Another node's write counts in the new channel once vouched for
		// (its writer may not be granted it); so does this office's own
		// import write: signed with its whole batch, it would not verify
		// alone.
		switch {
		case s.opts.Trust != nil && (kp.Op.Writer != s.opts.Writer || w.Batch) && !s.isBadSig(key):
			if v, err = s.vouchAny(key, w); err != nil {
				return nil, err
			}
		case s.opts.Trust == nil && kp.Op.Writer != s.opts.Writer:
			// Nobody signs in an open network; the copy is still marked,
			// so that a cut of the new channel does not count it.
			v = copiedForm(w)
		}
		out = append(out, [2]string{key, string(v)})
	}
	return out, nil
}

// copiedForm returns the stored form of write w copied by a move in an
// open network: its bytes with flagCopied alone.
func copiedForm(w *write) []byte {
	out := append([]byte{}, w.signed...)
	out[1] = flagCopied
	return out
}

// vouchAny returns the stored form of write w signed by this node alone
// (see vouch), whatever it was signed as: alone, with its import batch, or
// migrated from the previous format.
func (s *Store) vouchAny(key string, w *write) ([]byte, error) {
	unsigned := append([]byte{}, w.signed...)
	unsigned[1] = flagVouched
	sig, err := s.opts.Trust.Sign(writeMessage(key, unsigned))
	if err != nil {
		return nil, fmt.Errorf("vouch for %s: %w", key, err)
	}
	return append(append(unsigned, sig...), s.opts.Writer...), nil
}

// putAsStored writes key/value pairs into this store as they are, in one
// delta; from is where they were read (bad signatures stay marked). The
// caller holds writeMu.
func (s *Store) putAsStored(ctx context.Context, from *Store, puts [][2]string) error {
	b, err := s.openBatch(ctx)
	if err != nil {
		return err
	}
	defer b.end(ctx)
	for _, p := range puts {
		if err := b.Put(ctx, ds.RawKey(p[0]), []byte(p[1])); err != nil {
			return err
		}
		if err := s.copyBadSig(ctx, from, p[0]); err != nil {
			return err
		}
	}
	return s.commit(ctx, b)
}

// Misplaced calls fn for every record of this channel store that an office
// should move: shown here with a routing value naming another channel, or
// hidden by a move with writes the move did not see. to is the channel it
// goes to.
func (s *Store) Misplaced(ctx context.Context, fn func(collection, id, to string) error) error {
	if s.opts.Channel == "" {
		return nil
	}
	sc, err := s.Schema(ctx)
	if err != nil {
		return err
	}
	for _, name := range sc.Names() {
		c := sc.Collections[name]
		if c.Channel == nil {
			continue
		}
		ru, err := s.rulesFor(ctx, name)
		if err != nil {
			return err
		}
		err = s.scanRecords(ctx, name, func(ops *recordOps) error {
			id, err := UnescapeID(ops.escapedID)
			if err != nil {
				return nil
			}
			if mv, moved := ops.movedTo(); moved {
				if len(ops.unseen(mv)) > 0 {
					to, _, _ := parseMoved(mv.Value)
					return fn(name, id, to)
				}
				return nil
			}
			rec, ok := ops.fold(name, id, ru)
			if !ok {
				return nil
			}
			to, err := c.ChannelOf(rec.Values())
			if err != nil || to == s.opts.Channel {
				return nil
			}
			return fn(name, id, to)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// MovedRecord returns, for a record this store hides because an office
// moved it, the record as it was shown before (nil when it is not hidden
// by a move), and the move. A node holding both channels shows it until
// the new channel's store merged the copies (see Router).
func (s *Store) MovedRecord(ctx context.Context, collection, id string) (*Record, *MovedError, error) {
	eid, err := EscapeID(id)
	if err != nil {
		return nil, nil, err
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return nil, nil, err
	}
	ops, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return nil, nil, err
	}
	mv, ok := ops.movedTo()
	if !ok {
		return nil, nil, nil
	}
	ops.moved = nil
	rec, _ := ops.fold(collection, id, ru)
	return rec, movedError(collection, id, mv), nil
}

// HasProcessed reports whether every one of heads was merged here.
func (s *Store) HasProcessed(ctx context.Context, heads []cid.Cid) bool {
	for _, h := range heads {
		if ok, err := s.Processed(ctx, h); err != nil || !ok {
			return false
		}
	}
	return true
}

// MisplacedRecord says whether one record of this channel store should be
// moved, and where (see Misplaced).
func (s *Store) MisplacedRecord(ctx context.Context, collection, id string) (to string, ok bool, err error) {
	if s.opts.Channel == "" {
		return "", false, nil
	}
	c, err := s.Collection(ctx, collection)
	if err != nil || c.Channel == nil {
		return "", false, err
	}
	eid, err := EscapeID(id)
	if err != nil {
		return "", false, err
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return "", false, err
	}
	ops, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return "", false, err
	}
	if mv, moved := ops.movedTo(); moved {
		to, _, _ := parseMoved(mv.Value)
		return to, len(ops.unseen(mv)) > 0, nil
	}
	rec, exists := ops.fold(collection, id, ru)
	if !exists {
		return "", false, nil
	}
	to, err = c.ChannelOf(rec.Values())
	if err != nil || to == s.opts.Channel {
		return "", false, nil
	}
	return to, true, nil
}

// listWithMoved calls fn for every record of a collection that exists, in
// key order, and for every record an office moved away, as it was shown
// before, with its move.
func (s *Store) listWithMoved(ctx context.Context, collection string, fn func(rec *Record, moved *MovedError) error) error {
	return s.scanIDs(ctx, collection, func(ops *recordOps, id string, ru rules) error {
		mv, moved := ops.movedTo()
		if !moved {
			rec, ok := ops.fold(collection, id, ru)
			if !ok {
				return nil
			}
			return fn(rec, nil)
		}
		ops.moved = nil
		rec, ok := ops.fold(collection, id, ru)
		if !ok {
			return nil
		}
		return fn(rec, movedError(collection, id, mv))
	})
}

// onlyMoves reports whether a write is a move op (MovedField).
func onlyMoves(w *write) bool {
	for _, op := range w.Ops {
		if op.Field != MovedField {
			return false
		}
	}
	return len(w.Ops) > 0
}

// knows reports whether this store holds any write of a record, shown or
// not (a cheap look at one key, before a full read).
func (s *Store) knows(ctx context.Context, collection, eid string) (bool, error) {
	return s.hasElementsUnder(ctx, recordPrefix(collection, eid).String())
}

// hasElementsUnder reports whether go-ds-crdt holds an element (shown or
// not) whose key starts with prefix + "/".
func (s *Store) hasElementsUnder(ctx context.Context, prefix string) (bool, error) {
	res, err := s.base.Query(ctx, query.Query{Prefix: s.layout().elems().String() + prefix + "/", KeysOnly: true, Limit: 1})
	if err != nil {
		return false, err
	}
	defer res.Close()
	r, ok := res.NextSync()
	if !ok {
		return false, nil
	}
	return r.Error == nil, r.Error
}

// AtHome reports whether this channel store shows a record of a routed
// collection whose routing value names this channel (not moved away).
func (s *Store) AtHome(ctx context.Context, collection, id string) (bool, error) {
	if s.opts.Channel == "" {
		return false, nil
	}
	c, err := s.Collection(ctx, collection)
	if err != nil || c.Channel == nil {
		return false, err
	}
	eid, err := EscapeID(id)
	if err != nil {
		return false, err
	}
	if ok, err := s.knows(ctx, collection, eid); err != nil || !ok {
		return false, err
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return false, err
	}
	ops, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return false, err
	}
	if _, moved := ops.movedTo(); moved {
		return false, nil
	}
	rec, exists := ops.fold(collection, id, ru)
	if !exists {
		return false, nil
	}
	to, err := c.ChannelOf(rec.Values())
	return err == nil && to == s.opts.Channel, nil
}
