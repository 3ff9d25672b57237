package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/ferry-crm/ferry/schema"
)

// Duplicate detection after merge (docs/duplicates.md). `unique` is checked
// only where a record is written, so two nodes offline can each create the
// same customer; the schema's duplicate rules (schema.DuplicateRule, and
// each unique field compared as text) find such records once they meet,
// on every node alike: the index below is a function of the visible
// records, which every node converges on.
//
// The index lives in memory, built at its first use by one scan of a
// collection and then kept current like the unique index: every merged
// operation marks its record (keyChanged), and the next use re-reads the
// marked records only.

// dupState is the store's duplicate index.
type dupState struct {
	mu    sync.Mutex // guards colls; held while an index is refreshed
	colls map[string]*collDups

	dirtyMu sync.Mutex
	dirty   map[string]*dirtySet
	epoch   uint64
}

// collDups indexes one collection by each of its duplicate rules.
type collDups struct {
	key   string
	epoch uint64
	rules []schema.DuplicateRule
	// byKey[i] maps a key of rule i to the records sharing it (sorted).
	byKey []map[string][]string
	// keyOf[i] maps a record to its key under rule i.
	keyOf []map[string]string
	// vals holds, per record, the values of every field some rule reads,
	// and at the newest op time among them per rule.
	vals map[string]map[string]any
	at   []map[string]Timestamp
}

func (d *dupState) markDirty(collection, escapedID string) {
	d.dirtyMu.Lock()
	defer d.dirtyMu.Unlock()
	if collection == NodesCollection || collection == MembersCollection || collection == SchemaCollection {
		d.epoch++
	}
	ds := d.dirty[collection]
	if ds == nil || ds.overflow {
		return
	}
	if len(ds.ids) >= maxDirty {
		ds.ids, ds.overflow = nil, true
		return
	}
	ds.ids[escapedID] = struct{}{}
}

// take returns the marks of a collection and starts collecting afresh.
func (d *dupState) take(collection string) (*dirtySet, uint64) {
	d.dirtyMu.Lock()
	defer d.dirtyMu.Unlock()
	if d.dirty == nil {
		d.dirty = map[string]*dirtySet{}
	}
	ds := d.dirty[collection]
	d.dirty[collection] = &dirtySet{ids: map[string]struct{}{}}
	return ds, d.epoch
}

func (d *dupState) invalidate() {
	d.dirtyMu.Lock()
	defer d.dirtyMu.Unlock()
	d.epoch++
	d.dirty = map[string]*dirtySet{}
}

func dupKey(c *schema.Collection, rules []schema.DuplicateRule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy=%q writers=%q", c.Policy, c.Writers)
	for _, r := range rules {
		fmt.Fprintf(&b, " %s/%s", r.Name(), r.Normalize)
		for _, f := range r.Fields {
			if fd := c.Fields[f]; fd != nil {
				fmt.Fprintf(&b, ":%q", fd.Policy)
			}
		}
	}
	return b.String()
}

// dupIndex returns the current duplicate index of c (nil: no rule). The
// caller holds dups.mu.
func (s *Store) dupIndex(ctx context.Context, c *schema.Collection) (*collDups, error) {
	d := &s.dups
	rules := c.DuplicateRules()
	if len(rules) == 0 {
		delete(d.colls, c.Name)
		return nil, nil
	}
	key := dupKey(c, rules)
	ci := d.colls[c.Name]
	marks, epoch := d.take(c.Name)
	ru, err := s.rulesFor(ctx, c.Name)
	if err != nil {
		return nil, fmt.Errorf("index duplicates of %s: %w", c.Name, err)
	}
	if ci == nil || ci.key != key || ci.epoch != epoch || marks == nil || marks.overflow {
		ci = &collDups{key: key, epoch: epoch, rules: rules, vals: map[string]map[string]any{}}
		for range rules {
			ci.byKey = append(ci.byKey, map[string][]string{})
			ci.keyOf = append(ci.keyOf, map[string]string{})
			ci.at = append(ci.at, map[string]Timestamp{})
		}
		err := s.scanRecords(ctx, c.Name, func(ops *recordOps) error {
			ci.update(c.Name, ops, ru)
			return nil
		})
		if err != nil {
			delete(d.colls, c.Name)
			return nil, fmt.Errorf("index duplicates of %s: %w", c.Name, err)
		}
		if d.colls == nil {
			d.colls = map[string]*collDups{}
		}
		d.colls[c.Name] = ci
		return ci, nil
	}
	for eid := range marks.ids {
		ops, err := s.readRecord(ctx, c.Name, eid)
		if err != nil {
			delete(d.colls, c.Name) // rebuilt at the next use
			return nil, fmt.Errorf("index duplicates of %s: %w", c.Name, err)
		}
		ci.update(c.Name, ops, ru)
	}
	return ci, nil
}

