package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/schema"
)

// printJSON is the one JSON formatter of every read command.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// printRecord renders one record as text; conflicted fields are marked with
// "!" and their candidates listed under them.
func printRecord(w io.Writer, r node.RecordJSON) {
	fmt.Fprintf(w, "%s/%s  (updated %s by %s)\n", r.Collection, r.ID, r.UpdatedAt.Format(time.RFC3339), shortID(r.UpdatedBy))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	names := map[string]bool{}
	for k := range r.Fields {
		names[k] = true
	}
	for k := range r.Conflicts {
		names[k] = true
	}
	for _, k := range sortedKeys(names) {
		mark := " "
		if len(r.Conflicts[k]) > 0 {
			mark = "!"
		}
		fmt.Fprintf(tw, "%s %s\t%s\n", mark, k, schema.FormatText(r.Fields[k]))
		for i, c := range r.Conflicts[k] {
			fmt.Fprintf(tw, "    candidate %d\t%s\t(%s by %s)\n", i+1, schema.FormatText(c.Value), c.At.Format(time.RFC3339), shortID(c.Writer))
		}
	}
	tw.Flush()
}

// recordLine renders a record on one line: id, then field=value pairs.
func recordLine(r node.RecordJSON) string {
	var b strings.Builder
	b.WriteString(r.ID)
	for _, k := range sortedKeys(r.Fields) {
		fmt.Fprintf(&b, "  %s=%s", k, quoteIfNeeded(schema.FormatText(r.Fields[k])))
		if len(r.Conflicts[k]) > 0 {
			b.WriteString("(!)")
		}
	}
	return b.String()
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// shortID abbreviates a peer id for text output.
func shortID(id string) string {
	if len(id) > 12 {
		return "…" + id[len(id)-8:]
	}
	return id
}
