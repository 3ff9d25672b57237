package crdt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pb "github.com/ipfs/go-ds-crdt/pb"
)

// Migration from store format 1. A data dir of the release before holds one
// go-ds-crdt element per field (legacy.go). Opening it with this release
// migrates it, in two phases, each safe to interrupt:
//
//  1. collect (go-ds-crdt closed): every op ever merged, visible or not,
//     is read with its envelope (from the value, or from its block) and
//     grouped into writes, kept outside the namespace under
//     /ferry/migrate/; then the old namespace is cleared and the format
//     key says "collected". Killed before that, the old store is intact and
//     the next start collects again.
//  2. replay (go-ds-crdt open, nothing announced): the writes are put
//     again as format-2 elements in fresh deltas, those no longer visible
//     are tombstoned, and one op per record (on KeepField, written by this
//     node) lists every superseded op no visible write lists, so that no
//     superseded value shows again whatever instance of a write a peer
//     holds. Then the old blocks are removed, the collected writes
//     deleted, and the format key says 2. Killed before that, the next
//     start clears the namespace and replays again.
//
// Migrated writes keep their op ids, writers, values, supersede lists and
// signatures (checked against what format 1 signed); ops whose signature
// fails are marked as such, so they stay ignored.

// formatKey holds the store format of the data under the namespace, next to
// the clock (local, not replicated).
var formatKey = ds.NewKey("/ferry/local/format")

// migrateRoot holds the writes collected from a format-1 store.
const migrateRoot = "/ferry/migrate"

const formatCollected = "1-collected"

// MigrationReport says what a migration did.
type MigrationReport struct {
	Writes      int // writes (format-1 ops grouped by op id) carried over
	Ops         int // format-1 ops
	Hidden      int // writes no longer visible, tombstoned again
	Carried     int // records given a supersede list of their own
	BadSigs     int // writes whose signature failed (they stay ignored)
	OldBlocks   int // format-1 blocks removed
	Unreadable  int // ops whose value could not be read (block missing)
	FromVersion int
}

// prepareFormat runs before go-ds-crdt opens: it checks the store format,
// and runs the collect phase of a migration when the store holds format 1.
// It reports whether the replay phase must run once go-ds-crdt is open.
func (s *Store) prepareFormat(ctx context.Context) (bool, error) {
	format, err := s.storeFormat(ctx)
	if err != nil {
		return false, err
	}
	switch format {
	case fmt.Sprint(Format):
		return false, nil
	case fmt.Sprint(LegacyFormat):
		s.log.Warn("this store has store format 1 (the release before): migrating it to store format 2 (one element per write); its peers must run this release too")
		s.migration = &MigrationReport{FromVersion: LegacyFormat}
		if err := s.collectLegacy(ctx, s.migration); err != nil {
			return false, fmt.Errorf("migrate from store format %d: %w", LegacyFormat, err)
		}
		if err := s.setFormat(ctx, formatCollected); err != nil {
			return false, err
		}
	case formatCollected:
		s.log.Warn("resuming a migration from store format 1 that was interrupted")
		s.migration = &MigrationReport{FromVersion: LegacyFormat}
	default:
		return false, fmt.Errorf("store format %q: this release reads store format %d; the data dir was written by a newer release", format, Format)
	}
	// The old namespace goes; the replay fills it again.
	if err := s.clearPrefix(ctx, prefix(s.opts.Namespace)); err != nil {
		return false, err
	}
	s.badSig.Clear()
	return true, nil
}

// finishMigration runs the replay phase, announcing nothing until it is
// done.
func (s *Store) finishMigration(ctx context.Context) error {
	if s.bcast != nil {
		s.bcast.quiet.Store(true)
		defer s.bcast.quiet.Store(false)
	}
	if err := s.replayMigration(ctx, s.migration); err != nil {
		return err
	}
	s.log.Warn("store migrated to store format 2", "writes", s.migration.Writes, "ops", s.migration.Ops,
		"tombstoned", s.migration.Hidden, "records_with_supersede_list", s.migration.Carried,
		"bad_signatures", s.migration.BadSigs, "old_blocks_removed", s.migration.OldBlocks, "unreadable_ops", s.migration.Unreadable)
	return nil
}

// Migration returns what opening the store migrated (nil: it had this
// release's format already).
func (s *Store) Migration() *MigrationReport { return s.migration }