// update re-indexes one record.
func (ci *collDups) update(collection string, ops *recordOps, ru rules) {
	id, err := UnescapeID(ops.escapedID)
	if err != nil {
		return
	}
	rec, exists := ops.fold(collection, id, ru)
	delete(ci.vals, id)
	var vals map[string]any
	if exists {
		vals = map[string]any{}
		for _, r := range ci.rules {
			for _, f := range r.Fields {
				if v := rec.Fields[f].Value; v != nil {
					vals[f] = v
				}
			}
		}
		ci.vals[id] = vals
	}
	for i, r := range ci.rules {
		if old, ok := ci.keyOf[i][id]; ok {
			ids := ci.byKey[i][old]
			if j, found := slices.BinarySearch(ids, id); found {
				ids = slices.Delete(ids, j, j+1)
			}
			if len(ids) == 0 {
				delete(ci.byKey[i], old)
			} else {
				ci.byKey[i][old] = ids
			}
			delete(ci.keyOf[i], id)
			delete(ci.at[i], id)
		}
		k, ok := r.DuplicateKey(vals)
		if !ok {
			continue
		}
		ci.keyOf[i][id] = k
		ids := ci.byKey[i][k]
		if j, found := slices.BinarySearch(ids, id); !found {
			ci.byKey[i][k] = slices.Insert(ids, j, id)
		}
		var at Timestamp
		for _, f := range r.Fields {
			if t := rec.Fields[f].Op.Time; t > at {
				at = t
			}
		}
		ci.at[i][id] = at
	}
}

// DuplicateGroup is a set of records one duplicate rule finds the same.
type DuplicateGroup struct {
	Collection string
	Rule       schema.DuplicateRule
	// IDs are the records, sorted.
	IDs []string
	// Since is when the second of them came to match (the second oldest
	// of the times their matching values were written).
	Since Timestamp
}

// Duplicates calls fn with every group of likely duplicates of the given
// collections (all user collections when empty), by collection, rule and
// first record.
func (s *Store) Duplicates(ctx context.Context, collections []string, fn func(DuplicateGroup) error) error {
	sc, err := s.Schema(ctx)
	if err != nil {
		return err
	}
	if len(collections) == 0 {
		collections = sc.Names()
	}
	var groups []DuplicateGroup
	s.dups.mu.Lock()
	for _, name := range collections {
		c, err := collectionOf(sc, name)
		if err != nil {
			s.dups.mu.Unlock()
			return err
		}
		ci, err := s.dupIndex(ctx, c)
		if err != nil {
			s.dups.mu.Unlock()
			return err
		}
		if ci == nil {
			continue
		}
		for i, r := range ci.rules {
			var list []DuplicateGroup
			for _, ids := range ci.byKey[i] {
				if len(ids) < 2 {
					continue
				}
				times := make([]Timestamp, len(ids))
				for j, id := range ids {
					times[j] = ci.at[i][id]
				}
				slices.Sort(times)
				list = append(list, DuplicateGroup{Collection: name, Rule: r, IDs: slices.Clone(ids), Since: times[1]})
			}
			sort.Slice(list, func(a, b int) bool { return list[a].IDs[0] < list[b].IDs[0] })
			groups = append(groups, list...)
		}
	}
	s.dups.mu.Unlock()
	for _, g := range groups {
		if err := fn(g); err != nil {
			return err
		}
	}
	return nil
}

// DuplicateMatch is a record a write would duplicate, and by which rule.
type DuplicateMatch struct {
	ID   string
	Rule schema.DuplicateRule
}

