package workflow

import (
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/crdt"
)

func TestRuleValidateAndMatch(t *testing.T) {
	for _, tc := range []struct {
		r   Rule
		err string
	}{
		{Rule{Name: "Bad Name", Collection: "c", Command: []string{"x"}}, "name:"},
		{Rule{Name: "a", Collection: "", Command: []string{"x"}}, "collection"},
		{Rule{Name: "a", Collection: "c"}, "either a command or a url"},
		{Rule{Name: "a", Collection: "c", Command: []string{"x"}, URL: "http://x"}, "either a command or a url"},
		{Rule{Name: "a", Collection: "c", URL: "ftp://x"}, "want http://"},
		{Rule{Name: "a", Collection: "c", URL: "http://x", When: []string{"stage ~ won"}}, `when "stage ~ won"`},
		{Rule{Name: "a", Collection: "c", URL: "http://x", When: []string{"amount > lots"}}, "needs a number"},
		{Rule{Name: "a", Collection: "c", URL: "http://x", Events: []string{"merge"}}, `unknown event "merge"`},
	} {
		if err := tc.r.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: got %v, want %q", tc.r, err, tc.err)
		}
	}
	if err := ValidateRules([]Rule{{Name: "a", Collection: "c", URL: "http://x"}, {Name: "a", Collection: "d", URL: "http://x"}}); err == nil {
		t.Error("a rule defined twice is accepted")
	}
	r := Rule{Name: "won", Collection: "deals", URL: "http://x", When: []string{"stage = won", "stage changed", "amount > 100"}, Events: []string{"update", "create"}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Timeout != defaultTimeout || r.Attempts != defaultAttempts {
		t.Errorf("defaults not filled: %+v", r)
	}
	ch := func(ev string, after map[string]any, changed ...string) *crdt.Change {
		return &crdt.Change{Collection: "deals", Event: ev, After: after, Changed: changed}
	}
	for i, tc := range []struct {
		ch   *crdt.Change
		want bool
	}{
		{ch("update", map[string]any{"stage": "won", "amount": 200.0}, "stage"), true},
		{ch("create", map[string]any{"stage": "won", "amount": 200.0}, "stage", "amount"), true},
		{ch("update", map[string]any{"stage": "won", "amount": 200.0}, "amount"), false}, // stage did not change
		{ch("update", map[string]any{"stage": "lost", "amount": 200.0}, "stage"), false},
		{ch("update", map[string]any{"stage": "won", "amount": 50.0}, "stage"), false},
		{ch("update", map[string]any{"stage": "won"}, "stage"), false},
		{ch("delete", nil), false},
		{&crdt.Change{Collection: "other", Event: "update", After: map[string]any{"stage": "won", "amount": 200.0}, Changed: []string{"stage"}}, false},
	} {
		if got := r.Matches(tc.ch); got != tc.want {
			t.Errorf("%d: %+v matches = %v, want %v", i, tc.ch, got, tc.want)
		}
	}
	empty := Rule{Name: "e", Collection: "deals", URL: "http://x", When: []string{"email empty", "stage != won"}}
	if err := empty.Validate(); err != nil {
		t.Fatal(err)
	}
	if !empty.Matches(ch("create", map[string]any{"stage": "lead"})) || empty.Matches(ch("create", map[string]any{"email": "x"})) {
		t.Error("empty / != conditions")
	}
}
