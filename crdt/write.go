package crdt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/ferry-crm/ferry/internal/dsbatch"
	"github.com/ferry-crm/ferry/schema"
)

// PutResult says what a write did.
type PutResult struct {
	// Op is the id shared by the operations of this write (zero when
	// nothing changed).
	Op OpID
	// Created is true when the record did not exist before.
	Created bool
	// Fields lists the fields written, sorted (unchanged fields are skipped).
	Fields []string
}

// ErrNoFields: a write gave no field to write.
var ErrNoFields = errors.New("no fields to write")

// Put writes fields of a record in one atomic delta, after validating them
// against the replicated schema. Values are Go values as produced by
// schema.ParseText or decoded from JSON; nil clears a field. It returns once
// the write is durable on disk. Unlike PutText, it accepts an empty write
// (which writes nothing, or fails on a new record with required fields).
func (s *Store) Put(ctx context.Context, collection, id string, fields map[string]any) (PutResult, error) {
	return s.put(ctx, collection, id, fields, nil)
}

// PutText is Put for values given in two forms: fields holds Go values as
// for Put, text holds values typed as text, parsed by the field's type
// (schema.Collection.ParseText). Both are validated in one pass; a field
// may not be given in both. A write with no field at all is refused
// (ErrNoFields). Validation errors are *schema.FieldError naming the record.
func (s *Store) PutText(ctx context.Context, collection, id string, fields map[string]any, text map[string]string) (PutResult, error) {
	if len(fields) == 0 && len(text) == 0 {
		return PutResult{}, fmt.Errorf("put %s/%s: %w", collection, id, ErrNoFields)
	}
	return s.put(ctx, collection, id, fields, text)
}

// put validates (typed and text values in one pass, unique values against
// the unique index) and writes one record.
func (s *Store) put(ctx context.Context, collection, id string, fields map[string]any, text map[string]string) (PutResult, error) {
	eid, err := EscapeID(id)
	if err != nil {
		return PutResult{}, fmt.Errorf("put %s: %w", collection, err)
	}
	coll, err := s.Collection(ctx, collection)
	if err != nil {
		return PutResult{}, err
	}
	if err := s.checkWritable(ctx, collection, eid); err != nil {
		return PutResult{}, fmt.Errorf("put %s/%s: %w", collection, id, err)
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return PutResult{}, err
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return PutResult{}, fmt.Errorf("put %s/%s: %w", collection, id, err)
	}
	exists, _ := cur.exists(ru)
	norm, err := coll.ValidateWriteText(id, fields, text, !exists)
	if err != nil {
		return PutResult{}, err
	}
	if err := s.checkUnique(ctx, coll, id, norm); err != nil {
		if _, ok := err.(*schema.FieldError); ok {
			return PutResult{}, err // it names the record already
		}
		return PutResult{}, fmt.Errorf("put %s/%s: %w", collection, id, err)
	}
	return s.writeRecord(ctx, collection, eid, cur, norm, ru)
}

// writeRecord writes already validated fields of one record in its own
// delta and waits until it is durable. The caller holds writeMu.
func (s *Store) writeRecord(ctx context.Context, collection, eid string, cur *recordOps, fields map[string]any, ru rules) (PutResult, error) {
	p, err := s.planWrite(ctx, collection, eid, cur, fields, ru)
	if err != nil {
		return PutResult{}, err
	}
	if len(p.result.Fields) == 0 {
		return p.result, nil
	}
	if err := s.writePlanned(ctx, collection, eid, p); err != nil {
		return PutResult{}, err
	}
	return p.result, nil
}

// writePlanned signs a plan and writes it in its own delta, durably. The
// caller holds writeMu.
func (s *Store) writePlanned(ctx context.Context, collection, eid string, p *writePlan) error {
	if p.size > s.opts.BatchBytes {
		return fmt.Errorf("%s/%s: %d bytes in one write: %w", collection, eid, p.size, ErrTooLarge)
	}
	if err := s.sign(p); err != nil {
		return err
	}
	b, err := s.openBatch(ctx)
	if err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, eid, err)
	}
	defer b.end(ctx)
	if err := p.stage(ctx, b); err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, eid, err)
	}
	if err := s.commit(ctx, b); err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, eid, err)
	}
	return nil
}

// writePlan is one record write, computed before anything is staged so that
// a write that cannot be made leaves go-ds-crdt's pending delta untouched.
// A write is one element (keys holds its one key); tombs are the visible
// writes it retires.
type writePlan struct {
	result PutResult
	tombs  []ds.Key
	keys   []ds.Key
	// unsigned holds the encoded writes; sign turns them into values.
	unsigned [][]byte
	values   [][]byte
	size     int
}

// stage adds the plan to batch b: tombstones first, then the new write.
func (p *writePlan) stage(ctx context.Context, b ds.Batch) error {
	if len(p.values) != len(p.keys) {
		return errors.New("bug: staging a write plan that was not signed")
	}
	for _, k := range p.tombs {
		if err := b.Delete(ctx, k); err != nil {
			return fmt.Errorf("stage tombstone %s: %w", k, err)
		}
	}
	for i, k := range p.keys {
		if err := b.Put(ctx, k, p.values[i]); err != nil {
			return fmt.Errorf("stage %s: %w", k, err)
		}
	}
	return nil
}

