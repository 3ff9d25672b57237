package schema

import (
	"fmt"
	"slices"
	"strings"
)

// CheckAdditive checks that moving from schema old to schema new only adds:
// new collections, new fields, and new enum values appended after the
// existing ones. Policy and alias changes (adding, removing or changing a
// field's aliases) are allowed too. Anything else (removing a
// collection or field, changing a field's type, required, unique or to, and
// removing, inserting before or reordering enum values) is destructive: the
// error wraps ErrDestructiveChange and lists every such change, e.g.
//
//	destructive schema change refused: contacts.email: type string -> number; contacts.phone: field removed
//
// old may be nil or empty, in which case everything is new. CheckAdditive
// does not validate new; call Validate for that.
func CheckAdditive(old, new *Schema) error {
	changes := destructiveChanges(old, new)
	if len(changes) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDestructiveChange, strings.Join(changes, "; "))
}

// destructiveChanges lists the destructive changes from old to new, in a
// stable order, one description per change. It returns nil when the change
// is additive.
func destructiveChanges(old, new *Schema) []string {
	var out []string
	for _, cname := range old.Names() {
		oc := old.Collections[cname]
		nc := new.collections()[cname]
		if nc == nil {
			if oc != nil {
				out = append(out, cname+": collection removed")
			}
			continue
		}
		if oc != nil {
			out = append(out, routingChanges(cname, oc, nc)...)
		}
		for _, fname := range oc.FieldNames() {
			of := oc.Fields[fname]
			nf := nc.Fields[fname]
			where := cname + "." + fname
			switch {
			case nf == nil:
				out = append(out, where+": field removed")
			case of == nil:
				// No old definition: nothing to preserve.
			default:
				out = append(out, fieldChanges(where, of, nf)...)
			}
		}
	}
	return out
}

// fieldChanges lists the destructive changes from field definition of to nf.
func fieldChanges(where string, of, nf *Field) []string {
	if of.Type != nf.Type {
		// Everything else follows from the type; one line says it.
		return []string{fmt.Sprintf("%s: type %s -> %s", where, of.Type, nf.Type)}
	}
	var out []string
	if of.Required != nf.Required {
		out = append(out, fmt.Sprintf("%s: required %t -> %t", where, of.Required, nf.Required))
	}
	if of.Unique != nf.Unique {
		out = append(out, fmt.Sprintf("%s: unique %t -> %t", where, of.Unique, nf.Unique))
	}
	if of.To != nf.To {
		out = append(out, fmt.Sprintf("%s: to %s -> %s", where, orNone(of.To), orNone(nf.To)))
	}
	var removed []string
	for _, v := range of.Values {
		if !slices.Contains(nf.Values, v) {
			removed = append(removed, v)
		}
	}
	switch {
	case len(removed) == 1:
		out = append(out, fmt.Sprintf("%s: enum value %s removed", where, removed[0]))
	case len(removed) > 1:
		out = append(out, fmt.Sprintf("%s: enum values %s removed", where, strings.Join(removed, ", ")))
	case len(nf.Values) < len(of.Values) || !slices.Equal(of.Values, nf.Values[:len(of.Values)]):
		out = append(out, fmt.Sprintf("%s: enum values reordered: [%s] -> [%s] (new values may only be appended)",
			where, strings.Join(of.Values, ", "), strings.Join(nf.Values, ", ")))
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// collections returns s.Collections, tolerating a nil schema.
func (s *Schema) collections() map[string]*Collection {
	if s == nil {
		return nil
	}
	return s.Collections
}
