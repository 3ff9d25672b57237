package crdt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/schema"
)

// uniqueErr is the message of a refused unique value.
func uniqueErr(id, field string, v any, owner string) string {
	return fmt.Sprintf("contacts/%s: field %q: value %v is already used by record %q (the field is unique)", id, field, v, owner)
}

// wantUnique checks that err is the *schema.FieldError of a unique value
// held by owner.
func wantUnique(t *testing.T, err error, id, field string, v any, owner string) {
	t.Helper()
	var fe *schema.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("want a unique violation, got %v (%T)", err, err)
	}
	if fe.ID != id || fe.Field != field || fe.Value != v {
		t.Errorf("FieldError = %+v", fe)
	}
	if want := uniqueErr(id, field, v, owner); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

// step is one write of a unique-index scenario on one replica.
type step struct {
	op     string // put, text, delete
	id     string
	fields map[string]any
	text   map[string]string
	owner  string // the record a unique violation names ("": the write succeeds)
	field  string // the field refused (default email)
	value  any    // the value refused
}

func runSteps(t *testing.T, r *replica, steps []step) {
	t.Helper()
	ctx := context.Background()
	for i, st := range steps {
		var err error
		switch st.op {
		case "put":
			_, err = r.Put(ctx, "contacts", st.id, st.fields)
		case "text":
			_, err = r.PutText(ctx, "contacts", st.id, st.fields, st.text)
		case "delete":
			_, err = r.Delete(ctx, "contacts", st.id)
		default:
			t.Fatalf("step %d: unknown op %q", i, st.op)
		}
		if st.owner == "" {
			if err != nil {
				t.Fatalf("step %d (%s %s %v %v): %v", i, st.op, st.id, st.fields, st.text, err)
			}
			continue
		}
		field := st.field
		if field == "" {
			field = "email"
		}
		if err == nil {
			t.Fatalf("step %d (%s %s %v %v): want %s refused, it was written", i, st.op, st.id, st.fields, st.text, field)
		}
		wantUnique(t, err, st.id, field, st.value, st.owner)
	}
}

func TestUniqueIndexFollowsLocalWrites(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	runSteps(t, r, []step{
		{op: "put", id: "c1", fields: map[string]any{"last_name": "A", "email": "a@x"}},
		{op: "put", id: "c2", fields: map[string]any{"last_name": "B", "email": "a@x"}, owner: "c1", value: "a@x"},
		{op: "text", id: "c2", text: map[string]string{"last_name": "B", "email": "a@x"}, owner: "c1", value: "a@x"},
		// A record keeps its own value (an unchanged field is checked too).
		{op: "put", id: "c1", fields: map[string]any{"email": "a@x", "phone": "1"}},
		{op: "put", id: "c2", fields: map[string]any{"last_name": "B", "email": "b@x"}},
		// A value changed frees the old one and takes the new one.
		{op: "put", id: "c1", fields: map[string]any{"email": "c@x"}},
		{op: "put", id: "c3", fields: map[string]any{"last_name": "C", "email": "a@x"}},
		{op: "text", id: "c4", text: map[string]string{"last_name": "D", "email": "c@x"}, owner: "c1", value: "c@x"},
		// A delete frees the record's values.
		{op: "delete", id: "c1"},
		{op: "text", id: "c4", text: map[string]string{"last_name": "D", "email": "c@x"}},
		// Clearing a field frees its value.
		{op: "put", id: "c5", fields: map[string]any{"last_name": "E", "email": "b@x"}, owner: "c2", value: "b@x"},
		{op: "put", id: "c2", fields: map[string]any{"email": nil}},
		{op: "put", id: "c5", fields: map[string]any{"last_name": "E", "email": "b@x"}},
		// A re-created record starts empty: its old value is not its own.
		{op: "put", id: "c1", fields: map[string]any{"last_name": "A2", "email": "b@x"}, owner: "c5", value: "b@x"},
		{op: "put", id: "c1", fields: map[string]any{"last_name": "A2"}},
	})
	if b := r.unique.builds; b != 1 {
		t.Errorf("the unique index was built %d times, want once", b)
	}
}

