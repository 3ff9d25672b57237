package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckAdditive(t *testing.T) {
	const base = `
collections:
  contacts:
    policy: newest
    fields:
      last_name: {type: string, required: true}
      email:     {type: string, unique: true}
      phone:     {type: string}
      stage:     {type: enum, values: [lead, qualified, won, lost]}
      account:   {type: ref, to: accounts}
  accounts:
    fields:
      name: {type: string}
  teams:
    fields:
      name: {type: string}
`
	old := mustParse(t, base)
	tests := []struct {
		name string
		new  string
		want []string // every change the error must list; nil means allowed
	}{
		{"unchanged", base, nil},
		{"new collection, field and enum value, policy change", `
collections:
  contacts:
    policy: manual
    fields:
      last_name: {type: string, required: true, policy: office}
      email:     {type: string, unique: true}
      phone:     {type: string}
      stage:     {type: enum, values: [lead, qualified, won, lost, dormant]}
      account:   {type: ref, to: accounts}
      notes:     {type: string}
      score:     {type: number, required: true}
  accounts:
    fields:
      name: {type: string}
  teams:
    fields:
      name: {type: string}
  deals:
    fields:
      title: {type: string}
`, nil},
		{"everything destructive", `
collections:
  contacts:
    fields:
      last_name: {type: string}
      email:     {type: number}
      stage:     {type: enum, values: [lead, won]}
      account:   {type: ref, to: teams}
  accounts:
    fields:
      name: {type: string, unique: true}
  teams:
    fields:
      name: {type: string}
`, []string{
			"accounts.name: unique false -> true",
			"contacts.account: to accounts -> teams",
			"contacts.email: type string -> number",
			"contacts.last_name: required true -> false",
			"contacts.phone: field removed",
			"contacts.stage: enum values qualified, lost removed",
		}},
		{"collection removed", `
collections:
  contacts:
    fields:
      last_name: {type: string, required: true}
      email:     {type: string, unique: true}
      phone:     {type: string}
      stage:     {type: enum, values: [lead, qualified, won, lost]}
      account:   {type: ref, to: accounts}
  accounts:
    fields:
      name: {type: string}
`, []string{"teams: collection removed"}},
		{"enum value reordered", `
collections:
  contacts:
    fields:
      last_name: {type: string, required: true}
      email:     {type: string, unique: true}
      phone:     {type: string}
      stage:     {type: enum, values: [qualified, lead, won, lost]}
      account:   {type: ref, to: accounts}
  accounts:
    fields:
      name: {type: string}
  teams:
    fields:
      name: {type: string}
`, []string{"contacts.stage: enum values reordered"}},
		{"enum value inserted", `
collections:
  contacts:
    fields:
      last_name: {type: string, required: true}
      email:     {type: string, unique: true}
      phone:     {type: string}
      stage:     {type: enum, values: [lead, new, qualified, won, lost]}
      account:   {type: ref, to: accounts}
  accounts:
    fields:
      name: {type: string}
  teams:
    fields:
      name: {type: string}
`, []string{"contacts.stage: enum values reordered"}},
		{"one enum value removed", `
collections:
  contacts:
    fields:
      last_name: {type: string, required: true}
      email:     {type: string, unique: true}
      phone:     {type: string}
      stage:     {type: enum, values: [lead, qualified, won]}
      account:   {type: ref, to: accounts}
  accounts:
    fields:
      name: {type: string}
  teams:
    fields:
      name: {type: string}
`, []string{"contacts.stage: enum value lost removed"}},
		{"enum became string", `
collections:
  contacts:
    fields:
      last_name: {type: string, required: true}
      email:     {type: string, unique: true}
      phone:     {type: string}
      stage:     {type: string}
      account:   {type: ref, to: accounts}
  accounts:
    fields:
      name: {type: string}
  teams:
    fields:
      name: {type: string}
`, []string{"contacts.stage: type enum -> string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckAdditive(old, mustParse(t, tt.new))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckAdditive: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckAdditive succeeded, want a destructive change error")
			}
			if !errors.Is(err, ErrDestructiveChange) {
				t.Errorf("error does not wrap ErrDestructiveChange: %v", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "destructive schema change refused: ") {
				t.Errorf("error %q lacks the prefix", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not list %q", msg, w)
				}
			}
			if n := strings.Count(msg, "; ") + 1; n != len(tt.want) {
				t.Errorf("error lists %d changes, want %d: %q", n, len(tt.want), msg)
			}
		})
	}
}

func TestCheckAdditiveExactMessage(t *testing.T) {
	old := mustParse(t, `collections: {contacts: {fields: {email: {type: string}, phone: {type: string}, name: {type: string}}}}`)
	new := mustParse(t, `collections: {contacts: {fields: {email: {type: number}, name: {type: string}}}}`)
	const want = "destructive schema change refused: contacts.email: type string -> number; contacts.phone: field removed"
	if err := CheckAdditive(old, new); err == nil || err.Error() != want {
		t.Errorf("CheckAdditive = %v, want %q", err, want)
	}
}

func TestCheckAdditiveEmptyOld(t *testing.T) {
	s := mustParse(t, testSchema)
	for name, old := range map[string]*Schema{"nil": nil, "empty": {}, "no collections": {Collections: map[string]*Collection{}}} {
		if err := CheckAdditive(old, s); err != nil {
			t.Errorf("%s old: %v", name, err)
		}
	}
	if err := CheckAdditive(nil, nil); err != nil {
		t.Errorf("nil to nil: %v", err)
	}
	err := CheckAdditive(s, nil)
	if !errors.Is(err, ErrDestructiveChange) ||
		!strings.Contains(err.Error(), "accounts: collection removed") ||
		!strings.Contains(err.Error(), "contacts: collection removed") {
		t.Errorf("to nil: %v", err)
	}
}
