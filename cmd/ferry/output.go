package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
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
// "!" and their candidates listed under them (the one shown first).
func printRecord(w io.Writer, r apijson.Record) {
	fmt.Fprintf(w, "%s/%s  (updated %s by %s)\n", r.Collection, r.ID, r.UpdatedAt.Format(time.RFC3339), writerName(r.UpdatedBy, r.UpdatedByName))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	names := map[string]bool{}
	for k := range r.Fields {
		names[k] = true
	}
	for k := range r.Conflicts {
		if k != crdt.RecordField {
			names[k] = true
		}
	}
	for _, k := range sortedKeys(names) {
		c, conflicted := r.Conflicts[k]
		mark := " "
		if conflicted {
			mark = "!"
		}
		fmt.Fprintf(tw, "%s %s\t%s\n", mark, k, schema.FormatText(r.Fields[k]))
		if conflicted {
			fmt.Fprintf(tw, "    %s\n", conflictState(c.Policy, c.Open))
			printCandidates(tw, c.Candidates)
		}
	}
	if c, ok := r.Conflicts[crdt.RecordField]; ok {
		fmt.Fprintf(tw, "! (record)\tedited and deleted concurrently: %s\n", conflictState(c.Policy, c.Open))
		printCandidates(tw, c.Candidates)
	}
	tw.Flush()
}

// conflictState says how a conflict stands.
func conflictState(policy string, open bool) string {
	if open {
		return "conflict open (policy " + policy + "): resolve with ferry resolve"
	}
	return "conflict decided by policy " + policy
}

func printCandidates(w io.Writer, cands []apijson.Candidate) {
	for _, c := range cands {
		shown := " "
		if c.N == 1 {
			shown = "*"
		}
		fmt.Fprintf(w, "   %s%d\t%s\t%s by %s\n", shown, c.N, candidateText(c), c.At.Format(time.RFC3339), writerName(c.Writer, c.WriterName))
	}
}

// candidateText renders a candidate's value (or what a record candidate did).
func candidateText(c apijson.Candidate) string {
	switch {
	case c.Deleted:
		return "(deleted the record)"
	case c.Field != "":
		return fmt.Sprintf("(edited %s = %s)", c.Field, quoteIfNeeded(schema.FormatText(c.Value)))
	}
	return quoteIfNeeded(schema.FormatText(c.Value))
}

// writerName renders a writer as "name (…short id)", or the short id.
func writerName(id, name string) string {
	if name == "" {
		return shortID(id)
	}
	return name + " (" + shortID(id) + ")"
}

// recordLine renders a record on one line: id, then field=value pairs.
func recordLine(r apijson.Record) string {
	var b strings.Builder
	b.WriteString(r.ID)
	for _, k := range sortedKeys(r.Fields) {
		fmt.Fprintf(&b, "  %s=%s", k, quoteIfNeeded(schema.FormatText(r.Fields[k])))
		if _, ok := r.Conflicts[k]; ok {
			b.WriteString("(!)")
		}
	}
	if _, ok := r.Conflicts[crdt.RecordField]; ok {
		b.WriteString("  (!record conflict)")
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