func TestUniqueImport(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	mustPut(t, r, "contacts", "c0", map[string]any{"last_name": "Z", "email": "held@x"})
	imp := func(recs ...ImportRecord) error {
		_, err := r.Import(ctx, "contacts", recs, nil)
		return err
	}
	rec := func(line int, id, email string) ImportRecord {
		return ImportRecord{Line: line, ID: id, Fields: map[string]any{"last_name": "L", "email": email}}
	}
	cases := []struct {
		name  string
		recs  []ImportRecord
		line  int // the line refused, 0 for none
		id    string
		value string
		owner string
	}{
		{"against the index", []ImportRecord{rec(1, "c1", "a@x"), rec(2, "c2", "held@x")}, 2, "c2", "held@x", "c0"},
		{"within the batch", []ImportRecord{rec(1, "c1", "a@x"), rec(2, "c2", "a@x")}, 2, "c2", "a@x", "c1"},
		{"a failed import claimed nothing", []ImportRecord{rec(1, "c1", "a@x")}, 0, "", "", ""},
		{"moved within the batch", []ImportRecord{rec(1, "c1", "b@x"), rec(2, "c2", "a@x"), rec(3, "c0", "c@x"), rec(4, "c3", "held@x")}, 0, "", "", ""},
		{"written records are in the index", []ImportRecord{rec(1, "c4", "b@x")}, 1, "c4", "b@x", "c1"},
		{"cleared within the batch", []ImportRecord{{Line: 1, ID: "c1", Fields: map[string]any{"email": nil}}, rec(2, "c4", "b@x")}, 0, "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := imp(tc.recs...)
			if tc.line == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("line %d: ", tc.line)) {
				t.Fatalf("want line %d refused, got %v", tc.line, err)
			}
			wantUnique(t, errors.Unwrap(err), tc.id, "email", tc.value, tc.owner)
		})
	}
	// Put sees what the imports wrote.
	runSteps(t, r, []step{
		{op: "put", id: "c9", fields: map[string]any{"last_name": "N", "email": "held@x"}, owner: "c3", value: "held@x"},
		{op: "put", id: "c9", fields: map[string]any{"last_name": "N", "email": "b@x"}, owner: "c4", value: "b@x"},
		{op: "put", id: "c9", fields: map[string]any{"last_name": "N", "email": "c@x"}, owner: "c0", value: "c@x"},
		{op: "put", id: "c9", fields: map[string]any{"last_name": "N", "email": "a@x"}, owner: "c2", value: "a@x"},
	})
}

// The index of a replica learns of remote writes as they merge: values, a
// change, a delete, and conflicts (the value fold shows counts).
func TestUniqueIndexFollowsRemoteMerges(t *testing.T) {
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	ctx := context.Background()
	// b's index is built before a writes anything.
	mustPut(t, b, "contacts", "b1", map[string]any{"last_name": "B", "email": "b@x"})
	n.waitConverged(10 * time.Second)
	builds := b.unique.builds

	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "A", "email": "a@x"})
	n.waitConverged(10 * time.Second)
	runSteps(t, b, []step{{op: "put", id: "c2", fields: map[string]any{"last_name": "B", "email": "a@x"}, owner: "c1", value: "a@x"}})

	mustPut(t, a, "contacts", "c1", map[string]any{"email": "z@x"})
	n.waitConverged(10 * time.Second)
	runSteps(t, b, []step{
		{op: "put", id: "c2", fields: map[string]any{"last_name": "B", "email": "z@x"}, owner: "c1", value: "z@x"},
		{op: "put", id: "c2", fields: map[string]any{"last_name": "B", "email": "a@x"}},
	})

	if _, err := a.Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	n.waitConverged(10 * time.Second)
	runSteps(t, b, []step{{op: "put", id: "c3", fields: map[string]any{"last_name": "C", "email": "z@x"}}})

	// Concurrent edits of c5's email: the newer one shows, and only it is
	// taken; the other candidate is free.
	mustPut(t, a, "contacts", "c5", map[string]any{"last_name": "E"})
	n.waitConverged(10 * time.Second)
	n.setOnline(0, false)
	n.setOnline(1, false)
	a.clock.Set(epoch.Add(time.Hour))
	mustPut(t, a, "contacts", "c5", map[string]any{"email": "old@x"})
	b.clock.Set(epoch.Add(2 * time.Hour))
	mustPut(t, b, "contacts", "c5", map[string]any{"email": "new@x"})
	// Concurrent creations with the same value: both hold it.
	mustPut(t, a, "contacts", "d1", map[string]any{"last_name": "D", "email": "dup@x"})
	mustPut(t, b, "contacts", "d2", map[string]any{"last_name": "D", "email": "dup@x"})
	n.setOnline(0, true)
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
	if f := mustGet(t, a, "contacts", "c5").Fields["email"]; f.Value != "new@x" || !f.Conflicted() {
		t.Fatalf("test setup: c5 email %v candidates %v", f.Value, f.Candidates)
	}
	for _, r := range n.all() {
		runSteps(t, r, []step{
			{op: "put", id: "x" + r.writer, fields: map[string]any{"last_name": "X", "email": "new@x"}, owner: "c5", value: "new@x"},
			// Both holders of a duplicate may keep their value.
			{op: "put", id: "d1", fields: map[string]any{"email": "dup@x", "phone": r.writer}},
			{op: "put", id: "d2", fields: map[string]any{"email": "dup@x", "phone": r.writer}},
			{op: "put", id: "x" + r.writer, fields: map[string]any{"last_name": "X", "email": "dup@x"}, owner: "d1", value: "dup@x"},
		})
	}
	mustPut(t, a, "contacts", "d1", map[string]any{"email": "d1@x"})
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		runSteps(t, r, []step{
			{op: "put", id: "x" + r.writer, fields: map[string]any{"last_name": "X", "email": "dup@x"}, owner: "d2", value: "dup@x"},
		})
	}
	// The candidate that does not show (a's, merged into b) holds nothing.
	runSteps(t, b, []step{{op: "put", id: "xB", fields: map[string]any{"last_name": "X", "email": "old@x"}}})
	if b.unique.builds != builds {
		t.Errorf("remote merges rebuilt b's index %d times, want it refreshed", b.unique.builds-builds)
	}
}

