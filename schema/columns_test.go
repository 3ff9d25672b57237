package schema

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// aliasSchema is a schema with aliases, as for importing a CRM export.
const aliasSchema = `
collections:
  contacts:
    fields:
      first_name: {type: string, aliases: [First Name, Vorname]}
      last_name:  {type: string, required: true, aliases: ["Last Name", lastname, Nachname]}
      email:      {type: string, aliases: E-Mail}
      zip_code:   {type: string, aliases: [PLZ, zip-code]}
      amount:     {type: number}
  accounts:
    fields:
      name: {type: string, aliases: [Company, Firma]}
`

func TestNormalizeColumn(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Last Name", "lastname"},
		{"last name", "lastname"},
		{"LASTNAME", "lastname"},
		{"Lastname", "lastname"},
		{"  Last\tName \n", "lastname"},
		{"Last\u00a0Name", "lastname"},
		{"Last_Name", "last_name"},
		{"E-Mail", "e-mail"},
		{"ÄNDERUNG am", "änderungam"},
		{"", ""},
		{" \t ", ""},
	}
	for _, tt := range tests {
		if got := NormalizeColumn(tt.in); got != tt.want {
			t.Errorf("NormalizeColumn(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseAliases(t *testing.T) {
	s := mustParse(t, aliasSchema)
	c, _ := s.Collection("contacts")
	want := map[string][]string{
		"first_name": {"First Name", "Vorname"},
		"last_name":  {"Last Name", "lastname", "Nachname"},
		"email":      {"E-Mail"}, // a single alias may be a scalar
		"zip_code":   {"PLZ", "zip-code"},
		"amount":     nil,
	}
	for f, w := range want {
		if got := c.Fields[f].Aliases; !slices.Equal(got, w) {
			t.Errorf("%s: Aliases = %q, want %q", f, got, w)
		}
	}
	// YAML renders aliases and reads them back.
	y, err := s.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), `last_name: {type: string, required: true, aliases: [Last Name, lastname, Nachname]}`) {
		t.Errorf("YAML() does not render aliases as expected:\n%s", y)
	}
	if back := mustParse(t, string(y)); !reflect.DeepEqual(back, s) {
		t.Errorf("round trip differs:\n%s", y)
	}
	// JSON, as the replicated schema stores fields: aliases is omitted when
	// empty, so field definitions without aliases are unchanged.
	js, _ := json.Marshal(c.Fields["amount"])
	if string(js) != `{"type":"number"}` {
		t.Errorf("JSON without aliases = %s", js)
	}
	js, _ = json.Marshal(c.Fields["email"])
	if string(js) != `{"type":"string","aliases":["E-Mail"]}` {
		t.Errorf("JSON with aliases = %s", js)
	}
	var f Field
	if err := json.Unmarshal(js, &f); err != nil || !slices.Equal(f.Aliases, []string{"E-Mail"}) {
		t.Errorf("JSON round trip: %+v, %v", f, err)
	}
	// Clone copies the aliases.
	cl := s.Clone()
	cl.Collections["contacts"].Fields["last_name"].Aliases[0] = "changed"
	if c.Fields["last_name"].Aliases[0] != "Last Name" {
		t.Error("changing the clone's aliases changed the original")
	}
}

func TestParseAliasesAccepts(t *testing.T) {
	for _, src := range []string{
		// A field's own name as its alias, in any spelling, is harmless.
		"collections: {a: {fields: {last_name: {type: string, aliases: [last_name, Last_Name, ' LAST_NAME ']}}}}",
		// The same alias twice on one field is harmless too.
		"collections: {a: {fields: {b: {type: string, aliases: [Last Name, lastname, LASTNAME]}}}}",
		// Null and empty lists mean no aliases.
		"collections: {a: {fields: {b: {type: string, aliases: ~}, c: {type: string, aliases: []}}}}",
		// The same alias in two collections is fine.
		"collections: {a: {fields: {b: {type: string, aliases: [Name]}}}, c: {fields: {d: {type: string, aliases: [Name]}}}}",
		// "_" and "-" are kept, so these are all different.
		"collections: {a: {fields: {lastname: {type: string}, b: {type: string, aliases: [last_name, last-name]}}}}",
		// Numbers and bools in YAML read as strings.
		`collections: {a: {fields: {b: {type: string, aliases: [1, true, "no"]}}}}`,
	} {
		s := mustParse(t, src)
		y, err := s.YAML()
		if err != nil {
			t.Fatal(err)
		}
		if back := mustParse(t, string(y)); !reflect.DeepEqual(back, s) {
			t.Errorf("round trip differs:\n%s\n%s", src, y)
		}
	}
}

func TestParseAliasErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // substrings of the error
	}{
		{"alias is another field's name", `
collections:
  contacts:
    fields:
      lastname:  {type: string}
      last_name: {type: string, aliases: [Last Name]}`,
			[]string{`collection "contacts", field "last_name": alias "Last Name" is the name of field "lastname"`}},
		{"alias is another field's alias", `
collections:
  contacts:
    fields:
      first_name: {type: string, aliases: [Name]}
      last_name:  {type: string, aliases: [" NAME"]}`,
			[]string{`collection "contacts", field "last_name": alias " NAME" is also an alias of field "first_name" (as "Name")`}},
		{"alias clash across spellings", `
collections:
  contacts:
    fields:
      a: {type: string, aliases: [Last Name]}
      b: {type: string, aliases: [LASTNAME]}`,
			[]string{`field "b": alias "LASTNAME" is also an alias of field "a" (as "Last Name")`}},
		{"alias is the id", `
collections:
  contacts:
    fields:
      a: {type: string, aliases: [ID]}
      b: {type: string, aliases: [" i d "]}`,
			[]string{`field "a": alias "ID" is reserved for the record id`, `field "b": alias " i d " is reserved for the record id`}},
		{"empty alias", `
collections:
  contacts:
    fields:
      a: {type: string, aliases: [""]}
      b: {type: string, aliases: ["  "]}`,
			[]string{`collection "contacts", field "a": alias "" is empty`, `field "b": alias "  " is empty`}},
		{"alias not strings", `
collections:
  contacts:
    fields:
      a: {type: string, aliases: [[x]]}`,
			[]string{`collection "contacts", field "a"`, "aliases must be a list of strings"}},
		{"alias mapping", `
collections:
  contacts:
    fields:
      a: {type: string, aliases: {x: y}}`,
			[]string{"aliases must be a list of strings"}},
		{"null alias item", `
collections:
  contacts:
    fields:
      a: {type: string, aliases: [~]}`,
			[]string{"aliases must be a list of strings"}},
		{"misspelt key", `
collections:
  contacts:
    fields:
      a: {type: string, alias: [x]}`,
			[]string{`unknown key "alias"`, "aliases"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !errors.Is(err, ErrInvalidSchema) {
				t.Errorf("error %v does not wrap ErrInvalidSchema", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestValidateAliasUTF8(t *testing.T) {
	s := &Schema{Collections: map[string]*Collection{"c": {Fields: map[string]*Field{
		"a": {Type: TypeString, Aliases: []string{"\xff"}},
	}}}}
	err := s.Validate()
	if err == nil || !strings.Contains(err.Error(), `field "a": alias "\xff" is not valid UTF-8`) {
		t.Errorf("Validate = %v", err)
	}
}

func TestColumn(t *testing.T) {
	s := mustParse(t, aliasSchema)
	c, _ := s.Collection("contacts")
	tests := []struct {
		header, field string
		ok            bool
	}{
		{"last_name", "last_name", true},
		{"Last_Name", "last_name", true},
		{" LAST_NAME ", "last_name", true},
		{"Last Name", "last_name", true},
		{"last name", "last_name", true},
		{"LASTNAME", "last_name", true},
		{"Lastname", "last_name", true},
		{"Nachname", "last_name", true},
		{"First Name", "first_name", true},
		{"firstname", "first_name", true},
		{"first_name", "first_name", true},
		{"E-Mail", "email", true},
		{"e-mail", "email", true},
		{"email", "email", true},
		{"E_Mail", "", false}, // "_" is not "-"
		{"PLZ", "zip_code", true},
		{"Zip-Code", "zip_code", true},
		{"zipcode", "", false},
		{"amount", "amount", true},
		{"Amount", "amount", true},
		{"id", "id", true},
		{"ID", "id", true},
		{" Id ", "id", true},
		{"Company", "", false}, // an alias of another collection
		{"unknown", "", false},
		{"", "", false},
		{"   ", "", false},
	}
	for _, tt := range tests {
		field, ok := c.Column(tt.header)
		if field != tt.field || ok != tt.ok {
			t.Errorf("Column(%q) = %q, %t; want %q, %t", tt.header, field, ok, tt.field, tt.ok)
		}
	}
	var nilColl *Collection
	if f, ok := nilColl.Column("ID"); f != "id" || !ok {
		t.Errorf("nil.Column(ID) = %q, %t", f, ok)
	}
	if f, ok := nilColl.Column("x"); f != "" || ok {
		t.Errorf("nil.Column(x) = %q, %t", f, ok)
	}
}

// TestColumnUnvalidated covers schemas Validate would refuse, as a schema
// merged from concurrent changes may be: a field's name wins over another
// field's alias, and an alias of two fields matches neither.
func TestColumnUnvalidated(t *testing.T) {
	c := &Collection{Name: "c", Fields: map[string]*Field{
		"lastname":   {Type: TypeString},
		"last_name":  {Type: TypeString, Aliases: []string{"Last Name", "Name"}},
		"first_name": {Type: TypeString, Aliases: []string{"name"}},
		"gone":       nil,
		"other":      {Type: TypeString, Aliases: []string{"gone"}},
	}}
	tests := []struct {
		header, field string
		ok            bool
	}{
		{"Last Name", "lastname", true},
		{"NAME", "", false},
		{"gone", "other", true},
	}
	for _, tt := range tests {
		field, ok := c.Column(tt.header)
		if field != tt.field || ok != tt.ok {
			t.Errorf("Column(%q) = %q, %t; want %q, %t", tt.header, field, ok, tt.field, tt.ok)
		}
	}
}

func TestCheckAdditiveAliases(t *testing.T) {
	old := mustParse(t, aliasSchema)
	for _, src := range []string{
		// aliases removed
		`collections: {contacts: {fields: {first_name: {type: string}, last_name: {type: string, required: true},
			email: {type: string}, zip_code: {type: string}, amount: {type: number}}}, accounts: {fields: {name: {type: string}}}}`,
		// aliases changed and added
		`collections: {contacts: {fields: {first_name: {type: string, aliases: [Given Name]}, last_name: {type: string, required: true, aliases: [Surname]},
			email: {type: string}, zip_code: {type: string, aliases: [Postleitzahl]}, amount: {type: number, aliases: [Betrag]}}},
			accounts: {fields: {name: {type: string, aliases: [Firma]}}}}`,
	} {
		next := mustParse(t, src)
		if err := CheckAdditive(old, next); err != nil {
			t.Errorf("CheckAdditive: %v", err)
		}
		if err := CheckAdditive(next, old); err != nil {
			t.Errorf("CheckAdditive back: %v", err)
		}
		// The replicated schema (crdt.Store.ApplySchema) writes a field when
		// its JSON definition changes: an alias change must show there.
		for _, f := range []string{"first_name", "last_name", "zip_code"} {
			a, _ := json.Marshal(old.Collections["contacts"].Fields[f])
			b, _ := json.Marshal(next.Collections["contacts"].Fields[f])
			if string(a) == string(b) {
				t.Errorf("%s: JSON definition unchanged by an alias change: %s", f, a)
			}
		}
	}
	// A destructive change next to an alias change is still refused.
	next := mustParse(t, `collections: {contacts: {fields: {first_name: {type: number, aliases: [x]}, last_name: {type: string, required: true},
			email: {type: string}, zip_code: {type: string}, amount: {type: number}}}, accounts: {fields: {name: {type: string}}}}`)
	if err := CheckAdditive(old, next); !errors.Is(err, ErrDestructiveChange) || !strings.Contains(err.Error(), "contacts.first_name: type string -> number") {
		t.Errorf("CheckAdditive = %v", err)
	}
}
