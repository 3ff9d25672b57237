// Package schema defines Ferry's record schemas: which collections exist,
// which fields their records have and what values those fields accept.
//
// A schema is written in YAML (or JSON) and parsed with Parse. Every write of
// a record goes through Collection.ValidateWrite (or ValidateWriteText, for
// values typed as text), which rejects unknown fields and bad values and
// returns the values in canonical form. Schema
// changes must be additive (see CheckAdditive) so that peers on older and
// newer schemas can keep replicating.
package schema

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Type is the type of a field.
type Type string

// The field types. Values are represented in Go as noted (see Normalize).
const (
	TypeString Type = "string" // any UTF-8 string, Go string
	TypeNumber Type = "number" // finite float64
	TypeBool   Type = "bool"   // bool
	TypeEnum   Type = "enum"   // one of Field.Values, Go string
	TypeTime   Type = "time"   // instant, Go string in RFC 3339 UTC
	TypeRef    Type = "ref"    // ID of a record in collection Field.To, Go string
)

// types lists the known types in documentation order.
var types = []Type{TypeString, TypeNumber, TypeBool, TypeEnum, TypeTime, TypeRef}

// policies lists the accepted values of a policy key (besides empty).
var policies = []string{"newest", "office", "laptop", "manual"}

// roles are the node roles a collection's writers may name.
var roles = []string{"office", "laptop"}

// MayWrite reports whether a node of the given role may write records of
// this collection (Writers empty: every role).
func (c *Collection) MayWrite(role string) bool {
	return len(c.Writers) == 0 || slices.Contains(c.Writers, role)
}

// namePattern is what collection and field names must match.
// ReservedIDField cannot name a field: records are exchanged (import,
// export) as objects whose "id" member is the record id.
const ReservedIDField = "id"

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Field is the definition of one field of a collection.
type Field struct {
	// Type is the field's type; required.
	Type Type `json:"type" yaml:"type"`
	// Required fields must be set when a record is created and can never be
	// cleared.
	Required bool `json:"required,omitempty" yaml:"required,omitempty"`
	// Unique marks a field whose values should not repeat within the
	// collection. It is declared here and enforced by the store.
	Unique bool `json:"unique,omitempty" yaml:"unique,omitempty"`
	// Values lists the allowed values of an enum field, in order. Only for
	// enum fields.
	Values []string `json:"values,omitempty" yaml:"values,omitempty"`
	// To names the collection a ref field points into. Only for ref fields.
	To string `json:"to,omitempty" yaml:"to,omitempty"`
	// Policy is the conflict policy for this field: empty (the collection's)
	// or one of newest, office, laptop, manual (docs/merge-rules.md).
	Policy string `json:"policy,omitempty" yaml:"policy,omitempty"`
	// Aliases are other names of the field in imported files, such as the
	// column header "Last Name" for a field last_name (see
	// Collection.Column). They are compared after NormalizeColumn, so
	// "Last Name", "last name" and "LASTNAME" are the same alias. Within a
	// collection no alias may stand for two fields or equal another field's
	// name or ReservedIDField. Adding, removing and changing aliases is not
	// a destructive change.
	Aliases []string `json:"aliases,omitempty" yaml:"aliases,omitempty"`
}

// Collection is the definition of one collection of records.
type Collection struct {
	// Name is the collection's key in Schema.Collections. Parse and Validate
	// fill it in.
	Name string `json:"-" yaml:"-"`
	// Policy is the default conflict policy of the collection's fields and
	// of its record conflicts: empty (newest) or one of newest, office,
	// laptop, manual (docs/merge-rules.md).
	Policy string `json:"policy,omitempty" yaml:"policy,omitempty"`
	// Writers lists the node roles (office, laptop) whose writes to this
	// collection are accepted; empty means every member. Enforced when
	// writing and, on every node, when merging (docs/security.md).
	Writers []string `json:"writers,omitempty" yaml:"writers,omitempty"`
	// Fields maps field names to their definitions.
	Fields map[string]*Field `json:"fields" yaml:"fields"`
	// Duplicates are the rules that find likely duplicate records after
	// records merge (see DuplicateRule, docs/duplicates.md).
	Duplicates []DuplicateRule `json:"duplicates,omitempty" yaml:"duplicates,omitempty"`
	// Channel routes each record to a channel by a field's value (nil:
	// the collection goes to every node; see Routing).
	Channel *Routing `json:"channel,omitempty" yaml:"channel,omitempty"`
}

// Schema is a set of collections.
type Schema struct {
	// Collections maps collection names to their definitions.
	Collections map[string]*Collection `json:"collections" yaml:"collections"`
}