// storeFormat reads the format key, or works it out from the data: an
// empty namespace is a new store of this format.
func (s *Store) storeFormat(ctx context.Context) (string, error) {
	v, err := s.base.Get(ctx, formatKey)
	switch {
	case err == nil:
		return string(v), nil
	case !errors.Is(err, ds.ErrNotFound):
		return "", fmt.Errorf("read store format: %w", err)
	}
	res, err := s.base.Query(ctx, query.Query{Prefix: prefix(s.layout().elems()), KeysOnly: true, Limit: 1})
	if err != nil {
		return "", fmt.Errorf("read store format: %w", err)
	}
	defer res.Close()
	format := fmt.Sprint(Format)
	for r := range res.Next() {
		if r.Error != nil {
			return "", fmt.Errorf("read store format: %w", r.Error)
		}
		rest := strings.TrimPrefix(r.Key, prefix(s.layout().elems()))
		if strings.Count(rest, "/") == 4 { // coll/eid/field/opid/block
			format = fmt.Sprint(LegacyFormat)
		}
	}
	if format == fmt.Sprint(Format) {
		if err := s.setFormat(ctx, format); err != nil {
			return "", err
		}
	}
	return format, nil
}

func (s *Store) setFormat(ctx context.Context, v string) error {
	if err := s.base.Put(ctx, formatKey, []byte(v)); err != nil {
		return fmt.Errorf("write store format: %w", err)
	}
	if err := s.base.Sync(ctx, formatKey); err != nil {
		return fmt.Errorf("write store format: %w", err)
	}
	return nil
}

// collectedWrite is one write of the collect phase, as kept under
// migrateRoot/w/<write key>.
type collectedWrite struct {
	Value   []byte `json:"v"` // the format-2 stored form, signature included
	Visible bool   `json:"vis,omitempty"`
	BadSig  bool   `json:"bad,omitempty"`
}

// legacyOp is one format-1 op found by the collect phase.
type legacyOp struct {
	field   string
	id      OpID
	env     legacyEnvelope
	visible bool
}

// collectLegacy is phase 1.
func (s *Store) collectLegacy(ctx context.Context, rep *MigrationReport) error {
	if err := s.clearPrefix(ctx, migrateRoot); err != nil {
		return err
	}
	l := s.layout()
	elemsRoot := prefix(l.elems())
	res, err := s.base.Query(ctx, query.Query{Prefix: elemsRoot, KeysOnly: true})
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	defer res.Close()
	out, err := s.base.Batch(ctx)
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	pending := 0
	flush := func(force bool) error {
		if pending == 0 || !force && pending < 1000 {
			return nil
		}
		pending = 0
		if err := out.Commit(ctx); err != nil {
			return fmt.Errorf("collect: %w", err)
		}
		out, err = s.base.Batch(ctx)
		return err
	}
	deltas := map[string]*pb.Delta{}
	var recKey string
	ops := map[string]*legacyOp{} // field/opid -> op
	finish := func() error {
		if len(ops) == 0 {
			return nil
		}
		coll, eid, _ := strings.Cut(recKey, "/")
		if err := s.collectRecord(ctx, out, coll, eid, ops, rep); err != nil {
			return err
		}
		pending += len(ops)
		clear(ops)
		if len(deltas) > 256 {
			clear(deltas)
		}
		return flush(false)
	}
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("collect: %w", r.Error)
		}
		parts := strings.Split(strings.TrimPrefix(r.Key, elemsRoot), "/")
		if len(parts) != 5 {
			continue
		}
		coll, eid, field, opStr, block := parts[0], parts[1], parts[2], parts[3], parts[4]
		id, err := ParseOpID(opStr)
		if err != nil {
			continue
		}
		if rk := coll + "/" + eid; rk != recKey {
			if err := finish(); err != nil {
				return err
			}
			recKey = rk
		}
		oldKey := legacyKey(coll, eid, field, id)
		tomb, err := s.base.Has(ctx, ds.NewKey(prefix(l.tombs())+strings.TrimPrefix(r.Key, elemsRoot)))
		if err != nil {
			return fmt.Errorf("collect: %w", err)
		}
		ref := field + "/" + id.String()
		if op := ops[ref]; op != nil {
			op.visible = op.visible || !tomb // the same op carried by another block
			continue
		}
		op := &legacyOp{field: field, id: id, visible: !tomb}
		var data []byte
		if !tomb {
			data, err = s.base.Get(ctx, l.values().Child(ds.RawKey(oldKey)).ChildString("v"))
			if err != nil && !errors.Is(err, ds.ErrNotFound) {
				return fmt.Errorf("collect: %w", err)
			}
		}
		if data == nil {
			if d, _, err := s.blockDelta(ctx, block, deltas); err == nil {
				for _, el := range d.GetElements() {
					if el.GetKey() == oldKey {
						data = el.GetValue()
						break
					}
				}
			}
		}
		if data == nil || json.Unmarshal(data, &op.env) != nil || op.env.Time != id.Time.String() || op.env.Writer != id.Writer {
			rep.Unreadable++
			continue
		}
		ops[ref] = op
		rep.Ops++
	}
	if err := finish(); err != nil {
		return err
	}
	// The old blocks, removed once the replay is done.
	bres, err := s.base.Query(ctx, query.Query{Prefix: prefix(l.processed()), KeysOnly: true})
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	for r := range bres.Next() {
		if r.Error != nil {
			bres.Close()
			return fmt.Errorf("collect: %w", r.Error)
		}
		if err := out.Put(ctx, ds.NewKey(migrateRoot+"/b/"+strings.TrimPrefix(r.Key, prefix(l.processed()))), nil); err != nil {
			bres.Close()
			return fmt.Errorf("collect: %w", err)
		}
		pending++
	}
	bres.Close()
	if err := flush(true); err != nil {
		return err
	}
	if err := out.Commit(ctx); err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	if err := s.base.Sync(ctx, ds.NewKey(migrateRoot)); err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	return nil
}

