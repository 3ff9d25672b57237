package schema

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// DuplicateRule says when two records of a collection are likely the same
// thing: every field of Fields is set on both and their values are equal
// once normalised (see Normalize). Duplicates are found after records
// merge, on every node (docs/duplicates.md); a unique field is an implicit
// rule of its own with the text normalisation.
type DuplicateRule struct {
	// Fields are compared together, in this order; at least one.
	Fields []string `json:"fields" yaml:"fields"`
	// Normalize is how values are compared: text (default: trimmed,
	// case-insensitive, inner runs of spaces as one), phone (digits only,
	// a leading + kept), or exact.
	Normalize string `json:"normalize,omitempty" yaml:"normalize,omitempty"`
}

// Normalisations of a DuplicateRule.
const (
	NormalizeText  = "text"
	NormalizePhone = "phone"
	NormalizeExact = "exact"
)

var normalizations = []string{NormalizeText, NormalizePhone, NormalizeExact}

// Name is how the rule is shown: its fields joined by "+".
func (r DuplicateRule) Name() string { return strings.Join(r.Fields, "+") }

// duplicateProblems lists what is wrong with the duplicate rules of c.
func (c *Collection) duplicateProblems() []string {
	var out []string
	seen := map[string]bool{}
	for i, r := range c.Duplicates {
		where := fmt.Sprintf("collection %q, duplicates rule %d", c.Name, i+1)
		if len(r.Fields) == 0 {
			out = append(out, where+": fields: give at least one field")
		}
		for j, f := range r.Fields {
			fd := c.Fields[f]
			switch {
			case fd == nil:
				out = append(out, fmt.Sprintf("%s: unknown field %q (the collection has %s)", where, f, strings.Join(c.FieldNames(), ", ")))
			case slices.Contains(r.Fields[:j], f):
				out = append(out, fmt.Sprintf("%s: field %q listed twice", where, f))
			case r.Normalize == NormalizePhone && fd.Type != TypeString:
				out = append(out, fmt.Sprintf("%s: normalize phone needs string fields (%q is %s)", where, f, fd.Type))
			}
		}
		if r.Normalize != "" && !slices.Contains(normalizations, r.Normalize) {
			out = append(out, fmt.Sprintf("%s: unknown normalize %q (want one of %s)", where, r.Normalize, strings.Join(normalizations, ", ")))
		}
		key := r.Name() + "/" + r.Normalize
		if len(r.Fields) > 0 && seen[key] {
			out = append(out, fmt.Sprintf("%s: the same rule as an earlier one", where))
		}
		seen[key] = true
	}
	return out
}

// DuplicateRules returns the rules duplicates are found by: the
// collection's own, then one per unique field not already a rule of its
// own (text normalisation).
func (c *Collection) DuplicateRules() []DuplicateRule {
	out := slices.Clone(c.Duplicates)
	for _, name := range c.FieldNames() {
		if !c.Fields[name].Unique {
			continue
		}
		covered := false
		for _, r := range c.Duplicates {
			if len(r.Fields) == 1 && r.Fields[0] == name {
				covered = true
			}
		}
		if !covered {
			out = append(out, DuplicateRule{Fields: []string{name}})
		}
	}
	return out
}

// NormalizeValue returns v as the rule compares it, or "" when v does not
// take part (nil, or nothing left after normalising).
func (r DuplicateRule) NormalizeValue(v any) string {
	if v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Sprint(v)
	}
	switch r.Normalize {
	case NormalizeExact:
		return s
	case NormalizePhone:
		var b strings.Builder
		for i, c := range strings.TrimSpace(s) {
			if c >= '0' && c <= '9' || c == '+' && i == 0 {
				b.WriteRune(c)
			}
		}
		if b.String() == "+" {
			return ""
		}
		return b.String()
	default:
		return strings.Join(strings.FieldsFunc(strings.ToLower(s), unicode.IsSpace), " ")
	}
}

// DuplicateKey returns the key two records share when the rule finds them
// duplicates, or false when some field of the rule is empty in values.
func (r DuplicateRule) DuplicateKey(values map[string]any) (string, bool) {
	parts := make([]string, len(r.Fields))
	for i, f := range r.Fields {
		p := r.NormalizeValue(values[f])
		if p == "" {
			return "", false
		}
		parts[i] = p
	}
	return strings.Join(parts, "\x1f"), true
}