// Parse parses a schema written in YAML or JSON, and validates it. Decoding
// is strict: unknown keys, duplicate keys, values of the wrong shape and
// YAML aliases are errors. It fills in Collection.Name. Errors wrap
// ErrInvalidSchema.
func Parse(data []byte) (*Schema, error) {
	s, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSchema, err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Validate checks that the schema is well formed: names match
// ^[a-z][a-z0-9_]{0,62}$, every collection has at least one field, every
// field has a known type, enum fields have distinct non-empty values, ref
// fields name a collection of this schema in To, values and to appear only
// on enum and ref fields, policies are known, and every alias is non-empty,
// is not the reserved id and, compared by NormalizeColumn, names no other
// field of its collection (an alias equal to its own field's name, or
// repeated on the same field, is harmless and allowed). It reports every problem
// found, each naming its collection and field, in an error wrapping
// ErrInvalidSchema. Validate also sets each Collection.Name to its key.
func (s *Schema) Validate() error {
	if s == nil {
		return fmt.Errorf("%w: no schema", ErrInvalidSchema)
	}
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	for _, cname := range s.Names() {
		c := s.Collections[cname]
		if !namePattern.MatchString(cname) {
			add("collection %q: bad name (want a lowercase letter, then up to 62 lowercase letters, digits or underscores)", cname)
		}
		if c == nil || len(c.Fields) == 0 {
			add("collection %q: needs at least one field", cname)
			continue
		}
		c.Name = cname
		if c.Policy != "" && !slices.Contains(policies, c.Policy) {
			add("collection %q: unknown policy %q (want one of %s)", cname, c.Policy, strings.Join(policies, ", "))
		}
		for i, w := range c.Writers {
			switch {
			case !slices.Contains(roles, w):
				add("collection %q: writers: unknown role %q (want %s)", cname, w, strings.Join(roles, " or "))
			case slices.Contains(c.Writers[:i], w):
				add("collection %q: writers: %q listed twice", cname, w)
			}
		}
		for _, fname := range c.FieldNames() {
			f := c.Fields[fname]
			where := fmt.Sprintf("collection %q, field %q", cname, fname)
			if !namePattern.MatchString(fname) {
				add("%s: bad name (want a lowercase letter, then up to 62 lowercase letters, digits or underscores)", where)
			}
			if fname == ReservedIDField {
				add("%s: the name %q is reserved for the record id", where, fname)
			}
			if f == nil {
				add("%s: missing definition", where)
				continue
			}
			for _, p := range f.problems(s) {
				add("%s: %s", where, p)
			}
		}
		problems = append(problems, c.aliasProblems()...)
		problems = append(problems, c.duplicateProblems()...)
		problems = append(problems, c.routingProblems()...)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidSchema, strings.Join(problems, "; "))
	}
	return nil
}

// problems lists what is wrong with f as a field of schema s.
func (f *Field) problems(s *Schema) []string {
	var out []string
	switch {
	case f.Type == "":
		out = append(out, "type is required")
	case !slices.Contains(types, f.Type):
		names := make([]string, len(types))
		for i, t := range types {
			names[i] = string(t)
		}
		out = append(out, fmt.Sprintf("unknown type %q (want one of %s)", f.Type, strings.Join(names, ", ")))
	}
	if f.Type == TypeEnum {
		if len(f.Values) == 0 {
			out = append(out, "enum needs at least one value")
		}
		seen := make(map[string]bool, len(f.Values))
		for _, v := range f.Values {
			switch {
			case v == "":
				out = append(out, "enum values must not be empty")
			case seen[v]:
				out = append(out, fmt.Sprintf("enum value %q is repeated", v))
			}
			seen[v] = true
		}
	} else if len(f.Values) > 0 {
		out = append(out, "values is only allowed on enum fields")
	}
	if f.Type == TypeRef {
		switch {
		case f.To == "":
			out = append(out, "ref needs to: naming a collection")
		case s.Collections[f.To] == nil:
			out = append(out, fmt.Sprintf("ref to unknown collection %q", f.To))
		}
	} else if f.To != "" {
		out = append(out, "to is only allowed on ref fields")
	}
	if f.Policy != "" && !slices.Contains(policies, f.Policy) {
		out = append(out, fmt.Sprintf("unknown policy %q (want one of %s)", f.Policy, strings.Join(policies, ", ")))
	}
	return out
}

// Collection returns the named collection. The error wraps
// ErrUnknownCollection.
func (s *Schema) Collection(name string) (*Collection, error) {
	if s != nil {
		if c := s.Collections[name]; c != nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownCollection, name)
}

// Names returns the collection names, sorted.
func (s *Schema) Names() []string {
	if s == nil {
		return nil
	}
	return sortedKeys(s.Collections)
}

// FieldNames returns the collection's field names, sorted.
func (c *Collection) FieldNames() []string {
	if c == nil {
		return nil
	}
	return sortedKeys(c.Fields)
}

// Field returns the definition of the named field, or nil if the collection
// has no such field.
func (c *Collection) Field(name string) *Field {
	if c == nil {
		return nil
	}
	return c.Fields[name]
}

// Clone returns a deep copy of the schema.
func (s *Schema) Clone() *Schema {
	if s == nil {
		return nil
	}
	out := &Schema{}
	if s.Collections != nil {
		out.Collections = make(map[string]*Collection, len(s.Collections))
		for name, c := range s.Collections {
			out.Collections[name] = c.clone()
		}
	}
	return out
}

func (c *Collection) clone() *Collection {
	if c == nil {
		return nil
	}
	out := &Collection{Name: c.Name, Policy: c.Policy, Writers: slices.Clone(c.Writers)}
	for _, r := range c.Duplicates {
		r.Fields = slices.Clone(r.Fields)
		out.Duplicates = append(out.Duplicates, r)
	}
	if c.Channel != nil {
		r := *c.Channel
		out.Channel = &r
	}
	if c.Fields != nil {
		out.Fields = make(map[string]*Field, len(c.Fields))
		for name, f := range c.Fields {
			if f == nil {
				out.Fields[name] = nil
				continue
			}
			g := *f
			g.Values = slices.Clone(f.Values)
			g.Aliases = slices.Clone(f.Aliases)
			out.Fields[name] = &g
		}
	}
	return out
}

// name returns the collection's name, tolerating a nil collection.
func (c *Collection) name() string {
	if c == nil {
		return ""
	}
	return c.Name
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
