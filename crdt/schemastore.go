package crdt

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/ferry-crm/ferry/schema"
)

// The schema is replicated like records: collection _schema holds one record
// per collection; each field's definition is a field op (its JSON), and the
// collection's own settings sit in field _collection. Changes are additive,
// so concurrent schema applies on different nodes merge field by field.

type collectionSettings struct {
	Policy  string   `json:"policy,omitempty"`
	Writers []string `json:"writers,omitempty"`
	// Duplicates: the collection's duplicate rules (docs/duplicates.md).
	Duplicates []schema.DuplicateRule `json:"duplicates,omitempty"`
	// Channel: the collection's routing to channels
	// (docs/design/channels.md).
	Channel *schema.Routing `json:"channel,omitempty"`
}

// sameRouting compares two collections' routing.
func sameRouting(a, b *schema.Routing) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// sameDuplicates compares two collections' duplicate rules.
func sameDuplicates(a, b []schema.DuplicateRule) bool {
	return slices.EqualFunc(a, b, func(x, y schema.DuplicateRule) bool {
		return x.Normalize == y.Normalize && slices.Equal(x.Fields, y.Fields)
	})
}

// Schema returns the replicated schema as this node sees it now (empty when
// none was applied). A channel store's is its authority's. The result is
// shared: do not modify it.
func (s *Store) Schema(ctx context.Context) (*schema.Schema, error) {
	if a := s.auth(); a != s {
		return a.Schema(ctx)
	}
	s.schemaMu.Lock()
	defer s.schemaMu.Unlock()
	if s.schemaCache != nil && !s.schemaStale.Load() {
		return s.schemaCache, nil
	}
	// Cleared before reading: a change merged during the read marks the
	// cache stale again.
	s.schemaStale.Store(false)
	sc, err := s.loadSchema(ctx)
	if err != nil {
		s.schemaStale.Store(true)
		return nil, err
	}
	s.schemaCache = sc
	return sc, nil
}

// Collection returns a collection of the replicated schema.
func (s *Store) Collection(ctx context.Context, name string) (*schema.Collection, error) {
	sc, err := s.Schema(ctx)
	if err != nil {
		return nil, err
	}
	return collectionOf(sc, name)
}

func (s *Store) loadSchema(ctx context.Context) (*schema.Schema, error) {
	sc := &schema.Schema{Collections: map[string]*schema.Collection{}}
	err := s.List(ctx, SchemaCollection, func(r *Record) error {
		c := &schema.Collection{Name: r.ID, Fields: map[string]*schema.Field{}}
		for name, fv := range r.Fields {
			text, ok := fv.Value.(string)
			if !ok {
				continue
			}
			if name == CollectionSettingsField {
				var set collectionSettings
				if err := json.Unmarshal([]byte(text), &set); err != nil {
					s.log.Warn("ignoring bad collection settings", "collection", r.ID, "err", err)
					continue
				}
				c.Policy, c.Writers, c.Duplicates, c.Channel = set.Policy, set.Writers, set.Duplicates, set.Channel
				continue
			}
			var f schema.Field
			if err := json.Unmarshal([]byte(text), &f); err != nil {
				s.log.Warn("ignoring bad field definition", "collection", r.ID, "field", name, "err", err)
				continue
			}
			c.Fields[name] = &f
		}
		if len(c.Fields) > 0 {
			sc.Collections[r.ID] = c
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load schema: %w", err)
	}
	return sc, nil
}

// ApplySchema merges a schema into the replicated one. Only additive changes
// are accepted (schema.CheckAdditive); everything new is written in one
// delta. It returns the "collection.field" names written (sorted by
// collection, then field; "collection" alone for its settings).
func (s *Store) ApplySchema(ctx context.Context, next *schema.Schema) ([]string, error) {
	if err := next.Validate(); err != nil {
		return nil, err
	}
	if err := s.checkWritable(ctx, SchemaCollection, ""); err != nil {
		return nil, fmt.Errorf("apply schema: %w", err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, err := s.loadSchema(ctx)
	if err != nil {
		return nil, err
	}
	if err := schema.CheckAdditive(cur, next); err != nil {
		return nil, err
	}
	b, err := s.openBatch(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply schema: %w", err)
	}
	defer b.end(ctx)
	var changed []string
	for _, name := range next.Names() {
		nc := next.Collections[name]
		oc := cur.Collections[name]
		fields := map[string]any{}
		if oc == nil || oc.Policy != nc.Policy || !slices.Equal(oc.Writers, nc.Writers) || !sameDuplicates(oc.Duplicates, nc.Duplicates) || !sameRouting(oc.Channel, nc.Channel) {
			data, err := json.Marshal(collectionSettings{Policy: nc.Policy, Writers: nc.Writers, Duplicates: nc.Duplicates, Channel: nc.Channel})
			if err != nil {
				return nil, fmt.Errorf("apply schema: %w", err)
			}
			fields[CollectionSettingsField] = string(data)
			changed = append(changed, name)
		}
		for _, fname := range nc.FieldNames() {
			def, err := json.Marshal(nc.Fields[fname])
			if err != nil {
				return nil, fmt.Errorf("apply schema: %w", err)
			}
			if oc != nil && oc.Fields[fname] != nil {
				old, err := json.Marshal(oc.Fields[fname])
				if err != nil {
					return nil, fmt.Errorf("apply schema: %w", err)
				}
				if string(old) == string(def) {
					continue
				}
			}
			fields[fname] = string(def)
			changed = append(changed, name+"."+fname)
		}
		if len(fields) == 0 {
			continue
		}
		eid, err := EscapeID(name)
		if err != nil {
			return nil, err
		}
		ops, err := s.readRecord(ctx, SchemaCollection, eid)
		if err != nil {
			return nil, fmt.Errorf("apply schema: %w", err)
		}
		p, err := s.planWrite(ctx, SchemaCollection, eid, ops, fields, newestRules)
		if err != nil {
			return nil, err
		}
		if err := s.sign(p); err != nil {
			return nil, err
		}
		if err := p.stage(ctx, b); err != nil {
			return nil, fmt.Errorf("apply schema: %w", err)
		}
	}
	if len(changed) == 0 {
		return nil, nil
	}
	if err := s.commit(ctx, b); err != nil {
		return nil, fmt.Errorf("apply schema: %w", err)
	}
	s.schemaStale.Store(true)
	return changed, nil
}

// SetNodeInfo records what this node says about itself (its name and role)
// in the replicated _nodes collection, so every node can name its peers.
// Nothing is written when nothing changed.
func (s *Store) SetNodeInfo(ctx context.Context, name, role string) error {
	if err := s.checkInChannel(ctx, NodesCollection); err != nil {
		return fmt.Errorf("set node info: %w", err)
	}
	eid, err := EscapeID(s.opts.Writer)
	if err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, err := s.readRecord(ctx, NodesCollection, eid)
	if err != nil {
		return fmt.Errorf("set node info: %w", err)
	}
	if _, err := s.writeRecord(ctx, NodesCollection, eid, cur, map[string]any{"name": name, "role": role}, newestRules); err != nil {
		return fmt.Errorf("set node info: %w", err)
	}
	return nil
}
