package crdt

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const dupSchema = `
collections:
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      email:      {type: string, unique: true}
      phone:      {type: string}
      city:       {type: string}
    duplicates:
      - {fields: [phone], normalize: phone}
      - {fields: [first_name, last_name]}
  deals:
    fields:
      title:   {type: string, required: true}
      contact: {type: ref, to: contacts}
`

func dupGroups(t *testing.T, r *replica) []string {
	t.Helper()
	var out []string
	err := r.Duplicates(context.Background(), nil, func(g DuplicateGroup) error {
		if g.Since == 0 {
			t.Errorf("group %v has no since", g)
		}
		out = append(out, g.Collection+":"+g.Rule.Name()+":"+strings.Join(g.IDs, ","))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Two replicas offline create the same customer (email differing in case
// and spaces, phone in punctuation): once merged, both list the duplicate;
// a merge on one resolves it on both, repointing refs.
func TestDuplicatesAfterMergeAndMergeRecords(t *testing.T) {
	n := newTestNetWithSchema(t, 2, dupSchema)
	a, b := n.replicas[0], n.replicas[1]
	ctx := context.Background()
	n.setOnline(0, false)
	n.setOnline(1, false)
	a.clock.Set(epoch.Add(time.Hour))
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Doe", "first_name": "Ann", "email": "Ann@X.com", "phone": "+1 (555) 0100"})
	mustPut(t, a, "deals", "d1", map[string]any{"title": "Big", "contact": "c1"})
	b.clock.Set(epoch.Add(2 * time.Hour))
	mustPut(t, b, "contacts", "c2", map[string]any{"last_name": "Roe", "email": " ann@x.com", "phone": "+1 555 0100", "city": "Oslo"})
	mustPut(t, b, "deals", "d2", map[string]any{"title": "Small", "contact": "c2"})
	for _, r := range n.all() {
		if g := dupGroups(t, r); len(g) != 0 {
			t.Fatalf("%s: duplicates before merge: %v", r.writer, g)
		}
	}
	n.setOnline(0, true)
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
	want := []string{"contacts:phone:c1,c2", "contacts:email:c1,c2"}
	for _, r := range n.all() {
		if g := dupGroups(t, r); !slices.Equal(g, want) {
			t.Fatalf("%s: duplicates %v, want %v", r.writer, g, want)
		}
	}
	// A likely duplicate is refused where it is written.
	err := a.CheckDuplicate(ctx, "contacts", "c3", nil, map[string]string{"last_name": "X", "phone": "+15550100"})
	var de *DuplicateError
	if !errors.As(err, &de) || len(de.Matches) != 1 || de.Matches[0].ID != "c1" || !strings.Contains(err.Error(), "same phone") {
		t.Fatalf("CheckDuplicate = %v", err)
	}
	if err := a.CheckDuplicate(ctx, "contacts", "c3", nil, map[string]string{"last_name": "Doe", "first_name": " ann "}); err == nil {
		t.Fatal("same first and last name not refused")
	}
	if err := a.CheckDuplicate(ctx, "contacts", "c1", nil, map[string]string{"city": "Bergen"}); err == nil || !strings.Contains(err.Error(), "contacts/c2") {
		t.Fatalf("an edit of a duplicate keeps it a duplicate: %v", err)
	}
	if err := a.CheckDuplicate(ctx, "contacts", "c3", nil, map[string]string{"last_name": "Doe", "phone": "555"}); err != nil {
		t.Fatalf("not a duplicate: %v", err)
	}
	// An import refuses it too, also within the import.
	_, err = a.ImportWith(ctx, "contacts", []ImportRecord{{Line: 1, ID: "i1", Fields: map[string]any{"last_name": "Z", "phone": "1 2"}},
		{Line: 2, ID: "i2", Fields: map[string]any{"last_name": "Y", "phone": "12"}}}, ImportOptions{RefuseDuplicates: true}, nil)
	if !errors.As(err, &de) || de.ID != "i2" {
		t.Fatalf("import of duplicates = %v", err)
	}
	if _, err := a.Get(ctx, "contacts", "i1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused import wrote i1: %v", err)
	}

	res, err := a.MergeRecords(ctx, "contacts", "c1", "c2", false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Fields, []string{"city", "email", "last_name", "phone"}) || !slices.Equal(res.Refs, []string{"deals/d2"}) {
		t.Fatalf("merge result %+v", res)
	}
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		if g := dupGroups(t, r); len(g) != 0 {
			t.Fatalf("%s: duplicates after the merge: %v", r.writer, g)
		}
		c1 := mustGet(t, r, "contacts", "c1").Values()
		if c1["last_name"] != "Roe" || c1["first_name"] != "Ann" || c1["city"] != "Oslo" || c1["email"] != " ann@x.com" {
			t.Fatalf("%s: merged c1 %v", r.writer, c1)
		}
		if _, err := r.Get(ctx, "contacts", "c2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: c2 not deleted: %v", r.writer, err)
		}
		if d2 := mustGet(t, r, "deals", "d2").Values(); d2["contact"] != "c1" {
			t.Fatalf("%s: d2 not repointed: %v", r.writer, d2)
		}
		if h, err := r.History(ctx, "contacts", "c2", ""); err != nil || len(h) < 2 {
			t.Fatalf("%s: c2's history not reachable: %v %v", r.writer, h, err)
		}
	}
	// --prefer KEEP keeps keep's values.
	mustPut(t, b, "contacts", "c4", map[string]any{"last_name": "New", "city": "Rome"})
	n.waitConverged(10 * time.Second)
	if _, err := b.MergeRecords(ctx, "contacts", "c1", "c4", true); err != nil {
		t.Fatal(err)
	}
	if c1 := mustGet(t, b, "contacts", "c1").Values(); c1["last_name"] != "Roe" || c1["city"] != "Oslo" {
		t.Fatalf("--prefer keep: c1 %v", c1)
	}
	if _, err := b.MergeRecords(ctx, "contacts", "c1", "c1", false); err == nil {
		t.Fatal("merging a record into itself succeeded")
	}
	if _, err := b.MergeRecords(ctx, "contacts", "c1", "nope", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("merging a missing record: %v", err)
	}
}

// The journal holds every merged write of a user collection, local or
// remote, however late; ChangeOf tells what each did.
func TestJournalAndChangeOf(t *testing.T) {
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	ctx := context.Background()
	drain := func(r *replica) {
		js, err := r.Journal(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range js {
			if err := r.base.Delete(ctx, j.Key); err != nil {
				t.Fatal(err)
			}
		}
	}
	drain(a)
	n.setOnline(1, false)
	b.clock.Set(epoch.Add(time.Hour))
	mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "Doe", "stage": "lead"})
	b.clock.Set(epoch.Add(2 * time.Hour))
	mustPut(t, b, "contacts", "c1", map[string]any{"stage": "won", "amount": 10.0})
	if js, _ := a.Journal(ctx, 0); len(js) != 0 {
		t.Fatalf("a's journal before b comes back: %v", js)
	}
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
	js, err := a.Journal(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 2 || js[0].ID != "c1" || js[0].Op.Writer != "B" || !js[1].Op.Newer(js[0].Op) {
		t.Fatalf("a's journal %+v", js)
	}
	ch, found, err := a.ChangeOf(ctx, "contacts", "c1", js[1].Op, true)
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if ch.Event != EventUpdate || ch.Before["stage"] != "lead" || ch.After["stage"] != "won" || !slices.Equal(ch.Changed, []string{"amount", "stage"}) {
		t.Fatalf("change %+v", ch)
	}
	if ch, _, _ := a.ChangeOf(ctx, "contacts", "c1", js[0].Op, true); ch.Event != EventCreate || ch.Before != nil {
		t.Fatalf("first change %+v", ch)
	}
	if _, err := a.Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	js, _ = a.Journal(ctx, 0)
	if len(js) != 3 || js[2].Op.Writer != "A" {
		t.Fatalf("own delete not journalled: %+v", js)
	}
	if ch, _, _ := a.ChangeOf(ctx, "contacts", "c1", js[2].Op, true); ch.Event != EventDelete || ch.After != nil || ch.Before["stage"] != "won" {
		t.Fatalf("delete change %+v", ch)
	}
}

// TestChangeOfIgnoresForgedWrites: a write the trust checks ignore (here by
// a writer who is not a member) is journalled like any merged write, but
// its change is marked Ignored (it fires no workflow) and it is not part of
// another change's before and after.
func TestChangeOfIgnoresForgedWrites(t *testing.T) {
	ctx := context.Background()
	n := newTrustNet(t, 2, "X")
	a, b := n.replicas[0], n.replicas[1]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith", "stage": "lead"})
	n.waitConverged(10 * time.Second)
	rawWrite(t, b, "contacts", "c1", "stage", "won", "X", n.keys["X"])
	n.waitConverged(10 * time.Second)
	mustPut(t, a, "contacts", "c1", map[string]any{"amount": 5.0})
	n.waitConverged(10 * time.Second)
	js, err := a.Journal(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var forged, later *JournalEntry
	for i, j := range js {
		switch {
		case j.Op.Writer == "X":
			forged = &js[i]
		case j.ID == "c1" && (later == nil || j.Op.Newer(later.Op)):
			later = &js[i]
		}
	}
	if forged == nil || later == nil {
		t.Fatalf("journal %+v", js)
	}
	ch, found, err := a.ChangeOf(ctx, "contacts", "c1", forged.Op, true)
	if err != nil || !found || !ch.Ignored {
		t.Fatalf("forged write's change %+v found=%v err=%v", ch, found, err)
	}
	ch, found, err = a.ChangeOf(ctx, "contacts", "c1", later.Op, true)
	if err != nil || !found || ch.Ignored || ch.Before["stage"] != "lead" || ch.After["stage"] != "lead" || ch.After["amount"] != 5.0 {
		t.Fatalf("later change %+v found=%v err=%v", ch, found, err)
	}
}

const mergeGuardSchema = `
collections:
  contacts:
    fields:
      last_name: {type: string}
      phone:     {type: string, policy: manual}
  invoices:
    writers: [office]
    fields:
      customer: {type: ref, to: contacts}
`

// TestMergeRefusesWhatItCannotDoWhole: a merge is refused, and writes
// nothing, while either record has an open conflict (it would settle it
// without anyone choosing) or when a record pointing to the other one is
// in a collection this node may not write (every peer would ignore the
// repoint and keep a ref to the deleted record).
func TestMergeRefusesWhatItCannotDoWhole(t *testing.T) {
	ctx := context.Background()
	n := newTestNetWith(t, 2, mergeGuardSchema, testKeys(2))
	a, b := n.replicas[0], n.replicas[1] // a: the office, b: a laptop
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Doe"})
	mustPut(t, a, "contacts", "c2", map[string]any{"last_name": "Doe", "phone": "1"})
	mustPut(t, a, "invoices", "i1", map[string]any{"customer": "c2"})
	n.waitConverged(10 * time.Second)

	before := func(r *replica) string { return valuesView(t, r) }
	was := before(b)
	_, err := b.MergeRecords(ctx, "contacts", "c1", "c2", false)
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "invoices/i1.customer") {
		t.Fatalf("laptop merge with an office-only referrer: %v", err)
	}
	if now := before(b); now != was {
		t.Fatalf("a refused merge wrote:\n%s\nwas:\n%s", now, was)
	}

	// An open conflict on c2's phone.
	n.setOnline(1, false)
	mustPut(t, a, "contacts", "c2", map[string]any{"phone": "2"})
	mustPut(t, b, "contacts", "c2", map[string]any{"phone": "3"})
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
	was = before(a)
	if _, err := a.MergeRecords(ctx, "contacts", "c1", "c2", false); !errors.Is(err, ErrConflictOpen) {
		t.Fatalf("merge with an open conflict: %v", err)
	}
	if now := before(a); now != was {
		t.Fatalf("a refused merge wrote:\n%s\nwas:\n%s", now, was)
	}
	// Resolved, the office merges, invoices included.
	if _, err := a.Resolve(ctx, "contacts", "c2", "phone", Resolution{Pick: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.MergeRecords(ctx, "contacts", "c1", "c2", false); err != nil {
		t.Fatal(err)
	}
	if v := mustGet(t, a, "invoices", "i1").Values()["customer"]; v != "c1" {
		t.Fatalf("i1 not repointed: %v", v)
	}
}
