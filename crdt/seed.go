package crdt

import (
	"context"
	"fmt"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pb "github.com/ipfs/go-ds-crdt/pb"
)

// The seed of a new epoch: what an office copies into it (see Store.seed).

// seed puts every write the current epoch shows, as stored, into the new
// epoch's store, in deltas of BatchOps writes:
//   - the writes go-ds-crdt shows, except those that only carry supersede
//     facts (KeepField alone): everything they name is known to the cut,
//     and the cut's hidden ops are not seeded;
//   - with a trust model, the writes shown only because what tombstoned
//     them does not count (a forged edit);
//   - the writes of an import batch (signed once for the whole batch, see
//     signBatch) are seeded in one delta with every other write of their
//     batch, as the batch's signature needs, and those of them that do not
//     show are tombstoned in a later delta;
//   - not the writes of a record moved to another channel that its move
//     saw: the move copied them there, and the channel it left keeps only
//     the move op, so that a laptop holding only that channel does not
//     keep the record's values once it moves to the new epoch. A write
//     the move did not see (merged after it) is seeded: it is still to
//     move.
func (s *Store) seed(ctx context.Context, side *Store, rep *EpochReport) error {
	side.writeMu.Lock()
	defer side.writeMu.Unlock()
	moved, err := s.movedAway(ctx)
	if err != nil {
		return fmt.Errorf("read moved records: %w", err)
	}
	sd := &seeder{s: s, side: side, rep: rep, groups: map[string]string{}, shown: map[string]bool{}}
	defer sd.end(ctx)
	res, err := s.eng().Query(ctx, query.Query{Prefix: "/"})
	if err != nil {
		return fmt.Errorf("read visible writes: %w", err)
	}
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return r.Error
		}
		kp, err := parseOpKey(r.Key)
		if err != nil {
			continue
		}
		w, err := decodeWrite(kp, r.Value)
		if err == nil && onlyKeeps(w) {
			continue
		}
		if seen := moved[kp.Collection+"/"+kp.EscapedID]; err == nil && seen != nil && seenByMove(w, seen) {
			rep.MovedAway++
			continue
		}
		sd.shown[r.Key] = true
		if rec := kp.Collection + "/" + kp.EscapedID; rec != sd.last {
			rep.Records++ // keys come sorted: a record's writes are adjacent
			sd.last = rec
		}
		if err := sd.add(ctx, r.Key, kp, w, r.Value); err != nil {
			res.Close()
			return err
		}
	}
	res.Close()
	if err := sd.revive(ctx); err != nil {
		return err
	}
	return sd.finish(ctx)
}

