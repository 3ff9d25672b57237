package crdt

import (
	"context"
	"fmt"
	"sort"
	"strings"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pb "github.com/ipfs/go-ds-crdt/pb"
)

// History is built from what the store already keeps. go-ds-crdt v0.6.8
// records every element it ever merged under <ns>/s/s/<key>/<block> (the key
// with the id of the DAG block that carried it) and every tombstone under
// <ns>/s/t/<key>/<block>; the value itself lives only in the block. So the
// history of a record is: list its element keys (every operation ever
// written, superseded or not), read each op's value from its block, and
// check for a tombstone. This reads go-ds-crdt's storage layout (see
// ../shared/notes/go-ds-crdt.md); TestHistory fails if it changes.

// HistoryEntry is one operation ever written to a record.
type HistoryEntry struct {
	Field string // a field, or DeleteField for a record delete
	Op    OpID
	Value any
	// Supersedes: the operations ("field/opid") this one replaced.
	Supersedes []string
	// Seen: for a delete, the field operations visible to the deleter.
	Seen []string
	// Visible is false once a later operation superseded this one.
	Visible bool
	// Local is true when this node wrote the operation; false when it
	// arrived from a peer.
	Local bool
	// Block is the DAG block that carried it.
	Block cid.Cid
	// Compacted: the operation is from before an epoch change, kept in
	// this node's history archive (value, writer and time only).
	Compacted bool
}

// History returns every operation of a record (of one field when field is
// not empty), oldest first. Operations whose block is not (yet) on this node
// are returned without a value and with Block undefined.
func (s *Store) History(ctx context.Context, collection, id, field string) ([]HistoryEntry, error) {
	eid, err := EscapeID(id)
	if err != nil {
		return nil, err
	}
	elems, err := s.recordElements(ctx, collection, eid, field)
	if err != nil {
		return nil, fmt.Errorf("history of %s/%s: %w", collection, id, err)
	}
	out := make([]HistoryEntry, 0, len(elems))
	have := map[string]bool{}
	for _, e := range elems {
		out = append(out, e.HistoryEntry)
		have[e.Field+"/"+e.Op.String()] = true
	}
	arch, err := s.readArchive(ctx, collection, eid)
	if err != nil {
		return nil, err
	}
	for _, a := range arch {
		if have[a.Field+"/"+a.Op.String()] || (field != "" && a.Field != field) {
			continue
		}
		out = append(out, HistoryEntry{Field: a.Field, Op: a.Op, Value: a.Value, Local: a.Op.Writer == s.opts.Writer, Compacted: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[j].Op.Newer(out[i].Op) })
	return out, nil
}

// element is one operation of a write go-ds-crdt merged, with its stored
// form.
type element struct {
	HistoryEntry
	key      string // the write key
	blockKey string // the block's go-ds-crdt id
	decoded  bool
	// live: its write is not tombstoned here.
	live bool
	// voucher: the office that signed for it (see Store.vouch), if any.
	voucher string
}

// recordElements lists every operation ever merged for a record (of one
// field when field is not empty), in key order; an operation carried by
// several blocks is listed once per block.
func (s *Store) recordElements(ctx context.Context, collection, eid, field string) ([]element, error) {
	elems, _, err := s.recordElementsWithDeltas(ctx, collection, eid, field)
	return elems, err
}

// recordElementsWithDeltas is recordElements, also returning the deltas it
// read, by block id. An op is Visible when its write is not tombstoned and
// no op of such a write superseded it.
func (s *Store) recordElementsWithDeltas(ctx context.Context, collection, eid, field string) ([]element, map[string]*pb.Delta, error) {
	prefix := s.layout().elems().String() + recordPrefix(collection, eid).String() + "/"
	res, err := s.base.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return nil, nil, err
	}
	defer res.Close()
	elemsRoot := s.layout().elems().String()
	tombsRoot := s.layout().tombs().String()
	deltas := map[string]*pb.Delta{}
	var out []element
	killed := map[string]bool{}
	for r := range res.Next() {
		if r.Error != nil {
			return nil, nil, r.Error
		}
		// <elemsRoot>/<collection>/<eid>/<opid>/<block key>
		rest := strings.TrimPrefix(r.Key, elemsRoot)
		i := strings.LastIndex(rest, "/")
		if i <= 0 {
			continue
		}
		keyStr, blockKey := rest[:i], rest[i+1:]
		kp, err := parseOpKey(keyStr)
		if err != nil {
			continue
		}
		tomb, err := s.base.Has(ctx, ds.NewKey(tombsRoot+rest))
		if err != nil {
			return nil, nil, err
		}
		base := element{HistoryEntry: HistoryEntry{Op: kp.Op, Local: kp.Op.Writer == s.opts.Writer}, key: keyStr, blockKey: blockKey, live: !tomb}
		delta, c, err := s.blockDelta(ctx, blockKey, deltas)
		if err != nil {
			out = append(out, base) // the block is not here (yet)
			continue
		}
		base.Block = c
		for _, el := range delta.GetElements() {
			if el.GetKey() != keyStr {
				continue
			}
			w, err := decodeWrite(kp, el.GetValue())
			if err != nil {
				break
			}
			for _, op := range w.Ops {
				e := base
				e.Field, e.Value, e.Supersedes, e.Seen, e.decoded = op.Field, op.Value, op.Supersedes, op.Seen, true
				e.voucher = w.Voucher
				if e.live {
					for _, r := range op.Supersedes {
						killed[r] = true
					}
				}
				out = append(out, e)
			}
			break
		}
	}
	kept := out[:0]
	for _, e := range out {
		e.Visible = e.live && !killed[e.Field+"/"+e.Op.String()]
		if field == "" || e.Field == field {
			kept = append(kept, e)
		}
	}
	return kept, deltas, nil
}

