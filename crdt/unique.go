package crdt

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/ferry-crm/ferry/schema"
)

// The unique index says, per collection and unique field, which records
// visibly hold which value (the value fold shows, conflicts included), so
// that a write checks its unique values without scanning the collection.
//
// It lives in memory and is built lazily: the first write that gives a
// unique field a value scans the collection once. From then on every merged
// operation, local or remote, marks its record (keyChanged, like the
// digest), and the next check re-reads only the marked records. What decides
// visible values besides the records themselves (the unique fields, their
// policies, the collection's writers, the nodes' roles and membership)
// makes the index be built again when it changes.
//
// The index is read and refreshed only by writers, under Store.writeMu.

// uniqueState is the store's unique index and the marks of records changed
// since it was last refreshed.
type uniqueState struct {
	colls map[string]*collUnique // guarded by Store.writeMu
	// builds counts the scans that built an index (for tests).
	builds int

	// dirtyMu guards what keyChanged writes, from inside go-ds-crdt's
	// merge: it must not block long.
	dirtyMu sync.Mutex
	// dirty holds, per indexed collection, the records changed since its
	// last refresh. Only collections with an index are tracked.
	dirty map[string]*dirtySet
	// epoch counts changes of _nodes and _members: roles and membership
	// decide visible values (policies office/laptop, trust), so an index
	// built under another epoch is rebuilt.
	epoch uint64
}

// dirtySet is the escaped ids of the records of one collection changed
// since its index was refreshed. Past maxDirty records it stops counting
// (overflow): reading so many records one by one costs more than a scan.
type dirtySet struct {
	ids      map[string]struct{}
	overflow bool
}

const maxDirty = 4096

// collUnique is the unique index of one collection.
type collUnique struct {
	// key is what the values were folded under (see uniqueKey).
	key    string
	epoch  uint64
	fields map[string]*fieldIndex
}

// fieldIndex is the index of one unique field.
type fieldIndex struct {
	// owners lists, sorted, the records holding each value: more than one
	// only when writes made concurrently on different nodes collided.
	owners map[any][]string
	// values is the value each record holds (records without one are
	// absent).
	values map[string]any
}

// markDirty notes that a record may have changed. It is called from
// keyChanged, inside go-ds-crdt's merge.
func (u *uniqueState) markDirty(collection, escapedID string) {
	u.dirtyMu.Lock()
	defer u.dirtyMu.Unlock()
	if collection == NodesCollection || collection == MembersCollection {
		u.epoch++
	}
	d := u.dirty[collection]
	if d == nil || d.overflow {
		return
	}
	if len(d.ids) >= maxDirty {
		d.ids, d.overflow = nil, true
		return
	}
	d.ids[escapedID] = struct{}{}
}

// take returns the marks of a collection and the current epoch, and starts
// collecting marks afresh: a record changed from now on is marked again.
func (u *uniqueState) take(collection string) (*dirtySet, uint64) {
	u.dirtyMu.Lock()
	defer u.dirtyMu.Unlock()
	if u.dirty == nil {
		u.dirty = map[string]*dirtySet{}
	}
	d := u.dirty[collection]
	u.dirty[collection] = &dirtySet{ids: map[string]struct{}{}}
	return d, u.epoch
}

// putBack returns marks that could not be processed, for the next refresh.
func (u *uniqueState) putBack(collection string, d *dirtySet) {
	u.dirtyMu.Lock()
	defer u.dirtyMu.Unlock()
	cur := u.dirty[collection]
	if cur == nil || cur.overflow {
		return
	}
	if d.overflow || len(cur.ids)+len(d.ids) > maxDirty {
		cur.ids, cur.overflow = nil, true
		return
	}
	for id := range d.ids {
		cur.ids[id] = struct{}{}
	}
}

// state returns the current epoch and whether a rescan would be cheaper
// than re-reading the marked records one by one.
func (u *uniqueState) state(collection string, indexed int) (epoch uint64, rescan bool) {
	u.dirtyMu.Lock()
	defer u.dirtyMu.Unlock()
	d := u.dirty[collection]
	if d == nil {
		return u.epoch, true // not tracked: the index is missing
	}
	n := len(d.ids)
	return u.epoch, d.overflow || (n > 256 && n > indexed/4)
}