// ErrLikelyDuplicate: a write was refused as a likely duplicate (see
// DuplicateError).
var ErrLikelyDuplicate = errors.New("likely duplicate")

// DuplicateError refuses a write that would likely duplicate a record.
type DuplicateError struct {
	Collection string
	ID         string
	Matches    []DuplicateMatch
}

func (e *DuplicateError) Unwrap() error { return ErrLikelyDuplicate }

func (e *DuplicateError) Error() string {
	var parts []string
	for _, m := range e.Matches {
		parts = append(parts, fmt.Sprintf("%s/%s (same %s)", e.Collection, m.ID, strings.ReplaceAll(m.Rule.Name(), "+", ", ")))
	}
	return fmt.Sprintf("%s/%s is likely a duplicate of %s: not written (give --allow-duplicate to write it anyway, or set allow_duplicates: true in config.yaml)",
		e.Collection, e.ID, strings.Join(parts, ", "))
}

// CheckDuplicate refuses, with a *DuplicateError, a put of fields (typed)
// and text (parsed by the field's type) to record id that would make it a
// likely duplicate of another record. Bad values are left for the put to
// report.
func (s *Store) CheckDuplicate(ctx context.Context, collection, id string, fields map[string]any, text map[string]string) error {
	c, err := s.Collection(ctx, collection)
	if err != nil {
		return err
	}
	norm, err := c.ValidateWriteText(id, fields, text, false)
	if err != nil {
		return nil // the put reports it
	}
	// An exact repeat of a unique value is the put's to report.
	s.writeMu.Lock()
	err = s.checkUnique(ctx, c, id, norm)
	s.writeMu.Unlock()
	if err != nil {
		return nil
	}
	dc := s.newDupClaims(c)
	return dc.claim(ctx, id, norm)
}

// dupClaims checks records of one write or import against the index and
// against each other.
type dupClaims struct {
	s      *Store
	c      *schema.Collection
	claims []map[string]string // per rule: key -> record of the batch
	// ci is the index as refreshed at the first claim: an import's own
	// records are in claims, so the index is not refreshed again for each
	// of them (that read every record the import had written so far).
	ci      *collDups
	indexed bool
}

func (s *Store) newDupClaims(c *schema.Collection) *dupClaims {
	return &dupClaims{s: s, c: c}
}

// claim checks record id with the values norm written over its current
// ones, then claims its keys for the rest of the batch.
func (dc *dupClaims) claim(ctx context.Context, id string, norm map[string]any) error {
	s := dc.s
	s.dups.mu.Lock()
	if !dc.indexed {
		ci, err := s.dupIndex(ctx, dc.c)
		if err != nil {
			s.dups.mu.Unlock()
			return err
		}
		dc.ci, dc.indexed = ci, true
	}
	ci := dc.ci
	if ci == nil {
		s.dups.mu.Unlock()
		return nil
	}
	vals := map[string]any{}
	for k, v := range ci.vals[id] {
		vals[k] = v
	}
	for k, v := range norm {
		if v == nil {
			delete(vals, k)
		} else {
			vals[k] = v
		}
	}
	if dc.claims == nil {
		dc.claims = make([]map[string]string, len(ci.rules))
		for i := range dc.claims {
			dc.claims[i] = map[string]string{}
		}
	}
	var matches []DuplicateMatch
	keys := make([]string, len(ci.rules))
	for i, r := range ci.rules {
		k, ok := r.DuplicateKey(vals)
		if !ok {
			continue
		}
		keys[i] = k
		for _, other := range ci.byKey[i][k] {
			if other != id {
				matches = append(matches, DuplicateMatch{ID: other, Rule: r})
				break
			}
		}
		if other, ok := dc.claims[i][k]; ok && other != id {
			matches = append(matches, DuplicateMatch{ID: other, Rule: r})
		}
	}
	s.dups.mu.Unlock()
	if len(matches) > 0 {
		return &DuplicateError{Collection: dc.c.Name, ID: id, Matches: matches}
	}
	for i, k := range keys {
		if k != "" {
			dc.claims[i][k] = id
		}
	}
	return nil
}
