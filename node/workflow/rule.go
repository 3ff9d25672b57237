// Package workflow runs an office's workflows (docs/workflows.md): rules
// that act on every merged change of a collection that matches a
// condition, by running a command or posting to a URL, once per change
// however late it arrived, with retries, and a durable record of what ran.
package workflow

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/crdt"
)

// Rule is one workflow: on a change of Collection whose event is one of
// Events (default all) and whose new values meet every condition of When,
// run Command (the change as JSON on stdin) or POST it to URL.
type Rule struct {
	Name       string
	Collection string
	// When are conditions, all of which must hold: "FIELD = VALUE",
	// "FIELD != VALUE", "FIELD > NUMBER", "FIELD < NUMBER" (on the values
	// after the change), "FIELD changed" (the change gave it another
	// value), "FIELD set", "FIELD empty".
	When []string
	// Events: create, update, delete (default: all three).
	Events  []string
	Command []string
	URL     string
	// Timeout bounds one attempt (default 30s).
	Timeout time.Duration
	// Office names the office node that runs the rule (default: the office
	// with the smallest peer id).
	Office string
	// Attempts is how many times a change is tried before it is listed as
	// failed (default 8; the waits between grow from 1s to 5 min).
	Attempts int

	conds []cond
}

type cond struct {
	field, op, value string
	num              float64
}

var ruleName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

const (
	defaultTimeout  = 30 * time.Second
	defaultAttempts = 8
)

// Validate checks a rule and fills in its defaults; errors name the rule.
func (r *Rule) Validate() error {
	where := fmt.Sprintf("workflow %q", r.Name)
	if !ruleName.MatchString(r.Name) {
		return fmt.Errorf("%s: name: want lowercase letters, digits, - or _ (up to 63)", where)
	}
	if r.Collection == "" || strings.HasPrefix(r.Collection, "_") || strings.Contains(r.Collection, "/") {
		return fmt.Errorf("%s: collection: give a collection of the schema", where)
	}
	if (len(r.Command) > 0) == (r.URL != "") {
		return fmt.Errorf("%s: give either a command or a url", where)
	}
	if r.URL != "" && !strings.HasPrefix(r.URL, "http://") && !strings.HasPrefix(r.URL, "https://") {
		return fmt.Errorf("%s: url %q: want http:// or https://", where, r.URL)
	}
	if r.Timeout < 0 {
		return fmt.Errorf("%s: timeout must be positive", where)
	}
	if r.Timeout == 0 {
		r.Timeout = defaultTimeout
	}
	if r.Attempts < 0 || r.Attempts > 100 {
		return fmt.Errorf("%s: attempts %d: want 1 to 100", where, r.Attempts)
	}
	if r.Attempts == 0 {
		r.Attempts = defaultAttempts
	}
	for _, e := range r.Events {
		if !slices.Contains([]string{crdt.EventCreate, crdt.EventUpdate, crdt.EventDelete}, e) {
			return fmt.Errorf("%s: events: unknown event %q (want create, update or delete)", where, e)
		}
	}
	r.conds = nil
	for _, w := range r.When {
		c, err := parseCond(w)
		if err != nil {
			return fmt.Errorf("%s: when %q: %w", where, w, err)
		}
		r.conds = append(r.conds, c)
	}
	return nil
}

// ValidateRules validates rules and checks that names are unique.
func ValidateRules(rules []Rule) error {
	seen := map[string]bool{}
	for i := range rules {
		if err := rules[i].Validate(); err != nil {
			return err
		}
		if seen[rules[i].Name] {
			return fmt.Errorf("workflow %q: defined twice", rules[i].Name)
		}
		seen[rules[i].Name] = true
	}
	return nil
}

func parseCond(s string) (cond, error) {
	f := strings.Fields(s)
	if len(f) == 2 {
		switch f[1] {
		case "changed", "set", "empty":
			return cond{field: f[0], op: f[1]}, nil
		}
	}
	for _, op := range []string{"!=", "=", ">", "<"} {
		field, value, ok := strings.Cut(s, op)
		if !ok {
			continue
		}
		c := cond{field: strings.TrimSpace(field), op: op, value: strings.TrimSpace(value)}
		if c.field == "" || strings.ContainsAny(c.field, " \t") {
			return cond{}, errors.New("want FIELD = VALUE, FIELD != VALUE, FIELD > N, FIELD < N, FIELD changed, FIELD set or FIELD empty")
		}
		if op == ">" || op == "<" {
			n, err := strconv.ParseFloat(c.value, 64)
			if err != nil {
				return cond{}, fmt.Errorf("%s needs a number, not %q", op, c.value)
			}
			c.num = n
		}
		return c, nil
	}
	return cond{}, errors.New("want FIELD = VALUE, FIELD != VALUE, FIELD > N, FIELD < N, FIELD changed, FIELD set or FIELD empty")
}

// Matches reports whether the rule fires on a change.
func (r *Rule) Matches(ch *crdt.Change) bool {
	if ch.Collection != r.Collection {
		return false
	}
	if len(r.Events) > 0 && !slices.Contains(r.Events, ch.Event) {
		return false
	}
	for _, c := range r.conds {
		v, set := ch.After[c.field]
		switch c.op {
		case "changed":
			if !slices.Contains(ch.Changed, c.field) {
				return false
			}
		case "set":
			if !set {
				return false
			}
		case "empty":
			if set {
				return false
			}
		case "=", "!=":
			eq := set && text(v) == c.value
			if eq != (c.op == "=") {
				return false
			}
		case ">", "<":
			n, ok := v.(float64)
			if !ok || c.op == ">" && !(n > c.num) || c.op == "<" && !(n < c.num) {
				return false
			}
		}
	}
	return true
}

// text renders a value as a condition compares it.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}