// invalidate makes every index be rebuilt at its next use (the store moved
// to another epoch).
func (u *uniqueState) invalidate() {
	u.dirtyMu.Lock()
	defer u.dirtyMu.Unlock()
	u.epoch++
	u.dirty = map[string]*dirtySet{}
}

// forget drops the index of a collection and stops tracking it.
func (u *uniqueState) forget(collection string) {
	delete(u.colls, collection)
	u.dirtyMu.Lock()
	delete(u.dirty, collection)
	u.dirtyMu.Unlock()
}

func uniqueFields(c *schema.Collection) []string {
	var out []string
	for _, name := range c.FieldNames() {
		if f := c.Fields[name]; f != nil && f.Unique {
			out = append(out, name)
		}
	}
	return out
}

// uniqueKey renders what the index of c depends on in the schema: which
// fields are unique, the policies that fold them (a field's own, the
// collection's for the field and for record conflicts) and the writers
// whose operations count.
func uniqueKey(c *schema.Collection, fields []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy=%q writers=%q", c.Policy, c.Writers)
	for _, f := range fields {
		fmt.Fprintf(&b, " %s:%q", f, c.Fields[f].Policy)
	}
	return b.String()
}

// uniqueIndex returns the up-to-date unique index of collection c, or nil
// when c has no unique field. The caller holds writeMu.
func (s *Store) uniqueIndex(ctx context.Context, c *schema.Collection) (*collUnique, error) {
	u := &s.unique
	fields := uniqueFields(c)
	if len(fields) == 0 {
		u.forget(c.Name)
		return nil, nil
	}
	key := uniqueKey(c, fields)
	ci := u.colls[c.Name]
	indexed := 0
	if ci != nil {
		for _, fi := range ci.fields {
			indexed = max(indexed, len(fi.values))
		}
	}
	epoch, rescan := u.state(c.Name, indexed)
	if ci == nil || ci.key != key || ci.epoch != epoch || rescan {
		return s.buildUnique(ctx, c, fields, key)
	}
	if err := s.refreshUnique(ctx, c, ci); err != nil {
		return nil, err
	}
	return ci, nil
}