// collectRecord groups one record's format-1 ops into writes and keeps
// them, with the supersede list the record needs.
func (s *Store) collectRecord(ctx context.Context, b ds.Write, coll, eid string, ops map[string]*legacyOp, rep *MigrationReport) error {
	byWrite := map[OpID][]*legacyOp{}
	for _, op := range ops {
		byWrite[op.id] = append(byWrite[op.id], op)
	}
	ids := make([]OpID, 0, len(byWrite))
	for id := range byWrite {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b OpID) int { return strings.Compare(a.String(), b.String()) })
	killed := map[string]bool{}
	var dead []string
	for _, id := range ids {
		group := byWrite[id]
		sort.Slice(group, func(i, j int) bool { return group[i].field < group[j].field })
		w := &write{ID: id}
		visible := false
		for _, op := range group {
			w.Ops = append(w.Ops, Op{ID: id, Field: op.field, Value: op.env.Value, Supersedes: op.env.Supersedes, Seen: op.env.Seen})
			if op.visible {
				visible = true
			} else {
				dead = append(dead, op.field+"/"+id.String())
			}
			if w.Sig == nil && len(op.env.Sig) > 0 {
				w.Sig = op.env.Sig
			}
		}
		for _, op := range w.Ops {
			if visible {
				for _, r := range op.Supersedes {
					killed[r] = true
				}
			}
		}
		w.Legacy = w.Sig != nil
		cw := collectedWrite{Visible: visible}
		if s.opts.Trust != nil {
			kp := keyParts{Collection: coll, EscapedID: eid, Op: id}
			cw.BadSig = w.Sig == nil || !s.verifyWrite(kp, w)
			if cw.BadSig {
				rep.BadSigs++
			}
		}
		unsigned, err := encodeWrite(w)
		if err != nil {
			return fmt.Errorf("collect %s/%s: %w", coll, eid, err)
		}
		cw.Value = append(unsigned, w.Sig...)
		data, err := json.Marshal(cw)
		if err != nil {
			return err
		}
		if err := b.Put(ctx, ds.NewKey(migrateRoot+"/w"+writeKey(coll, eid, id).String()), data); err != nil {
			return fmt.Errorf("collect %s/%s: %w", coll, eid, err)
		}
		rep.Writes++
		if !visible {
			rep.Hidden++
		}
	}
	// Every op no longer visible that no visible write lists as superseded
	// is listed by the record's own supersede op.
	var carry []string
	for _, r := range dead {
		if !killed[r] {
			carry = append(carry, r)
		}
	}
	if len(carry) == 0 {
		return nil
	}
	sort.Strings(carry)
	data, err := json.Marshal(carry)
	if err != nil {
		return err
	}
	rep.Carried++
	return b.Put(ctx, ds.NewKey(migrateRoot+"/c/"+coll+"/"+eid), data)
}

// clearPrefix deletes every key under p.
func (s *Store) clearPrefix(ctx context.Context, p string) error {
	for {
		res, err := s.base.Query(ctx, query.Query{Prefix: p, KeysOnly: true, Limit: 10000})
		if err != nil {
			return fmt.Errorf("clear %s: %w", p, err)
		}
		var keys []string
		for r := range res.Next() {
			if r.Error != nil {
				res.Close()
				return fmt.Errorf("clear %s: %w", p, r.Error)
			}
			keys = append(keys, r.Key)
		}
		res.Close()
		if len(keys) == 0 {
			return nil
		}
		b, err := s.base.Batch(ctx)
		if err != nil {
			return fmt.Errorf("clear %s: %w", p, err)
		}
		for _, k := range keys {
			if err := b.Delete(ctx, ds.RawKey(k)); err != nil {
				return fmt.Errorf("clear %s: %w", p, err)
			}
		}
		if err := b.Commit(ctx); err != nil {
			return fmt.Errorf("clear %s: %w", p, err)
		}
	}
}

