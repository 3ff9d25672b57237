package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pb "github.com/ipfs/go-ds-crdt/pb"
)

// Carrying over: when a node moves to a new epoch, every write of its old
// epoch that the new epoch's cut does not cover (the office did not know
// it) is put into the new epoch as stored (same key, same signature), and
// so are the facts of what it superseded. A write superseded here that
// the new epoch holds, or one the cut does not cover, is named in a
// KeepField write of this node, so it stays dead on every node whatever
// order things arrive in (see docs/merge-rules.md, "Compaction").

// recordWrites is what the old epoch holds of one record: every write key
// merged, and whether the write is still shown (not tombstoned).
type recordWrites struct {
	collection, eid string
	keys            []string // write keys, sorted
	live            map[string]bool
	blocks          map[string]string // write key -> a block that carried it
	post            bool              // some write is not covered by the cut
}

// forEachRecordWrites calls fn with the writes of each record of the
// current epoch (read from go-ds-crdt's element entries, in key order).
func (s *Store) forEachRecordWrites(ctx context.Context, info *EpochInfo, fn func(*recordWrites) error) error {
	l := s.layout()
	elemsRoot := l.elems().String()
	res, err := s.base.Query(ctx, query.Query{Prefix: elemsRoot + "/", KeysOnly: true})
	if err != nil {
		return err
	}
	defer res.Close()
	var cur *recordWrites
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
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
		if cur != nil && (cur.collection != kp.Collection || cur.eid != kp.EscapedID) {
			if err := s.finishRecordWrites(ctx, cur, fn); err != nil {
				return err
			}
			cur = nil
		}
		if cur == nil {
			cur = &recordWrites{collection: kp.Collection, eid: kp.EscapedID, live: map[string]bool{}, blocks: map[string]string{}}
		}
		if _, seen := cur.blocks[keyStr]; !seen {
			cur.keys = append(cur.keys, keyStr)
			cur.blocks[keyStr] = blockKey
		}
		if !info.covers(kp.Op) {
			cur.post = true
		}
	}
	if cur != nil {
		return s.finishRecordWrites(ctx, cur, fn)
	}
	return nil
}

func (s *Store) finishRecordWrites(ctx context.Context, rw *recordWrites, fn func(*recordWrites) error) error {
	values := s.layout().values()
	for _, k := range rw.keys {
		ok, err := s.base.Has(ctx, values.ChildString(strings.TrimPrefix(k, "/")).ChildString("v"))
		if err != nil {
			return err
		}
		rw.live[k] = ok
	}
	return fn(rw)
}

// shownRefs names ("field/opid") the ops of a record that count and show,
// or do not count: its visible field, delete and move ops, and the ignored
// ones. An op not named is superseded. A visible move op must be named:
// left out, a carry once named it dead in a KeepField write, and the
// record showed again in the channel it had left (chaos seed 0x1).
func (r *recordOps) shownRefs() map[string]bool {
	shown := map[string]bool{}
	for _, ops := range r.fields {
		for _, op := range ops {
			shown[op.Ref()] = true
		}
	}
	for _, op := range r.deletes {
		shown[op.Ref()] = true
	}
	for _, op := range r.moved {
		shown[op.Ref()] = true
	}
	for _, ig := range r.ignored {
		shown[ig.Field+"/"+ig.Op.String()] = true
	}
	return shown
}

