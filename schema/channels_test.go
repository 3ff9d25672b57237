package schema

import (
	"errors"
	"strings"
	"testing"
)

const routedSchema = `
collections:
  contacts:
    channel: {field: territory}
    fields:
      last_name: {type: string}
      territory: {type: string}
  deals:
    channel: {field: region, default: head-office}
    fields:
      region: {type: enum, values: [east, west]}
`

func TestRouting(t *testing.T) {
	s, err := Parse([]byte(routedSchema))
	if err != nil {
		t.Fatal(err)
	}
	contacts, deals := s.Collections["contacts"], s.Collections["deals"]
	for _, tc := range []struct {
		c      *Collection
		values map[string]any
		want   string
		err    string
	}{
		{contacts, map[string]any{"territory": "east"}, "east", ""},
		{contacts, map[string]any{"territory": "north-2"}, "north-2", ""},
		{contacts, map[string]any{"last_name": "Doe"}, DefaultChannel, ""},
		{contacts, map[string]any{"territory": ""}, DefaultChannel, ""},
		{contacts, map[string]any{"territory": nil}, DefaultChannel, ""},
		{contacts, map[string]any{"territory": "East"}, "", "bad channel name"},
		{contacts, map[string]any{"territory": "a/b"}, "", "bad channel name"},
		{contacts, map[string]any{"territory": "_members"}, "", "bad channel name"},
		{contacts, map[string]any{"territory": 3.0}, "", "not a channel name"},
		{deals, map[string]any{}, "head-office", ""},
		{deals, map[string]any{"region": "west"}, "west", ""},
	} {
		got, err := tc.c.ChannelOf(tc.values)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %v: err %v, want %q", tc.c.Name, tc.values, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %v: %q %v, want %q", tc.c.Name, tc.values, got, err, tc.want)
		}
	}
	if ch, err := (&Collection{Name: "x"}).ChannelOf(map[string]any{"territory": "east"}); ch != "" || err != nil {
		t.Errorf("unrouted collection: %q %v", ch, err)
	}
	// Rendered and parsed again, unchanged; cloned, unchanged.
	text, err := s.YAML()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if *again.Collections["deals"].Channel != *deals.Channel || *again.Collections["contacts"].Channel != *contacts.Channel {
		t.Errorf("rendered and parsed: %s", text)
	}
	c := s.Clone()
	c.Collections["deals"].Channel.Default = "other"
	if deals.Channel.Default != "head-office" {
		t.Error("changing the clone changed the original")
	}
}

func TestRoutingProblems(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"channel: {field: nope}\n    fields: {a: {type: string}}", `unknown field "nope"`},
		{"channel: {field: n}\n    fields: {n: {type: number}}", "a channel is named by a string or enum field"},
		{"channel: {field: r}\n    fields: {r: {type: enum, values: [East, west]}}", `bad channel name "East"`},
		{"channel: {field: r, default: No Where}\n    fields: {r: {type: string}}", `default: bad channel name "No Where"`},
		{"channel: {default: x}\n    fields: {r: {type: string}}", "field: name the field"},
		{"channel: [r]\n    fields: {r: {type: string}}", "must be a mapping"},
		{"channel: {field: r, other: 1}\n    fields: {r: {type: string}}", "other"},
	} {
		_, err := Parse([]byte("collections:\n  c:\n    " + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.yaml, err, tc.want)
		}
	}
	// The short form names the field.
	s, err := Parse([]byte("collections:\n  c:\n    channel: r\n    fields: {r: {type: string}}\n"))
	if err != nil || s.Collections["c"].Channel.Field != "r" {
		t.Fatalf("short form: %v", err)
	}
}

func TestRoutingChangesAreDestructive(t *testing.T) {
	plain := "collections:\n  c:\n    fields: {r: {type: string}, s: {type: string}}\n"
	byR := "collections:\n  c:\n    channel: {field: r}\n    fields: {r: {type: string}, s: {type: string}}\n"
	byS := "collections:\n  c:\n    channel: {field: s}\n    fields: {r: {type: string}, s: {type: string}}\n"
	parse := func(y string) *Schema {
		s, err := Parse([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct{ from, to, want string }{
		{plain, byR, "routing added"},
		{byR, plain, "routing by \"r\" removed"},
		{byR, byS, "routing changed"},
	} {
		err := CheckAdditive(parse(tc.from), parse(tc.to))
		if !errors.Is(err, ErrDestructiveChange) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v", tc.want, err)
		}
	}
	if err := CheckAdditive(parse(byR), parse(byR)); err != nil {
		t.Errorf("same routing: %v", err)
	}
	if err := CheckAdditive(nil, parse(byR)); err != nil {
		t.Errorf("new routed collection: %v", err)
	}
}
