package crdt

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
)

// describeStore renders everything a person can see of a store: records
// with candidates, conflicts, history of every contacts record, ignored
// ops, members. Shared verbatim by the format-1 fixture generator and the
// migration test.
func describeStore(t *testing.T, r *replica, skip func(HistoryEntry) bool) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for _, coll := range []string{"contacts", "prices", MembersCollection} {
		fmt.Fprintf(&b, "== %s\n%s\n", coll, dump(t, r, coll))
	}
	b.WriteString("== conflicts\n")
	err := r.Conflicts(ctx, []string{"contacts"}, func(c Conflict) error {
		fmt.Fprintf(&b, "%s/%s %s policy=%s open=%t:", c.Collection, c.ID, c.Field, c.Policy, c.Open)
		for _, cand := range c.Candidates {
			fmt.Fprintf(&b, " [%s %s %v del=%t]", cand.Op, cand.Field, cand.Value, cand.Deleted)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("== history\n")
	var ids []string
	err = r.listFolded(ctx, "contacts", func(rec *Record, _ bool) error {
		ids = append(ids, rec.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, "gone")
	for _, id := range ids {
		h, err := r.History(ctx, "contacts", id, "")
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, e := range h {
			if skip != nil && skip(e) {
				continue
			}
			sup := append([]string(nil), e.Supersedes...)
			sort.Strings(sup)
			lines = append(lines, fmt.Sprintf("%s %s %s=%v sup=%v seen=%v visible=%t local=%t", id, e.Op, e.Field, e.Value, sup, e.Seen, e.Visible, e.Local))
		}
		sort.Strings(lines)
		b.WriteString(strings.Join(lines, "\n") + "\n")
	}
	b.WriteString("== ignored\n")
	ig, err := r.Ignored(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, o := range ig {
		lines = append(lines, fmt.Sprintf("%s/%s %s %s %s", o.Collection, o.ID, o.Field, o.Op, o.Reason))
	}
	sort.Strings(lines)
	b.WriteString(strings.Join(lines, "\n") + "\n")
	return b.String()
}