// carry puts into side (the new epoch) what the cut of info does not
// cover. The caller holds writeMu; go-ds-crdt is open without a
// broadcaster (nothing merges meanwhile).
func (s *Store) carry(ctx context.Context, side *Store, info *EpochInfo, rep *EpochReport) error {
	side.writeMu.Lock()
	defer side.writeMu.Unlock()
	sideValues := side.layout().values()
	inSide := func(key string) ([]byte, bool) {
		v, err := side.base.Get(ctx, sideValues.ChildString(strings.TrimPrefix(key, "/")).ChildString("v"))
		return v, err == nil
	}
	deltas := map[string]*pb.Delta{}
	groups := map[string]string{} // import batches to carry whole
	err := s.forEachRecordWrites(ctx, info, func(rw *recordWrites) error {
		if !rw.post {
			return nil
		}
		clear(deltas)
		rec, err := s.readRecord(ctx, rw.collection, rw.eid)
		if err != nil {
			return err
		}
		shown := rec.shownRefs()
		listed := map[string]bool{}
		var puts [][2]string // key, value
		for _, k := range rw.keys {
			kp, _ := parseOpKey(k)
			if !rw.live[k] || info.covers(kp.Op) {
				continue
			}
			if known, err := side.knowsWrite(ctx, k); err != nil {
				return err
			} else if known {
				// Carried already (by its writer's adoption, or an earlier
				// merge of this DAG): again would show it if it was
				// superseded there since.
				continue
			}
			v, err := s.base.Get(ctx, s.layout().values().ChildString(strings.TrimPrefix(k, "/")).ChildString("v"))
			if err != nil {
				return fmt.Errorf("read %s: %w", k, err)
			}
			w, err := decodeWrite(kp, v)
			if err != nil {
				continue // malformed: nothing to carry
			}
			for _, op := range w.Ops {
				for _, r := range op.Supersedes {
					listed[r] = true
				}
			}
			if w.Batch && len(w.Sig) > 0 {
				// Signed with the rest of its import batch: carried
				// with it, in one delta (below).
				groups[kp.Op.Writer+"\n"+string(w.Sig)] = k
				continue
			}
			puts = append(puts, [2]string{k, string(v)})
		}
		var dead []string
		for _, k := range rw.keys {
			kp, _ := parseOpKey(k)
			covered := info.covers(kp.Op)
			var w *write
			switch {
			case rw.live[k]:
				if covered {
					if _, ok := inSide(k); !ok {
						continue // the office knew it hidden
					}
				}
				v, err := s.base.Get(ctx, s.layout().values().ChildString(strings.TrimPrefix(k, "/")).ChildString("v"))
				if err != nil {
					return fmt.Errorf("read %s: %w", k, err)
				}
				w, _ = decodeWrite(kp, v)
			case covered:
				v, ok := inSide(k)
				if !ok {
					continue
				}
				w, _ = decodeWrite(kp, v)
			default:
				w = s.writeFromBlock(ctx, kp, k, rw.blocks[k], deltas)
			}
			if w == nil {
				continue
			}
			for _, op := range w.Ops {
				if ref := op.Ref(); !shown[ref] && !listed[ref] && op.Field != KeepField {
					dead = append(dead, ref)
				}
			}
		}
		if len(puts) == 0 && len(dead) == 0 {
			return nil
		}
		b, err := side.openBatch(ctx)
		if err != nil {
			return err
		}
		defer b.end(ctx)
		for _, p := range puts {
			if err := b.Put(ctx, ds.RawKey(p[0]), []byte(p[1])); err != nil {
				return err
			}
			if err := side.copyBadSig(ctx, s, p[0]); err != nil {
				return err
			}
			rep.Carried++
		}
		if len(dead) > 0 {
			slices.Sort(dead)
			dead = slices.Compact(dead)
			id := OpID{Time: s.clock.Now(), Writer: s.opts.Writer}
			w := &write{ID: id, Ops: []Op{{ID: id, Field: KeepField, Value: true, Supersedes: dead}}}
			unsigned, err := encodeWrite(w)
			if err != nil {
				return err
			}
			key := writeKey(rw.collection, rw.eid, id)
			values, err := side.signWrite([]ds.Key{key}, [][]byte{unsigned})
			if err != nil {
				return err
			}
			if err := b.Put(ctx, key, values[0]); err != nil {
				return err
			}
			rep.Facts++
		}
		return side.commit(ctx, b)
	})
	if err != nil {
		return err
	}
	// Each import batch whole, in its own delta: its signature covers all
	// of its writes. Those that do not show here are named dead by the
	// KeepField writes above (they are not covered by the cut either).
	for id, key := range groups {
		members, err := s.batchGroup(ctx, key, id, deltas)
		if err != nil {
			return err
		}
		b, err := side.openBatch(ctx)
		if err != nil {
			return err
		}
		for _, m := range members {
			if err := b.Put(ctx, ds.RawKey(m[0]), []byte(m[1])); err != nil {
				b.end(ctx)
				return err
			}
			if err := side.copyBadSig(ctx, s, m[0]); err != nil {
				b.end(ctx)
				return err
			}
			rep.Carried++
		}
		err = side.commit(ctx, b)
		b.end(ctx)
		if err != nil {
			return err
		}
	}
	return nil
}

