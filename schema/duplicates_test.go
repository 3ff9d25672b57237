package schema

import (
	"reflect"
	"strings"
	"testing"
)

func TestDuplicateRulesValidate(t *testing.T) {
	base := "collections:\n  contacts:\n    fields:\n      name: {type: string}\n      n: {type: number}\n      email: {type: string, unique: true}\n    duplicates: "
	for _, tc := range []struct{ rules, err string }{
		{"[{fields: [nope]}]", `duplicates rule 1: unknown field "nope"`},
		{"[{fields: []}]", "give at least one field"},
		{"[{fields: [name, name]}]", `field "name" listed twice`},
		{"[{fields: [name], normalize: soundex}]", `unknown normalize "soundex"`},
		{"[{fields: [n], normalize: phone}]", "normalize phone needs string fields"},
		{"[{fields: [name]}, {fields: [name]}]", "rule 2: the same rule as an earlier one"},
		{"[{field: [name]}]", `unknown key "field"`},
		{"name", "must be a list of rules"},
	} {
		_, err := Parse([]byte(base + tc.rules + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v, want an error with %q", tc.rules, err, tc.err)
		}
	}
	s, err := Parse([]byte(base + "[{fields: [name, n]}, {fields: email, normalize: exact}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := s.Collections["contacts"]
	if rs := c.DuplicateRules(); len(rs) != 2 || rs[1].Name() != "email" || rs[1].Normalize != NormalizeExact {
		t.Fatalf("rules %+v", rs)
	}
	if out, err := s.YAML(); err != nil || !strings.Contains(string(out), "duplicates:") {
		t.Fatalf("YAML: %v\n%s", err, out)
	}
	for in, want := range map[string]string{" Ann  DOE ": "ann doe", "": ""} {
		if got := (DuplicateRule{}).NormalizeValue(in); got != want {
			t.Errorf("text %q -> %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"+47 (22) 33-44": "+47223344", "22.33 44": "223344", "-": ""} {
		if got := (DuplicateRule{Normalize: NormalizePhone}).NormalizeValue(in); got != want {
			t.Errorf("phone %q -> %q, want %q", in, got, want)
		}
	}
	// Rendered and parsed again, the rules are the same.
	out, _ := s.YAML()
	s2, err := Parse(out)
	if err != nil || len(s2.Collections["contacts"].Duplicates) != 2 {
		t.Fatalf("round trip: %v\n%s", err, out)
	}
}

// TestCloneKeepsDuplicateRules: a clone has the collection's duplicate
// rules, and changing them does not change the original.
func TestCloneKeepsDuplicateRules(t *testing.T) {
	s, err := Parse([]byte(`
collections:
  contacts:
    fields:
      email: {type: string}
      phone: {type: string}
    duplicates:
      - {fields: [email]}
      - {fields: [phone], normalize: phone}
`))
	if err != nil {
		t.Fatal(err)
	}
	c := s.Clone()
	if !reflect.DeepEqual(s, c) {
		t.Fatalf("clone differs: %+v", c.Collections["contacts"].Duplicates)
	}
	c.Collections["contacts"].Duplicates[0].Fields[0] = "phone"
	if s.Collections["contacts"].Duplicates[0].Fields[0] != "email" {
		t.Error("changing the clone changed the original")
	}
}
