package crdt

import (
	"context"
	"fmt"
	"strings"
)

// rulesFor returns how conflicts of a collection are decided: the schema's
// policies and the writers' roles, both replicated state, so every node
// decides alike. System collections (names starting with "_") always use
// PolicyNewest.
func (s *Store) rulesFor(ctx context.Context, collection string) (rules, error) {
	if strings.HasPrefix(collection, "_") {
		return newestRules, nil
	}
	ru := rules{recordPolicy: PolicyNewest, fieldPolicy: map[string]string{}}
	sc, err := s.Schema(ctx)
	if err != nil {
		return ru, err
	}
	if c := sc.Collections[collection]; c != nil {
		if c.Policy != "" {
			ru.recordPolicy = c.Policy
		}
		for name, f := range c.Fields {
			if f.Policy != "" {
				ru.fieldPolicy[name] = f.Policy
			}
		}
	}
	roles, err := s.roles(ctx)
	if err != nil {
		return ru, err
	}
	ru.roleOf = func(writer string) string { return roles[writer] }
	return ru, nil
}

// roles maps writer ids to their role: in a network with a trust model, the
// role its membership gives it; in an open network, the role each node
// recorded in _nodes. The map is shared: do not modify it.
func (s *Store) roles(ctx context.Context) (map[string]string, error) {
	if a := s.auth(); a != s {
		return a.roles(ctx)
	}
	if s.opts.Trust != nil {
		members, err := s.members(ctx)
		if err != nil {
			return nil, err
		}
		roles := make(map[string]string, len(members))
		for id, m := range members {
			roles[id] = m.Role
		}
		return roles, nil
	}
	s.rolesMu.Lock()
	defer s.rolesMu.Unlock()
	if s.rolesCache != nil && !s.rolesStale.Load() {
		return s.rolesCache, nil
	}
	s.rolesStale.Store(false)
	roles := map[string]string{}
	err := s.List(ctx, NodesCollection, func(r *Record) error {
		if role, ok := r.Fields["role"].Value.(string); ok {
			roles[r.ID] = role
		}
		return nil
	})
	if err != nil {
		s.rolesStale.Store(true)
		return nil, fmt.Errorf("load node roles: %w", err)
	}
	s.rolesCache = roles
	return roles, nil
}

// NodeInfo is what a node recorded about itself in _nodes.
type NodeInfo struct {
	Name string
	Role string
}

// Nodes returns what every node recorded about itself, by writer id (a
// channel store's authority's).
func (s *Store) Nodes(ctx context.Context) (map[string]NodeInfo, error) {
	if a := s.auth(); a != s {
		return a.Nodes(ctx)
	}
	out := map[string]NodeInfo{}
	err := s.List(ctx, NodesCollection, func(r *Record) error {
		name, _ := r.Fields["name"].Value.(string)
		role, _ := r.Fields["role"].Value.(string)
		out[r.ID] = NodeInfo{Name: name, Role: role}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}