// planWrite computes one record write: one element with an op per changed
// field, superseding every op it replaces (the field's visible ops, visible
// record deletes, and, when the record did not exist, every leftover op of
// it, so that a re-created record starts empty). Fields whose single
// visible value already equals the new one are skipped; a plan without
// fields writes nothing.
func (s *Store) planWrite(ctx context.Context, collection, eid string, cur *recordOps, fields map[string]any, ru rules) (*writePlan, error) {
	exists, _ := cur.exists(ru)
	creating := !exists
	names := make([]string, 0, len(fields))
	for name, v := range fields {
		old := cur.fields[name]
		if !creating && len(cur.deletes) == 0 && len(old) == 1 && old[0].Value == v {
			continue
		}
		if creating && v == nil {
			continue // clearing a field of a new record writes nothing
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return &writePlan{}, nil
	}
	sort.Strings(names)

	s.clock.Observe(cur.maxTime())
	id := OpID{Time: s.clock.Now(), Writer: s.opts.Writer}
	// Ops superseded by the write as a whole (deletes, and on re-creation
	// the old fields) are listed on the first written field's op.
	var common []string
	for _, op := range cur.deletes {
		common = append(common, op.Ref())
	}
	if creating {
		for field, ops := range cur.fields {
			if _, written := fields[field]; written {
				continue
			}
			for _, op := range ops {
				common = append(common, op.Ref())
			}
		}
		sort.Strings(common)
	}
	w := &write{ID: id, Ops: make([]Op, len(names))}
	for i, name := range names {
		op := Op{ID: id, Field: name, Value: fields[name]}
		if i == 0 {
			op.Supersedes = common
		}
		for _, old := range cur.fields[name] {
			op.Supersedes = append(op.Supersedes, old.Ref())
		}
		w.Ops[i] = op
	}
	p, err := s.planElement(ctx, collection, eid, cur, w)
	if err != nil {
		return nil, err
	}
	p.result = PutResult{Op: id, Created: creating, Fields: names}
	return p, nil
}

// planElement finishes a write: it retires the visible writes the new one
// leaves without a live op, carries on their supersede facts that still
// matter, and encodes the element.
func (s *Store) planElement(ctx context.Context, collection, eid string, cur *recordOps, w *write) (*writePlan, error) {
	p := &writePlan{}
	carried, tombs, err := s.retire(ctx, collection, eid, cur, w)
	if err != nil {
		return nil, err
	}
	if len(carried) > 0 {
		w.Ops[0].Supersedes = append(slices.Clip(w.Ops[0].Supersedes), carried...)
	}
	p.tombs = tombs
	key := writeKey(collection, eid, w.ID)
	data, err := encodeWrite(w)
	if err != nil {
		return nil, err
	}
	p.keys = []ds.Key{key}
	p.unsigned = [][]byte{data}
	p.size = len(data) + len(key.String())
	if s.opts.Trust != nil {
		p.size += sigOverhead
	}
	for _, k := range p.tombs {
		p.size += len(k.String()) + 64
	}
	return p, nil
}

// retire decides which visible writes the new write w tombstones: those
// every op of which is now superseded (by w, or already by an op that
// counts). A write with an op that does not count is never retired (a
// membership change may yet make it count). Superseded ops of writes that
// stay visible are kept dead by the supersede lists of the writes that
// killed them; when such a killer is retired, w carries its facts on, so
// no superseded value comes back. A fact is dropped only when its target
// is retired too, or was tombstoned here already (so everywhere, by a
// block w's block descends from).
func (s *Store) retire(ctx context.Context, collection, eid string, cur *recordOps, w *write) (carried []string, tombs []ds.Key, err error) {
	sup := map[string]bool{}
	for _, op := range w.Ops {
		for _, r := range op.Supersedes {
			sup[r] = true
		}
	}
	visible := map[OpID]bool{}
	retired := map[OpID]bool{}
	var gone []visibleWrite
	for _, vw := range cur.writes {
		visible[vw.ID] = true
		if vw.ignored || vw.ID == w.ID {
			continue
		}
		dead := true
		for _, op := range vw.Ops {
			if r := op.Ref(); !sup[r] && !cur.killed[r] {
				dead = false
				break
			}
		}
		if dead && !retired[vw.ID] {
			retired[vw.ID] = true
			gone = append(gone, vw)
			tombs = append(tombs, writeKey(collection, eid, vw.ID))
		}
	}
	for _, vw := range gone {
		for _, op := range vw.Ops {
			for _, r := range op.Supersedes {
				if sup[r] {
					continue
				}
				_, target, err := splitRef(r)
				if err != nil || retired[target] {
					continue
				}
				if !visible[target] {
					here, err := s.tombstonedHere(ctx, collection, eid, target)
					if err != nil {
						return nil, nil, fmt.Errorf("write %s/%s: %w", collection, eid, err)
					}
					if here {
						continue
					}
				}
				sup[r] = true
				carried = append(carried, r)
			}
		}
	}
	sort.Strings(carried)
	return carried, tombs, nil
}

// tombstonedHere reports whether a write of a record was merged here and
// tombstoned.
func (s *Store) tombstonedHere(ctx context.Context, collection, eid string, id OpID) (bool, error) {
	res, err := s.base.Query(ctx, query.Query{Prefix: prefix(s.layout().tombs()) + writeKey(collection, eid, id).String()[1:] + "/", KeysOnly: true, Limit: 1})
	if err != nil {
		return false, fmt.Errorf("look up tombstone: %w", err)
	}
	defer res.Close()
	r, ok := res.NextSync()
	if ok && r.Error != nil {
		return false, fmt.Errorf("look up tombstone: %w", r.Error)
	}
	return ok, nil
}

// Delete deletes a record: one delete operation, newer than every edit its
// writer saw. Field operations are kept (not tombstoned): an edit made
// concurrently and newer than the delete brings the whole record back.
func (s *Store) Delete(ctx context.Context, collection, id string) (OpID, error) {
	eid, err := EscapeID(id)
	if err != nil {
		return OpID{}, fmt.Errorf("delete %s: %w", collection, err)
	}
	if err := s.checkWritable(ctx, collection, eid); err != nil {
		return OpID{}, fmt.Errorf("delete %s/%s: %w", collection, id, err)
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return OpID{}, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return OpID{}, fmt.Errorf("delete %s/%s: %w", collection, id, err)
	}
	if exists, _ := cur.exists(ru); !exists {
		return OpID{}, fmt.Errorf("delete %s/%s: %w", collection, id, ErrNotFound)
	}
	return s.deleteRecord(ctx, collection, eid, cur)
}

// deleteRecord writes a delete operation that has seen every visible field
// operation and supersedes the visible deletes. The caller holds writeMu.
func (s *Store) deleteRecord(ctx context.Context, collection, eid string, cur *recordOps) (OpID, error) {
	s.clock.Observe(cur.maxTime())
	del := Op{ID: OpID{Time: s.clock.Now(), Writer: s.opts.Writer}, Field: DeleteField, Value: true}
	for _, old := range cur.deletes {
		del.Supersedes = append(del.Supersedes, old.Ref())
	}
	for _, ops := range cur.fields {
		for _, op := range ops {
			del.Seen = append(del.Seen, op.Ref())
		}
	}
	sort.Strings(del.Seen)
	p, err := s.planElement(ctx, collection, eid, cur, &write{ID: del.ID, Ops: []Op{del}})
	if err != nil {
		return OpID{}, err
	}
	if err := s.writePlanned(ctx, collection, eid, p); err != nil {
		return OpID{}, err
	}
	return del.ID, nil
}

// commit publishes the pending delta and makes it durable, all or nothing.
// go-ds-crdt builds the block (written first by the DAG service) and merges
// it; every other write of that merge is held by the observed store and
// written here in one batch with the clock, then synced: go-ds-crdt writes
// with fsync off (see node/store.go), so this Sync is the single fsync of
// an acknowledged write. The announcement to peers waits for it.
//
// If any step fails, nothing of the write is kept (a block nothing refers
// to may stay; it is harmless) and go-ds-crdt is reopened, since its
// memory may hold the failed delta or heads that are not on disk. The error
// wraps ErrNotWritten.
func (s *Store) commit(ctx context.Context, b *pendingDelta) error {
	b.staged = false
	s.observed.begin()
	if err := b.Batch.Commit(withLocalWrite(ctx)); err != nil {
		s.observed.abort()
		s.bcast.release(ctx, false)
		return s.discard(ctx, fmt.Errorf("commit delta: %w", err))
	}
	var clock [8]byte
	binary.BigEndian.PutUint64(clock[:], uint64(s.clock.Last()))
	if err := s.observed.commitTxn(ctx, dsbatch.Op{Key: clockKey, Value: clock[:]}); err != nil {
		s.bcast.release(ctx, false)
		return s.discard(ctx, fmt.Errorf("write delta: %w", err))
	}
	if err := s.base.Sync(ctx, ds.NewKey("/")); err != nil {
		// Written but perhaps not durable: the write shows here, so it is
		// announced; the caller is told it may be lost in a crash.
		s.bcast.release(ctx, true)
		return fmt.Errorf("sync to disk: %w", err)
	}
	s.bcast.release(ctx, true)
	return nil
}

// collectionOf finds a collection of the schema; with no schema at all, the
// error says how to get one.
func collectionOf(sc *schema.Schema, collection string) (*schema.Collection, error) {
	c, err := sc.Collection(collection)
	if err != nil && len(sc.Collections) == 0 {
		return nil, fmt.Errorf("%w: this node has no schema yet (apply one with 'ferry schema apply FILE', or let it sync with the office)", err)
	}
	return c, err
}
