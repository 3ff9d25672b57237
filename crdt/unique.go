package crdt

import (
	"context"
	"fmt"

	"github.com/ferry-crm/ferry/schema"
)

// uniqueIndex holds, per unique field, which record holds which value.
type uniqueIndex map[string]*valueOwners

type valueOwners struct {
	byValue map[any]string
	byOwner map[string]any
}

func (ix uniqueIndex) field(name string) *valueOwners {
	vo := ix[name]
	if vo == nil {
		vo = &valueOwners{byValue: map[any]string{}, byOwner: map[string]any{}}
		ix[name] = vo
	}
	return vo
}

func uniqueFields(c *schema.Collection) []string {
	var out []string
	for _, name := range c.FieldNames() {
		if c.Fields[name].Unique {
			out = append(out, name)
		}
	}
	return out
}

// index records an existing value. Replicas may already hold duplicates
// written concurrently on different nodes; the first one seen keeps the claim.
func (ix uniqueIndex) index(field string, v any, id string) {
	vo := ix.field(field)
	if _, taken := vo.byValue[v]; !taken {
		vo.byValue[v] = id
	}
	vo.byOwner[id] = v
}

// claim gives value v of field to record id, releasing the record's previous
// value; it fails when another record holds v. nil claims nothing.
func (ix uniqueIndex) claim(c *schema.Collection, field, id string, v any) error {
	vo := ix.field(field)
	if owner, taken := vo.byValue[v]; v != nil && taken && owner != id {
		return &schema.FieldError{Collection: c.Name, ID: id, Field: field, Value: v,
			Reason: fmt.Sprintf("value %v is already used by record %q (the field is unique)", v, owner)}
	}
	if old, ok := vo.byOwner[id]; ok && old != v && vo.byValue[old] == id {
		delete(vo.byValue, old)
	}
	if v == nil {
		delete(vo.byOwner, id)
		return nil
	}
	vo.byValue[v] = id
	vo.byOwner[id] = v
	return nil
}

// collectionIndex is what one scan of a collection tells.
type collectionIndex struct {
	exists map[string]bool // records that exist
	known  map[string]bool // records with any visible operation (deleted ones too)
	unique uniqueIndex
}

// indexCollection scans a collection once: which records exist or have
// operations, and the visible values of the given unique fields.
func (s *Store) indexCollection(ctx context.Context, collection string, fields []string) (*collectionIndex, error) {
	ix := &collectionIndex{exists: map[string]bool{}, known: map[string]bool{}, unique: uniqueIndex{}}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return nil, err
	}
	err = s.scanRecords(ctx, collection, func(ops *recordOps) error {
		id, err := UnescapeID(ops.escapedID)
		if err != nil {
			return nil
		}
		ix.known[id] = true
		rec, ok := ops.fold(collection, id, ru)
		if !ok {
			return nil
		}
		ix.exists[id] = true
		for _, f := range fields {
			if v := rec.Fields[f].Value; v != nil {
				ix.unique.index(f, v, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", collection, err)
	}
	return ix, nil
}

// checkUnique refuses a write that gives a unique field a value another
// record visibly holds on this node. Writes made concurrently on other nodes
// can still collide: uniqueness is checked where a write is made, not
// enforced by the merge (docs/merge-rules.md).
func (s *Store) checkUnique(ctx context.Context, c *schema.Collection, id string, fields map[string]any) error {
	var check []string
	for _, f := range uniqueFields(c) {
		if fields[f] != nil {
			check = append(check, f)
		}
	}
	if len(check) == 0 {
		return nil
	}
	ix, err := s.indexCollection(ctx, c.Name, check)
	if err != nil {
		return err
	}
	for _, f := range check {
		if err := ix.unique.claim(c, f, id, fields[f]); err != nil {
			return err
		}
	}
	return nil
}