// A field made unique by a schema change (here a new field, applied on
// another replica) is indexed from the records that hold values already.
func TestUniqueFieldAddedBySchemaChange(t *testing.T) {
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	ctx := context.Background()
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "A", "email": "a@x"}) // a's index exists
	wider, err := schema.Parse([]byte(testSchema + "  badges:\n    fields:\n      code: {type: string, unique: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	wider.Collections["contacts"].Fields["badge"] = &schema.Field{Type: schema.TypeString, Unique: true}
	n.waitConverged(10 * time.Second)
	if _, err := b.ApplySchema(ctx, wider); err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, "contacts", "c2", map[string]any{"last_name": "B", "badge": "B-1"})
	n.waitConverged(10 * time.Second)
	runSteps(t, a, []step{
		{op: "put", id: "c3", fields: map[string]any{"last_name": "C", "badge": "B-1"}, owner: "c2", field: "badge", value: "B-1"},
		{op: "put", id: "c3", fields: map[string]any{"last_name": "C", "email": "a@x"}, owner: "c1", value: "a@x"},
		{op: "put", id: "c3", fields: map[string]any{"last_name": "C", "badge": "B-2", "email": "c@x"}},
		{op: "put", id: "c4", fields: map[string]any{"last_name": "D", "badge": "B-2"}, owner: "c3", field: "badge", value: "B-2"},
	})
	if _, err := a.Import(ctx, "badges", []ImportRecord{
		{Line: 1, ID: "g1", Fields: map[string]any{"code": "X"}},
		{Line: 2, ID: "g2", Fields: map[string]any{"code": "X"}},
	}, nil); err == nil || !strings.Contains(err.Error(), `value X is already used by record "g1"`) {
		t.Errorf("import into the new collection: %v", err)
	}
}

func TestUniqueIndexAcrossRestart(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	mustPut(t, r, "contacts", "c1", map[string]any{"last_name": "A", "email": "a@x"})
	mustPut(t, r, "contacts", "c2", map[string]any{"last_name": "B", "email": "b@x"})
	if _, err := r.Delete(ctx, "contacts", "c2"); err != nil {
		t.Fatal(err)
	}
	dir := r.dir
	r.stop()
	r = n.start(0, dir)
	runSteps(t, r, []step{
		{op: "put", id: "c3", fields: map[string]any{"last_name": "C", "email": "a@x"}, owner: "c1", value: "a@x"},
		{op: "put", id: "c3", fields: map[string]any{"last_name": "C", "email": "b@x"}},
		{op: "put", id: "c4", fields: map[string]any{"last_name": "D", "email": "b@x"}, owner: "c3", value: "b@x"},
	})
}

// Roles decide which candidate of a conflict shows under the office policy:
// when a node's role changes, the index follows the values shown.
func TestUniqueIndexFollowsRoleChanges(t *testing.T) {
	sc := strings.Replace(testSchema, "email:      {type: string, unique: true}", "email:      {type: string, unique: true, policy: office}", 1)
	n := newTestNetWithSchema(t, 2, sc)
	a, b := n.replicas[0], n.replicas[1] // a office, b laptop
	ctx := context.Background()
	mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "A"}) // b's index exists
	n.waitConverged(10 * time.Second)
	n.setOnline(0, false)
	n.setOnline(1, false)
	a.clock.Set(epoch.Add(time.Hour))
	mustPut(t, a, "contacts", "c1", map[string]any{"email": "office@x"})
	b.clock.Set(epoch.Add(2 * time.Hour))
	mustPut(t, b, "contacts", "c1", map[string]any{"email": "laptop@x"})
	n.setOnline(0, true)
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
	if v := mustGet(t, b, "contacts", "c1").Fields["email"].Value; v != "office@x" {
		t.Fatalf("test setup: the office's value must show, got %v", v)
	}
	runSteps(t, b, []step{{op: "put", id: "c2", fields: map[string]any{"last_name": "B", "email": "office@x"}, owner: "c1", value: "office@x"}})

	// a is a laptop now: the newest candidate shows.
	if err := a.SetNodeInfo(ctx, a.writer, RoleLaptop); err != nil {
		t.Fatal(err)
	}
	n.waitConverged(10 * time.Second)
	if v := mustGet(t, b, "contacts", "c1").Fields["email"].Value; v != "laptop@x" {
		t.Fatalf("test setup: the newest value must show, got %v", v)
	}
	runSteps(t, b, []step{
		{op: "put", id: "c2", fields: map[string]any{"last_name": "B", "email": "laptop@x"}, owner: "c1", value: "laptop@x"},
		{op: "put", id: "c2", fields: map[string]any{"last_name": "B", "email": "office@x"}},
	})
}
