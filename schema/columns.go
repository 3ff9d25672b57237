package schema

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// NormalizeColumn is how column headers, field names and aliases are
// compared: s in lower case (strings.ToLower) with every white-space
// character (unicode.IsSpace) removed; everything else, such as "_" and "-",
// is kept. So "Last Name", "last name", "LASTNAME" and "Lastname" are equal,
// but "Last_Name" equals "last_name" and not "lastname".
func NormalizeColumn(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, strings.ToLower(s))
}

// Column maps a column header of an imported file (a CSV header, say) to the
// name of the field it stands for. The header matches a field when it equals
// the field's name or one of its aliases after NormalizeColumn, so
// "Last_Name" finds the field last_name and "Last Name" finds a field with
// the alias "Last Name" or "lastname". ReservedIDField in any case ("ID",
// " Id ") maps to ReservedIDField, the record id. A field's own name wins
// over another field's alias; if the header is still ambiguous (possible
// only in a schema that does not validate, such as one merged from
// concurrent changes) or matches nothing, ok is false.
func (c *Collection) Column(name string) (field string, ok bool) {
	h := NormalizeColumn(name)
	if h == "" {
		return "", false
	}
	if h == ReservedIDField {
		return ReservedIDField, true
	}
	if c == nil {
		return "", false
	}
	fields := c.FieldNames()
	for _, fname := range fields {
		if c.Fields[fname] != nil && NormalizeColumn(fname) == h {
			return fname, true
		}
	}
	for _, fname := range fields {
		f := c.Fields[fname]
		if f == nil {
			continue
		}
		for _, a := range f.Aliases {
			if NormalizeColumn(a) != h {
				continue
			}
			if field != "" && field != fname {
				return "", false // ambiguous
			}
			field = fname
		}
	}
	return field, field != ""
}

// aliasProblems lists what is wrong with the aliases of the collection's
// fields, each problem naming collection, field and alias. Validate has
// already set c.Name.
func (c *Collection) aliasProblems() []string {
	var out []string
	names := make(map[string]string, len(c.Fields)) // normalized name -> field
	fields := c.FieldNames()
	for _, fname := range fields {
		if c.Fields[fname] != nil {
			names[NormalizeColumn(fname)] = fname
		}
	}
	type owner struct{ field, alias string }
	taken := make(map[string]owner) // normalized alias -> first field using it
	for _, fname := range fields {
		f := c.Fields[fname]
		if f == nil {
			continue
		}
		for _, a := range f.Aliases {
			where := fmt.Sprintf("collection %q, field %q: alias %q", c.Name, fname, a)
			n := NormalizeColumn(a)
			switch {
			case !utf8.ValidString(a):
				out = append(out, where+" is not valid UTF-8")
			case n == "":
				out = append(out, where+" is empty")
			case n == ReservedIDField:
				out = append(out, fmt.Sprintf("%s is reserved for the record id", where))
			case names[n] != "" && names[n] != fname:
				out = append(out, fmt.Sprintf("%s is the name of field %q (an alias must not stand for another field)", where, names[n]))
			case taken[n].field != "" && taken[n].field != fname:
				out = append(out, fmt.Sprintf("%s is also an alias of field %q (as %q); an alias must stand for one field",
					where, taken[n].field, taken[n].alias))
			case taken[n].field == "":
				taken[n] = owner{fname, a}
			}
		}
	}
	return out
}
