package gui

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// funcs are the templates' helpers: values and times in plain words.
var funcs = template.FuncMap{
	"when":    when,
	"ago":     ago,
	"value":   value,
	"short":   short,
	"who":     who,
	"path":    url.PathEscape,
	"query":   url.QueryEscape,
	"plural":  plural,
	"comma":   func(n int) string { return humanize.Comma(int64(n)) },
	"bytes":   func(n int64) string { return humanize.IBytes(uint64(max(n, 0))) },
	"percent": func(a, b int) int { return a * 100 / max(b, 1) },
	"add":     func(a, b int) int { return a + b },
	"ops":     func(c []candidateView) string { return joinOps(c) },
	"deref":   func(b *bool) bool { return b != nil && *b },
	"dict":    dict,
	"join":    func(l []string) string { return strings.Join(l, ", ") },
}

// dict makes a map of key, value pairs (to hand a template several values).
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, fmt.Errorf("dict: odd number of arguments")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// now is the clock of the page (tests may set it).
var now = time.Now

// when is a time as people read it: "today 10:42", "yesterday 18:03",
// "3 May 2024 10:42", or "never".
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	t = t.Local()
	n := now().Local()
	y1, m1, d1 := t.Date()
	y2, m2, d2 := n.Date()
	switch {
	case y1 == y2 && m1 == m2 && d1 == d2:
		return "today " + t.Format("15:04")
	case t.Add(24*time.Hour).Format("2006-01-02") == n.Format("2006-01-02"):
		return "yesterday " + t.Format("15:04")
	}
	return t.Format("2 Jan 2006 15:04")
}

// ago is how long ago t was, in words ("3 minutes ago").
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return humanize.RelTime(t, now(), "ago", "from now")
}

// value is a field's value as text ("—" for none).
func value(v any) string {
	switch x := v.(type) {
	case nil:
		return "—"
	case string:
		return x
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case float64, json.Number, int, int64:
		return fmt.Sprint(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// short is a peer id cut to its last 8 characters, enough to tell peers
// apart on a page.
func short(id string) string {
	if len(id) <= 12 {
		return id
	}
	return "…" + id[len(id)-8:]
}

// who is a writer's name, or its short id.
func who(name, id string) string {
	if name != "" {
		return name
	}
	if id == "" {
		return "—"
	}
	return short(id)
}

// plural is "1 edit", "3 edits".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return humanize.Comma(int64(n)) + " " + many
}

func joinOps(cs []candidateView) string {
	ops := make([]string, len(cs))
	for i, c := range cs {
		ops[i] = c.Op
	}
	return strings.Join(ops, ",")
}