// replayMigration is phase 2, with go-ds-crdt open and nothing announced.
func (s *Store) replayMigration(ctx context.Context, rep *MigrationReport) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	// Puts, then tombstones, each in deltas of BatchOps writes.
	var hidden []ds.Key
	err := s.forEachCollected(ctx, "/w", func(k string, v []byte, b *pendingDelta) error {
		var cw collectedWrite
		if err := json.Unmarshal(v, &cw); err != nil {
			return fmt.Errorf("collected write %s: %w", k, err)
		}
		key := ds.RawKey(k)
		if cw.BadSig {
			mark := ds.RawKey(s.badSigRoot() + k)
			if err := s.base.Put(ctx, mark, nil); err != nil {
				return err
			}
			s.badSig.Store(k, true)
		}
		if !cw.Visible {
			hidden = append(hidden, key)
		}
		return b.Put(ctx, key, cw.Value)
	})
	if err != nil {
		return err
	}
	for len(hidden) > 0 {
		n := min(len(hidden), s.opts.BatchOps)
		b, err := s.openBatch(ctx)
		if err != nil {
			return err
		}
		for _, k := range hidden[:n] {
			if err := b.Delete(ctx, k); err != nil {
				b.end(ctx)
				return err
			}
		}
		if err := s.commit(ctx, b); err != nil {
			b.end(ctx)
			return err
		}
		b.end(ctx)
		hidden = hidden[n:]
	}
	err = s.forEachCollected(ctx, "/c", func(k string, v []byte, b *pendingDelta) error {
		var carry []string
		if err := json.Unmarshal(v, &carry); err != nil {
			return fmt.Errorf("collected supersedes %s: %w", k, err)
		}
		coll, eid, ok := strings.Cut(strings.TrimPrefix(k, "/"), "/")
		if !ok {
			return fmt.Errorf("collected supersedes: bad key %s", k)
		}
		id := OpID{Time: s.clock.Now(), Writer: s.opts.Writer}
		w := &write{ID: id, Ops: []Op{{ID: id, Field: KeepField, Value: true, Supersedes: carry}}}
		unsigned, err := encodeWrite(w)
		if err != nil {
			return err
		}
		key := writeKey(coll, eid, id)
		values, err := s.signWrite([]ds.Key{key}, [][]byte{unsigned})
		if err != nil {
			return err
		}
		return b.Put(ctx, key, values[0])
	})
	if err != nil {
		return err
	}
	// The old blocks.
	res, err := s.base.Query(ctx, query.Query{Prefix: migrateRoot + "/b/", KeysOnly: true})
	if err != nil {
		return fmt.Errorf("remove old blocks: %w", err)
	}
	var old []string
	for r := range res.Next() {
		if r.Error == nil {
			old = append(old, strings.TrimPrefix(r.Key, migrateRoot+"/b/"))
		}
	}
	res.Close()
	for _, k := range old {
		c, err := blockCid(k)
		if err != nil {
			continue
		}
		if err := s.dag.Remove(ctx, c); err == nil {
			rep.OldBlocks++
		}
	}
	if err := s.clearPrefix(ctx, migrateRoot); err != nil {
		return err
	}
	return s.setFormat(ctx, fmt.Sprint(Format))
}

// forEachCollected calls fn for each collected entry under migrateRoot+sub,
// in order, inside deltas of up to BatchOps entries, each committed
// durably.
func (s *Store) forEachCollected(ctx context.Context, sub string, fn func(key string, value []byte, b *pendingDelta) error) error {
	root := migrateRoot + sub
	res, err := s.base.Query(ctx, query.Query{Prefix: root + "/"})
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer res.Close()
	var b *pendingDelta
	n := 0
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("replay: %w", r.Error)
		}
		if b == nil {
			if b, err = s.openBatch(ctx); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
		}
		if err := fn(strings.TrimPrefix(r.Key, root), r.Value, b); err != nil {
			b.end(ctx)
			return fmt.Errorf("replay: %w", err)
		}
		if n++; n == s.opts.BatchOps {
			err := s.commit(ctx, b)
			b.end(ctx)
			b, n = nil, 0
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
		}
	}
	if b != nil {
		err := s.commit(ctx, b)
		b.end(ctx)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
	}
	return nil
}