// writeFromBlock reads a (tombstoned) write from the block that carried
// it; nil when the block is not here or does not hold it.
func (s *Store) writeFromBlock(ctx context.Context, kp keyParts, key, blockKey string, cache map[string]*pb.Delta) *write {
	delta, _, err := s.blockDelta(ctx, blockKey, cache)
	if err != nil {
		return nil
	}
	for _, el := range delta.GetElements() {
		if el.GetKey() == key {
			w, err := decodeWrite(kp, el.GetValue())
			if err != nil {
				return nil
			}
			return w
		}
	}
	return nil
}

// archived is one superseded value kept across epochs.
type archived struct {
	Field string
	Op    OpID
	Value any
}

// An archive is stored as a format byte (1) and a CBOR body: the writers,
// then per entry its field, time, writer index and value. Writer ids (52
// characters) are stored once per record, not once per value.
const archiveFormat = 1

type archiveBody struct {
	_       struct{} `cbor:",toarray"`
	Writers []string
	Entries []archiveEntry
}

type archiveEntry struct {
	_      struct{} `cbor:",toarray"`
	Field  string
	Time   uint64
	Writer uint64
	Value  any
}

func encodeArchive(entries []archived) ([]byte, error) {
	var body archiveBody
	idx := map[string]uint64{}
	for _, e := range entries {
		i, ok := idx[e.Op.Writer]
		if !ok {
			i = uint64(len(body.Writers))
			idx[e.Op.Writer] = i
			body.Writers = append(body.Writers, e.Op.Writer)
		}
		body.Entries = append(body.Entries, archiveEntry{Field: e.Field, Time: uint64(e.Op.Time), Writer: i, Value: e.Value})
	}
	b, err := cborEnc.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode history archive: %w", err)
	}
	return append([]byte{archiveFormat}, b...), nil
}

func decodeArchive(data []byte) ([]archived, error) {
	if len(data) == 0 || data[0] != archiveFormat {
		return nil, errors.New("decode history archive: unknown format")
	}
	var body archiveBody
	if err := cborDec.Unmarshal(data[1:], &body); err != nil {
		return nil, fmt.Errorf("decode history archive: %w", err)
	}
	out := make([]archived, 0, len(body.Entries))
	for _, e := range body.Entries {
		if e.Writer >= uint64(len(body.Writers)) {
			return nil, errors.New("decode history archive: bad writer index")
		}
		out = append(out, archived{Field: e.Field, Op: OpID{Time: Timestamp(e.Time), Writer: body.Writers[e.Writer]}, Value: e.Value})
	}
	return out, nil
}

func (s *Store) archiveKey(collection, eid string) ds.Key {
	return ds.RawKey(s.roots.history + collection + "/" + eid)
}