// movedAway returns, for every record of a routed collection that this
// channel store shows moved to another channel, the ops ("field/opid")
// its move saw, with those superseded anyway (nil outside a channel).
func (s *Store) movedAway(ctx context.Context) (map[string]map[string]bool, error) {
	if s.opts.Channel == "" {
		return nil, nil
	}
	sc, err := s.Schema(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]bool{}
	for _, name := range sc.Names() {
		if sc.Collections[name].Channel == nil {
			continue
		}
		err := s.scanIDs(ctx, name, func(ops *recordOps, _ string, _ rules) error {
			mv, ok := ops.movedTo()
			if !ok {
				return nil
			}
			// What the move saw, and what was superseded anyway.
			seen := make(map[string]bool, len(mv.Seen)+len(ops.killed))
			for _, r := range mv.Seen {
				seen[r] = true
			}
			for r := range ops.killed {
				seen[r] = true
			}
			out[name+"/"+ops.escapedID] = seen
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// seenByMove reports whether a move that saw the ops seen saw every op of
// write w (a move op itself is never left out).
func seenByMove(w *write, seen map[string]bool) bool {
	for _, op := range w.Ops {
		if op.Field == MovedField || !seen[op.Ref()] {
			return false
		}
	}
	return len(w.Ops) > 0
}

// seeder puts the seed into the new epoch's store.
type seeder struct {
	s, side *Store
	rep     *EpochReport
	b       *pendingDelta
	n, size int
	last    string // the last record seeded
	// groups: the import batches to seed whole (writer + signature -> a
	// key of theirs); shown: the write keys that show.
	groups map[string]string
	shown  map[string]bool
}

func (sd *seeder) flush(ctx context.Context) error {
	if sd.b == nil {
		return nil
	}
	err := sd.side.commit(ctx, sd.b)
	sd.b.end(ctx)
	sd.b, sd.n, sd.size = nil, 0, 0
	return err
}

func (sd *seeder) end(ctx context.Context) {
	if sd.b != nil {
		sd.b.end(ctx)
		sd.b = nil
	}
}

// put stages one write, committing the delta when it is full.
func (sd *seeder) put(ctx context.Context, key string, value []byte) error {
	if sd.n >= sd.s.opts.BatchOps || sd.size+len(key)+len(value) > sd.s.opts.BatchBytes {
		if err := sd.flush(ctx); err != nil {
			return err
		}
	}
	if sd.b == nil {
		b, err := sd.side.openBatch(ctx)
		if err != nil {
			return err
		}
		sd.b = b
	}
	if err := sd.b.Put(ctx, ds.RawKey(key), value); err != nil {
		return err
	}
	if err := sd.side.copyBadSig(ctx, sd.s, key); err != nil {
		return err
	}
	sd.n++
	sd.size += len(key) + len(value)
	sd.rep.Seeded++
	return nil
}

// add seeds one write that shows. A write signed with its import batch
// is vouched for by this office (Store.vouch): seeded alone, its batch's
// signature would not verify. Without a trust model (no signatures), its
// batch is noted, to be seeded whole.
func (sd *seeder) add(ctx context.Context, key string, kp keyParts, w *write, value []byte) error {
	if w != nil && w.Batch && len(w.Sig) > 0 && sd.s.opts.Trust != nil && !sd.s.isBadSig(key) {
		v, err := sd.s.vouch(key, w)
		if err != nil {
			return err
		}
		sd.rep.Vouched++
		return sd.put(ctx, key, v)
	}
	if w != nil && w.Batch && len(w.Sig) > 0 {
		id := kp.Op.Writer + "\n" + string(w.Sig)
		if _, ok := sd.groups[id]; !ok {
			sd.groups[id] = key
		}
		return nil
	}
	return sd.put(ctx, key, value)
}

// revive seeds, for the records with ops that do not count, the writes
// shown only because what tombstoned them does not count.
func (sd *seeder) revive(ctx context.Context) error {
	s := sd.s
	if s.opts.Trust == nil {
		return nil
	}
	ignored, err := s.Ignored(ctx)
	if err != nil {
		return fmt.Errorf("list ignored ops: %w", err)
	}
	done := map[string]bool{}
	for _, ig := range ignored {
		eid, err := EscapeID(ig.ID)
		if err != nil || done[ig.Collection+"/"+eid] {
			continue
		}
		done[ig.Collection+"/"+eid] = true
		rec, err := s.readRecord(ctx, ig.Collection, eid)
		if err != nil {
			return err
		}
		show := map[string]bool{}
		for _, ops := range rec.fields {
			for _, op := range ops {
				show[op.Ref()] = true
			}
		}
		for _, op := range rec.deletes {
			show[op.Ref()] = true
		}
		elems, deltas, err := s.recordElementsWithDeltas(ctx, ig.Collection, eid, "")
		if err != nil {
			return err
		}
		for _, e := range elems {
			if e.live || !e.decoded || sd.shown[e.key] || !show[e.Field+"/"+e.Op.String()] {
				continue
			}
			value := elementValue(deltas[e.blockKey], e.key)
			if value == nil {
				continue
			}
			kp, _ := parseOpKey(e.key)
			w, err := decodeWrite(kp, value)
			if err != nil {
				continue
			}
			sd.shown[e.key] = true
			if err := sd.add(ctx, e.key, kp, w, value); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish seeds the import batches, each whole in its own delta, then
// tombstones the writes of them that do not show.
func (sd *seeder) finish(ctx context.Context) error {
	if err := sd.flush(ctx); err != nil {
		return err
	}
	var hidden []ds.Key
	cache := map[string]*pb.Delta{}
	for id, key := range sd.groups {
		members, err := sd.s.batchGroup(ctx, key, id, cache)
		if err != nil {
			return err
		}
		for _, m := range members {
			if err := sd.put(ctx, m[0], []byte(m[1])); err != nil {
				return err
			}
			if !sd.shown[m[0]] {
				hidden = append(hidden, ds.RawKey(m[0]))
				sd.rep.Seeded--
			}
		}
		if err := sd.flush(ctx); err != nil {
			return err
		}
		if len(cache) > 64 {
			clear(cache)
		}
	}
	for len(hidden) > 0 {
		n := min(len(hidden), sd.s.opts.BatchOps)
		b, err := sd.side.openBatch(ctx)
		if err != nil {
			return err
		}
		for _, k := range hidden[:n] {
			if err := b.Delete(ctx, k); err != nil {
				b.end(ctx)
				return err
			}
		}
		err = sd.side.commit(ctx, b)
		b.end(ctx)
		if err != nil {
			return err
		}
		hidden = hidden[n:]
	}
	return nil
}

// batchGroup returns every write (key, stored value) of the import batch
// id (writer + "\n" + signature) that key's write belongs to, from the
// block that carried it.
func (s *Store) batchGroup(ctx context.Context, key, id string, cache map[string]*pb.Delta) ([][2]string, error) {
	p := prefix(s.layout().elems().Child(ds.RawKey(key)))
	res, err := s.base.Query(ctx, query.Query{Prefix: p, KeysOnly: true})
	if err != nil {
		return nil, err
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		delta, _, err := s.blockDelta(ctx, strings.TrimPrefix(e.Key, p), cache)
		if err != nil {
			continue
		}
		var out [][2]string
		for _, el := range delta.GetElements() {
			kp, err := parseOpKey(el.GetKey())
			if err != nil {
				continue
			}
			w, err := decodeWrite(kp, el.GetValue())
			if err != nil || !w.Batch || kp.Op.Writer+"\n"+string(w.Sig) != id {
				continue
			}
			out = append(out, [2]string{el.GetKey(), string(el.GetValue())})
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("the import batch of %s is not here", key)
}

// elementValue is the stored value of key in a delta (nil if absent).
func elementValue(d *pb.Delta, key string) []byte {
	if d == nil {
		return nil
	}
	for _, el := range d.GetElements() {
		if el.GetKey() == key {
			return el.GetValue()
		}
	}
	return nil
}

// onlyKeeps reports whether a write only lists superseded ops.
func onlyKeeps(w *write) bool {
	for _, op := range w.Ops {
		if op.Field != KeepField {
			return false
		}
	}
	return len(w.Ops) > 0
}

// copyBadSig marks key in this (side) store when its signature failed in
// from: a write copied as stored is not verified again here.
func (s *Store) copyBadSig(ctx context.Context, from *Store, key string) error {
	if from.opts.Trust == nil || !from.isBadSig(key) {
		return nil
	}
	s.badSig.Store(key, true)
	return s.base.Put(ctx, ds.RawKey(s.badSigRoot()+key), nil)
}
