package schema

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const crmPath = "../../shared/bench/crm.yaml"

// readCRM returns the reference schema file, skipping the test if absent.
func readCRM(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(crmPath)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not found", crmPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// testSchema is a small schema used by the value tests.
const testSchema = `
collections:
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      email:      {type: string, unique: true}
      stage:      {type: enum, values: [lead, qualified, won, lost]}
      amount:     {type: number}
      active:     {type: bool}
      met_on:     {type: time}
      account:    {type: ref, to: accounts}
  accounts:
    fields:
      name: {type: string, required: true}
`

func mustParse(t testing.TB, src string) *Schema {
	t.Helper()
	s, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func TestParseCRM(t *testing.T) {
	data := readCRM(t)
	s, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(crm.yaml): %v", err)
	}
	if got, want := s.Names(), []string{"accounts", "contacts"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	contacts, err := s.Collection("contacts")
	if err != nil {
		t.Fatal(err)
	}
	if contacts.Name != "contacts" {
		t.Errorf("Name = %q, want contacts", contacts.Name)
	}
	if n := len(contacts.Fields); n != 9 {
		t.Errorf("contacts has %d fields, want 9: %v", n, contacts.FieldNames())
	}
	want := map[string]Field{
		"last_name": {Type: TypeString, Required: true},
		"email":     {Type: TypeString, Unique: true},
		"stage":     {Type: TypeEnum, Values: []string{"lead", "qualified", "won", "lost"}},
		"amount":    {Type: TypeNumber},
		"active":    {Type: TypeBool},
		"met_on":    {Type: TypeTime},
		"account":   {Type: TypeRef, To: "accounts"},
	}
	for name, w := range want {
		if f := contacts.Field(name); f == nil || !reflect.DeepEqual(*f, w) {
			t.Errorf("field %s = %+v, want %+v", name, f, w)
		}
	}
	if !slices.IsSorted(contacts.FieldNames()) {
		t.Errorf("FieldNames not sorted: %v", contacts.FieldNames())
	}

	// The JSON form (with tab indentation, as json.MarshalIndent writes it)
	// parses to an equal schema.
	js, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := Parse(js)
	if err != nil {
		t.Fatalf("Parse(JSON): %v\n%s", err, js)
	}
	if !reflect.DeepEqual(s, fromJSON) {
		t.Errorf("JSON form parses differently:\n%s", js)
	}

	// YAML round-trips and is deterministic.
	y, err := s.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(y)
	if err != nil {
		t.Fatalf("Parse(YAML()): %v\n%s", err, y)
	}
	if !reflect.DeepEqual(s, back) {
		t.Errorf("YAML() does not round-trip:\n%s", y)
	}
	y2, _ := back.YAML()
	if string(y) != string(y2) {
		t.Errorf("YAML() not deterministic:\n%s\n---\n%s", y, y2)
	}
}

func TestParseJSONLiteral(t *testing.T) {
	const js = `{"collections": {
		"accounts": {"fields": {"name": {"type": "string", "required": true}}},
		"contacts": {"policy": "office", "fields": {
			"stage": {"type": "enum", "values": ["lead", "won"], "policy": "manual"},
			"account": {"type": "ref", "to": "accounts"}}}}}`
	got, err := Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	want := &Schema{Collections: map[string]*Collection{
		"accounts": {Name: "accounts", Fields: map[string]*Field{"name": {Type: TypeString, Required: true}}},
		"contacts": {Name: "contacts", Policy: "office", Fields: map[string]*Field{
			"stage":   {Type: TypeEnum, Values: []string{"lead", "won"}, Policy: "manual"},
			"account": {Type: TypeRef, To: "accounts"},
		}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestYAMLOutput(t *testing.T) {
	s := mustParse(t, `
collections:
  b:
    policy: newest
    fields:
      z: {type: enum, values: ["yes", "1", "a b"], required: true}
      a: {to: b, type: ref, unique: true}
  a:
    fields:
      x: {type: time, policy: laptop}
`)
	got, err := s.YAML()
	if err != nil {
		t.Fatal(err)
	}
	const want = `collections:
  a:
    fields:
      x: {type: time, policy: laptop}
  b:
    policy: newest
    fields:
      a: {type: ref, unique: true, to: b}
      z: {type: enum, required: true, values: ["yes", "1", a b]}
`
	if string(got) != want {
		t.Errorf("YAML() =\n%s\nwant\n%s", got, want)
	}
	if back := mustParse(t, string(got)); !reflect.DeepEqual(back, s) {
		t.Errorf("round trip differs")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // substrings of the error
	}{
		{"unknown field key", `
collections:
  contacts:
    fields:
      first_name: {tpye: string}`, []string{`collection "contacts", field "first_name"`, `unknown key "tpye"`, "line 5"}},
		{"unknown collection key", `
collections:
  contacts:
    feilds: {a: {type: string}}`, []string{`collection "contacts"`, `unknown key "feilds"`}},
		{"unknown root key", `
collection:
  contacts: {fields: {a: {type: string}}}`, []string{`unknown key "collection"`}},
		{"unknown type", `
collections:
  contacts:
    fields:
      age: {type: integer}`, []string{`collection "contacts", field "age"`, `unknown type "integer"`}},
		{"missing type", `
collections:
  contacts:
    fields:
      age: {required: true}`, []string{`collection "contacts", field "age"`, "type is required"}},
		{"enum without values", `
collections:
  contacts:
    fields:
      stage: {type: enum}`, []string{`collection "contacts", field "stage": enum needs at least one value`}},
		{"enum with empty list", `
collections:
  contacts:
    fields:
      stage: {type: enum, values: []}`, []string{`collection "contacts", field "stage": enum needs at least one value`}},
		{"enum with empty value", `
collections:
  contacts:
    fields:
      stage: {type: enum, values: [a, ""]}`, []string{`collection "contacts", field "stage"`, "must not be empty"}},
		{"enum with repeated value", `
collections:
  contacts:
    fields:
      stage: {type: enum, values: [a, b, a]}`, []string{`collection "contacts", field "stage"`, `"a" is repeated`}},
		{"ref to missing collection", `
collections:
  contacts:
    fields:
      account: {type: ref, to: accounts}`, []string{`collection "contacts", field "account"`, `unknown collection "accounts"`}},
		{"ref without to", `
collections:
  contacts:
    fields:
      account: {type: ref}`, []string{`collection "contacts", field "account"`, "ref needs to"}},
		{"to on a string", `
collections:
  contacts:
    fields:
      account: {type: string, to: contacts}`, []string{`collection "contacts", field "account"`, "to is only allowed on ref"}},
		{"values on a string", `
collections:
  contacts:
    fields:
      name: {type: string, values: [a]}`, []string{`collection "contacts", field "name"`, "values is only allowed on enum"}},
		{"field name with capital", `
collections:
  contacts:
    fields:
      First: {type: string}`, []string{`collection "contacts", field "First"`, "bad name"}},
		{"field name starting with digit", `
collections:
  contacts:
    fields:
      1a: {type: string}`, []string{`collection "contacts", field "1a"`, "bad name"}},
		{"field name with dash", `
collections:
  contacts:
    fields:
      a-b: {type: string}`, []string{`collection "contacts", field "a-b"`, "bad name"}},
		{"empty field name", `
collections:
  contacts:
    fields:
      "": {type: string}`, []string{`collection "contacts", field ""`, "bad name"}},
		{"field name too long", `
collections:
  contacts:
    fields:
      ` + strings.Repeat("a", 64) + `: {type: string}`, []string{`collection "contacts", field "aaaa`, "bad name"}},
		{"collection name with capital", `
collections:
  Contacts:
    fields:
      a: {type: string}`, []string{`collection "Contacts"`, "bad name"}},
		{"collection without fields", `
collections:
  contacts:
    fields: {}`, []string{`collection "contacts": needs at least one field`}},
		{"null collection", `
collections:
  contacts:`, []string{`collection "contacts": needs at least one field`}},
		{"null field", `
collections:
  contacts:
    fields:
      a:`, []string{`collection "contacts", field "a": missing definition`}},
		{"bad field policy", `
collections:
  contacts:
    fields:
      a: {type: string, policy: oldest}`, []string{`collection "contacts", field "a"`, `unknown policy "oldest"`}},
		{"bad collection policy", `
collections:
  contacts:
    policy: random
    fields:
      a: {type: string}`, []string{`collection "contacts"`, `unknown policy "random"`}},
		{"required not a bool", `
collections:
  contacts:
    fields:
      a: {type: string, required: maybe}`, []string{`collection "contacts", field "a"`, "required must be true or false"}},
		{"values not a list", `
collections:
  contacts:
    fields:
      a: {type: enum, values: lead}`, []string{`collection "contacts", field "a"`, "values must be a list"}},
		{"values item not a scalar", `
collections:
  contacts:
    fields:
      a: {type: enum, values: [[a]]}`, []string{`collection "contacts", field "a"`, "values must be a list"}},
		{"type not a string", `
collections:
  contacts:
    fields:
      a: {type: [string]}`, []string{`collection "contacts", field "a"`, "type must be a string"}},
		{"field not a mapping", `
collections:
  contacts:
    fields:
      a: string`, []string{`collection "contacts", field "a"`, "want a mapping"}},
		{"duplicate field", `
collections:
  contacts:
    fields:
      a: {type: string}
      a: {type: number}`, []string{`collection "contacts", fields`, `duplicate key "a"`}},
		{"duplicate key in field", `
collections:
  contacts:
    fields:
      a: {type: string, type: number}`, []string{`collection "contacts", field "a"`, `duplicate key "type"`}},
		{"alias", `
collections:
  contacts:
    fields:
      a: &def {type: string}
      b: *def`, []string{`collection "contacts", field`, "aliases are not supported"}},
		{"missing collections", `{}`, []string{"missing key collections"}},
		{"empty document", ``, []string{"empty document"}},
		{"comment only", "# nothing\n", []string{"empty document"}},
		{"two documents", "collections: {}\n---\ncollections: {}\n", []string{"more than one YAML document"}},
		{"not a mapping", `[1, 2]`, []string{"want a mapping"}},
		{"syntax error", "collections: {a: [}\n", []string{"yaml:"}},
		{"JSON unknown key", `{"collections": {"contacts": {"fields": {"a": {"type": "string", "uniq": true}}}}}`,
			[]string{`collection "contacts", field "a"`, `unknown key "uniq"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse([]byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", s)
			}
			if !errors.Is(err, ErrInvalidSchema) {
				t.Errorf("error does not wrap ErrInvalidSchema: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	s := &Schema{Collections: map[string]*Collection{
		"contacts": {Fields: map[string]*Field{
			"stage": {Type: TypeEnum},
			"Bad":   {Type: TypeString},
			"acct":  {Type: TypeRef, To: "nowhere"},
		}},
	}}
	err := s.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	for _, w := range []string{
		`collection "contacts", field "stage": enum needs at least one value`,
		`collection "contacts", field "Bad": bad name`,
		`collection "contacts", field "acct": ref to unknown collection "nowhere"`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if s.Collections["contacts"].Name != "contacts" {
		t.Errorf("Validate did not fill in Name")
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name, src string
	}{
		{"empty collections", "collections: {}\n"},
		{"yaml 1.1 bools", "collections: {a: {fields: {b: {type: string, required: yes, unique: no}}}}"},
		{"numeric enum values", "collections: {a: {fields: {p: {type: enum, values: [1, 2, 3]}}}}"},
		{"null optional keys", "collections: {a: {policy: ~, fields: {b: {type: string, to: ~, values: ~, policy: ~}}}}"},
		{"max length name", "collections: {a: {fields: {" + strings.Repeat("b", 63) + ": {type: string}}}}"},
		{"trailing document marker", "collections: {a: {fields: {b: {type: bool}}}}\n---\n"},
		{"self ref", "collections: {people: {fields: {manager: {type: ref, to: people}}}}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.src)
			y, err := s.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if back := mustParse(t, string(y)); !reflect.DeepEqual(back, s) {
				t.Errorf("round trip differs:\n%s", y)
			}
		})
	}
}

func TestCollectionLookup(t *testing.T) {
	s := mustParse(t, testSchema)
	if _, err := s.Collection("contacts"); err != nil {
		t.Errorf("Collection(contacts): %v", err)
	}
	_, err := s.Collection("foo")
	if !errors.Is(err, ErrUnknownCollection) || err.Error() != `unknown collection "foo"` {
		t.Errorf("Collection(foo) error = %v", err)
	}
	var nilSchema *Schema
	if _, err := nilSchema.Collection("a"); !errors.Is(err, ErrUnknownCollection) {
		t.Errorf("nil schema: %v", err)
	}
}

func TestClone(t *testing.T) {
	s := mustParse(t, testSchema)
	c := s.Clone()
	if !reflect.DeepEqual(s, c) {
		t.Fatal("clone differs")
	}
	c.Collections["contacts"].Fields["stage"].Values[0] = "changed"
	c.Collections["contacts"].Fields["new"] = &Field{Type: TypeBool}
	c.Collections["contacts"].Policy = "manual"
	delete(c.Collections, "accounts")
	if s.Collections["contacts"].Fields["stage"].Values[0] != "lead" ||
		s.Collections["contacts"].Fields["new"] != nil ||
		s.Collections["contacts"].Policy != "" ||
		s.Collections["accounts"] == nil {
		t.Error("changing the clone changed the original")
	}
	var nilSchema *Schema
	if nilSchema.Clone() != nil {
		t.Error("nil.Clone() != nil")
	}
}