// archiveHistory keeps, for every record of the current epoch with
// superseded values, the newest HistoryKeep of them per field, merged with
// what earlier epochs kept. The caller holds writeMu; nothing merges.
func (s *Store) archiveHistory(ctx context.Context, rep *EpochReport) error {
	keep := s.opts.HistoryKeep
	deltas := map[string]*pb.Delta{}
	dropMoved := false
	if s.opts.Channel != "" {
		roles, err := s.roles(ctx)
		if err != nil {
			return err
		}
		dropMoved = roles[s.opts.Writer] != RoleOffice
	}
	return s.forEachRecordWrites(ctx, nil, func(rw *recordWrites) error {
		if len(rw.keys) < 2 || strings.HasPrefix(rw.collection, "_") {
			return nil
		}
		if len(deltas) > 256 {
			clear(deltas)
		}
		rec, err := s.readRecord(ctx, rw.collection, rw.eid)
		if err != nil {
			return err
		}
		if _, moved := rec.movedTo(); moved && dropMoved {
			// Moved to another channel: none of its history stays on a
			// laptop that may not hold that channel (see seed). An office
			// keeps it: it holds every channel, and its history of the
			// record stays whole.
			if err := s.base.Delete(ctx, s.archiveKey(rw.collection, rw.eid)); err != nil {
				return fmt.Errorf("drop the history archive of %s/%s: %w", rw.collection, rw.eid, err)
			}
			return nil
		}
		shown := rec.shownRefs()
		keys := slices.Clone(rw.keys)
		parsed := map[string]keyParts{}
		for _, k := range keys {
			parsed[k], _ = parseOpKey(k)
		}
		slices.SortFunc(keys, func(a, b string) int {
			if parsed[a].Op.Newer(parsed[b].Op) {
				return -1
			}
			if parsed[b].Op.Newer(parsed[a].Op) {
				return 1
			}
			return 0
		})
		count := map[string]int{}
		var got []archived
		full := func() bool {
			if len(rec.fields) == 0 {
				return false
			}
			for f := range rec.fields {
				if count[f] < keep {
					return false
				}
			}
			return true
		}
		for _, k := range keys {
			if full() {
				break
			}
			kp := parsed[k]
			var w *write
			if rw.live[k] {
				v, err := s.base.Get(ctx, s.layout().values().ChildString(strings.TrimPrefix(k, "/")).ChildString("v"))
				if err == nil {
					w, _ = decodeWrite(kp, v)
				}
			} else {
				w = s.writeFromBlock(ctx, kp, k, rw.blocks[k], deltas)
			}
			if w == nil {
				continue
			}
			for _, op := range w.Ops {
				if op.Field == KeepField || shown[op.Ref()] || count[op.Field] >= keep {
					continue
				}
				count[op.Field]++
				got = append(got, archived{Field: op.Field, Op: op.ID, Value: op.Value})
			}
		}
		if len(got) == 0 {
			return nil
		}
		rep.Archived++
		return s.mergeArchive(ctx, rw.collection, rw.eid, got, keep)
	})
}

// mergeArchive adds entries to a record's archive, keeping the newest
// keep per field.
func (s *Store) mergeArchive(ctx context.Context, collection, eid string, add []archived, keep int) error {
	old, err := s.readArchive(ctx, collection, eid)
	if err != nil {
		return err
	}
	all := append(old, add...)
	slices.SortStableFunc(all, func(a, b archived) int {
		switch {
		case a.Op.Newer(b.Op):
			return -1
		case b.Op.Newer(a.Op):
			return 1
		}
		return 0
	})
	seen := map[string]bool{}
	count := map[string]int{}
	var out []archived
	for _, e := range all {
		ref := e.Field + "/" + e.Op.String()
		if seen[ref] || count[e.Field] >= keep {
			continue
		}
		seen[ref] = true
		count[e.Field]++
		out = append(out, e)
	}
	data, err := encodeArchive(out)
	if err != nil {
		return err
	}
	return s.base.Put(ctx, s.archiveKey(collection, eid), data)
}

// readArchive returns what earlier epochs kept of a record's history.
func (s *Store) readArchive(ctx context.Context, collection, eid string) ([]archived, error) {
	data, err := s.base.Get(ctx, s.archiveKey(collection, eid))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read history archive: %w", err)
	}
	out, err := decodeArchive(data)
	if err != nil {
		return nil, fmt.Errorf("read history archive of %s/%s: %w", collection, eid, err)
	}
	return out, nil
}

// knowsWrite reports whether the store merged the write key in some block
// (shown or not).
func (s *Store) knowsWrite(ctx context.Context, key string) (bool, error) {
	return s.hasElementsUnder(ctx, key)
}