// rebuildRecord recomputes the visible operations of a record from its
// whole history, counting only the operations that pass the trust checks.
// An operation is hidden when an operation that counts superseded it, or
// when an operation that does not count superseded it and was itself
// superseded by one that counts (its writer saw and accepted that state).
// Without ignored operations this is exactly go-ds-crdt's view (every
// tombstone of a Ferry write is listed in the Supersedes of one of its
// operations).
func (s *Store) rebuildRecord(ctx context.Context, v *view, writers []string, collection, eid string) (*recordOps, error) {
	elems, deltas, err := s.recordElementsWithDeltas(ctx, collection, eid, "")
	if err != nil {
		return nil, fmt.Errorf("rebuild %s/%s: %w", collection, eid, err)
	}
	verified := map[string]map[string]bool{} // block -> op key -> signature ok
	sigOK := func(e element) bool {
		if !v.officeVouched(&write{Voucher: e.voucher}) {
			return false
		}
		if e.live {
			return !v.badSig(e.key)
		}
		ok, done := verified[e.blockKey]
		if !done {
			ok = s.verifyDelta(deltas[e.blockKey])
			verified[e.blockKey] = ok
		}
		return ok[e.key]
	}
	type entry struct {
		op    Op
		valid bool
	}
	ops := map[string]*entry{} // "field/opid" -> op
	for _, e := range elems {
		ref := e.Field + "/" + e.Op.String()
		if !e.decoded || ops[ref] != nil && ops[ref].valid {
			continue
		}
		op := Op{ID: e.Op, Field: e.Field, Value: e.Value, Supersedes: e.Supersedes, Seen: e.Seen}
		valid := v.check(collection, eid, writers, op, e.voucher) == "" && sigOK(e)
		ops[ref] = &entry{op: op, valid: valid}
	}
	// endorsed: valid operations and, transitively, what they superseded.
	endorsed := map[string]bool{}
	var queue []string
	for ref, e := range ops {
		if e.valid {
			endorsed[ref] = true
			queue = append(queue, ref)
		}
	}
	hidden := map[string]bool{}
	for len(queue) > 0 {
		ref := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		e := ops[ref]
		if e == nil {
			continue
		}
		for _, sup := range e.op.Supersedes {
			hidden[sup] = true
			if !endorsed[sup] {
				endorsed[sup] = true
				queue = append(queue, sup)
			}
		}
	}
	rec := newRecordOps(eid)
	refs := make([]string, 0, len(ops))
	for ref := range ops {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		if e := ops[ref]; e.valid && !hidden[ref] {
			rec.add(e.op)
		}
	}
	return rec, nil
}

// blockDelta reads the delta of the block whose go-ds-crdt id is blockKey
// (a multihash in datastore-key form), caching deltas by id.
func (s *Store) blockDelta(ctx context.Context, blockKey string, cache map[string]*pb.Delta) (*pb.Delta, cid.Cid, error) {
	c, err := blockCid(blockKey)
	if err != nil {
		return nil, cid.Undef, err
	}
	if d, ok := cache[blockKey]; ok {
		return d, c, nil
	}
	nd, err := s.dag.Get(ctx, c)
	if err != nil {
		return nil, cid.Undef, err
	}
	d, err := decodeDelta(nd)
	if err != nil {
		return nil, cid.Undef, err
	}
	cache[blockKey] = d
	return d, c, nil
}