// buildUnique scans collection c once and indexes its unique fields.
func (s *Store) buildUnique(ctx context.Context, c *schema.Collection, fields []string, key string) (*collUnique, error) {
	u := &s.unique
	delete(u.colls, c.Name)
	// Marks are taken before the scan, which reads every record: a record
	// merged during the scan is marked again and re-read at the next check.
	_, epoch := u.take(c.Name)
	ci := &collUnique{key: key, epoch: epoch, fields: make(map[string]*fieldIndex, len(fields))}
	for _, f := range fields {
		ci.fields[f] = &fieldIndex{owners: map[any][]string{}, values: map[string]any{}}
	}
	ru, err := s.rulesFor(ctx, c.Name)
	if err != nil {
		return nil, fmt.Errorf("index unique values of %s: %w", c.Name, err)
	}
	err = s.scanRecords(ctx, c.Name, func(ops *recordOps) error {
		ci.update(c.Name, ops, ru)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index unique values of %s: %w", c.Name, err)
	}
	if u.colls == nil {
		u.colls = map[string]*collUnique{}
	}
	u.colls[c.Name] = ci
	u.builds++
	return ci, nil
}

// refreshUnique re-reads the records of c marked since the last refresh.
func (s *Store) refreshUnique(ctx context.Context, c *schema.Collection, ci *collUnique) error {
	d, _ := s.unique.take(c.Name)
	if d == nil || len(d.ids) == 0 {
		return nil
	}
	ru, err := s.rulesFor(ctx, c.Name)
	if err != nil {
		s.unique.putBack(c.Name, d)
		return fmt.Errorf("index unique values of %s: %w", c.Name, err)
	}
	for eid := range d.ids {
		ops, err := s.readRecord(ctx, c.Name, eid)
		if err != nil {
			// Re-reading a record twice is harmless: put back every mark.
			s.unique.putBack(c.Name, d)
			return fmt.Errorf("index unique values of %s: %w", c.Name, err)
		}
		ci.update(c.Name, ops, ru)
	}
	return nil
}

// update indexes the visible values of one record (none if it does not
// exist).
func (ci *collUnique) update(collection string, ops *recordOps, ru rules) {
	id, err := UnescapeID(ops.escapedID)
	if err != nil {
		return // not a record id a write could name
	}
	rec, exists := ops.fold(collection, id, ru)
	for name, fi := range ci.fields {
		var v any
		if exists {
			v = rec.Fields[name].Value
		}
		fi.set(id, v)
	}
}

// set records that record id holds v (nil: nothing).
func (fi *fieldIndex) set(id string, v any) {
	if old, ok := fi.values[id]; ok {
		if old == v {
			return
		}
		owners := fi.owners[old]
		if i, found := slices.BinarySearch(owners, id); found {
			owners = slices.Delete(owners, i, i+1)
		}
		if len(owners) == 0 {
			delete(fi.owners, old)
		} else {
			fi.owners[old] = owners
		}
		delete(fi.values, id)
	}
	if v == nil {
		return
	}
	fi.values[id] = v
	owners := fi.owners[v]
	if i, found := slices.BinarySearch(owners, id); !found {
		fi.owners[v] = slices.Insert(owners, i, id)
	}
}

// holder returns a record other than id that holds v, ignoring the records
// in moved (their value is being changed), or "" when none does. A record
// keeps its own value: when id holds v, nobody else counts (a duplicate made
// by concurrent writes on different nodes must not stop either record from
// being saved).
func (fi *fieldIndex) holder(v any, id string, moved map[string]any) string {
	if fi == nil {
		return ""
	}
	owners := fi.owners[v]
	if _, found := slices.BinarySearch(owners, id); found {
		return ""
	}
	for _, o := range owners {
		if _, m := moved[o]; !m {
			return o
		}
	}
	return ""
}

// uniqueClaims checks the unique values of one write, or of the records of
// an import one after another, against the index and against the values
// claimed before in the same batch. It never changes the index: the index
// learns of records once they are written (keyChanged), so a refused write
// or import leaves it as it was.
type uniqueClaims struct {
	s      *Store
	c      *schema.Collection
	ix     *collUnique // loaded at the first value claimed
	loaded bool
	fields map[string]*fieldClaims
}

// fieldClaims is what a batch claimed for one field.
type fieldClaims struct {
	byValue map[any]string // value -> the record of the batch holding it
	byOwner map[string]any // record -> its value in the batch (nil: cleared)
}

func (s *Store) newClaims(c *schema.Collection) *uniqueClaims {
	return &uniqueClaims{s: s, c: c, fields: map[string]*fieldClaims{}}
}

// claim gives value v of a unique field to record id, releasing the value
// the record had; it fails with a *schema.FieldError when another record
// holds v. nil claims nothing. The caller holds writeMu.
func (uc *uniqueClaims) claim(ctx context.Context, field, id string, v any) error {
	fc := uc.fields[field]
	if fc == nil {
		fc = &fieldClaims{byValue: map[any]string{}, byOwner: map[string]any{}}
		uc.fields[field] = fc
	}
	if v != nil {
		owner, taken := fc.byValue[v]
		if !taken {
			if !uc.loaded {
				ix, err := uc.s.uniqueIndex(ctx, uc.c)
				if err != nil {
					return err
				}
				uc.ix, uc.loaded = ix, true
			}
			if uc.ix != nil {
				owner = uc.ix.fields[field].holder(v, id, fc.byOwner)
				taken = owner != ""
			}
		}
		if taken && owner != id {
			return &schema.FieldError{Collection: uc.c.Name, ID: id, Field: field, Value: v,
				Reason: fmt.Sprintf("value %v is already used by record %q (the field is unique)", v, owner)}
		}
	}
	if old, ok := fc.byOwner[id]; ok && old != nil && fc.byValue[old] == id {
		delete(fc.byValue, old)
	}
	fc.byOwner[id] = v
	if v != nil {
		fc.byValue[v] = id
	}
	return nil
}

// checkUnique refuses a write that gives a unique field a value another
// record visibly holds on this node. Writes made concurrently on other nodes
// can still collide: uniqueness is checked where a write is made, not
// enforced by the merge (docs/merge-rules.md). The caller holds writeMu.
func (s *Store) checkUnique(ctx context.Context, c *schema.Collection, id string, fields map[string]any) error {
	uc := s.newClaims(c)
	for _, f := range uniqueFields(c) {
		if v := fields[f]; v != nil {
			if err := uc.claim(ctx, f, id, v); err != nil {
				return err
			}
		}
	}
	return nil
}
