package crdt

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/ferry-crm/ferry/schema"
)

func TestFieldLevelMergeJohnRodman(t *testing.T) {
	n := newTestNet(t, 3)
	office, l1, l2 := n.replicas[0], n.replicas[1], n.replicas[2]
	mustPut(t, office, "contacts", "c1", map[string]any{"first_name": "Jeff", "last_name": "Smith"})
	n.waitConverged(10 * time.Second)

	n.setOnline(1, false)
	n.setOnline(2, false)
	mustPut(t, l1, "contacts", "c1", map[string]any{"first_name": "John"})
	mustPut(t, l2, "contacts", "c1", map[string]any{"last_name": "Rodman"})
	n.setOnline(1, true)
	n.setOnline(2, true)
	n.waitConverged(10 * time.Second)

	for _, r := range n.all() {
		rec := mustGet(t, r, "contacts", "c1")
		if rec.Fields["first_name"].Value != "John" || rec.Fields["last_name"].Value != "Rodman" {
			t.Errorf("replica %s sees %v, want John Rodman", r.writer, rec.Values())
		}
		for name, f := range rec.Fields {
			if f.Conflicted() {
				t.Errorf("replica %s: field %s conflicted, edits of different fields must not conflict", r.writer, name)
			}
		}
	}
}

// An edit made offline at 10:00 and synced at 12:00 must not overwrite an
// edit made at 11:00 and synced at 11:01, even when the offline laptop made
// many more edits (a taller DAG branch, which go-ds-crdt alone would favour).
func TestNewestEditWinsRegardlessOfSyncOrder(t *testing.T) {
	for _, lateFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "late-sync-last", true: "late-sync-first"}[lateFirst], func(t *testing.T) {
			n := newTestNet(t, 3)
			office, early, late := n.replicas[0], n.replicas[1], n.replicas[2]
			mustPut(t, office, "contacts", "c1", map[string]any{"last_name": "Smith", "phone": "100"})
			n.waitConverged(10 * time.Second)
			n.setOnline(1, false)
			n.setOnline(2, false)

			at := func(h, m int) time.Time { return time.Date(2026, 3, 2, h, m, 0, 0, time.UTC) }
			early.clock.Set(at(10, 0))
			mustPut(t, early, "contacts", "c1", map[string]any{"phone": "written-at-10"})
			for i := 0; i < 30; i++ { // a tall offline branch of other edits
				mustPut(t, early, "accounts", "a1", map[string]any{"name": "Acme " + string(rune('a'+i%26))})
			}
			late.clock.Set(at(11, 0))
			mustPut(t, late, "contacts", "c1", map[string]any{"phone": "written-at-11"})

			if lateFirst {
				n.setOnline(2, true) // 11:01
				n.waitConverged(10 * time.Second)
				n.setOnline(1, true) // 12:00
			} else {
				n.setOnline(1, true)
				n.waitConverged(10 * time.Second)
				n.setOnline(2, true)
			}
			n.waitConverged(10 * time.Second)
			if early.Stats(context.Background()).MaxHeight <= 20 {
				t.Fatalf("test setup: expected a tall DAG")
			}
			want := dump(t, office, "contacts")
			for _, r := range n.all() {
				rec := mustGet(t, r, "contacts", "c1")
				f := rec.Fields["phone"]
				if f.Value != "written-at-11" {
					t.Errorf("replica %s shows phone %v, want the 11:00 edit", r.writer, f.Value)
				}
				if len(f.Candidates) != 2 || f.Candidates[1].Value != "written-at-10" {
					t.Errorf("replica %s: the 10:00 edit must stay visible as a conflict candidate, got %+v", r.writer, f.Candidates)
				}
				if got := dump(t, r, "contacts"); got != want {
					t.Errorf("replica %s diverged:\n%s\nwant\n%s", r.writer, got, want)
				}
			}
		})
	}
}

func TestWriteAfterSeeingSupersedes(t *testing.T) {
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	a.clock.Set(epoch.Add(time.Hour)) // a's clock runs an hour ahead
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith"})
	n.waitConverged(10 * time.Second)
	// b's physical clock is behind, but b saw a's write: its edit supersedes it.
	mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "Rodman"})
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		f := mustGet(t, r, "contacts", "c1").Fields["last_name"]
		if f.Value != "Rodman" || f.Conflicted() {
			t.Errorf("replica %s: last_name %v candidates %v, want Rodman without conflict", r.writer, f.Value, f.Candidates)
		}
		if f.Op.Time <= TimestampOf(epoch.Add(time.Hour)) {
			t.Errorf("replica %s: superseding op %s not newer than what it saw", r.writer, f.Op)
		}
	}
}

func TestConcurrentEditsOfSameFieldConflictEverywhere(t *testing.T) {
	n := newTestNet(t, 3)
	mustPut(t, n.replicas[0], "contacts", "c1", map[string]any{"last_name": "Smith"})
	n.waitConverged(10 * time.Second)
	for i := range 3 {
		n.setOnline(i, false)
	}
	for i, r := range n.replicas {
		r.clock.Set(epoch.Add(time.Duration(i) * time.Minute))
		mustPut(t, r, "contacts", "c1", map[string]any{"stage": []string{"lead", "won", "lost"}[i]})
	}
	for i := range 3 {
		n.setOnline(i, true)
	}
	n.waitConverged(10 * time.Second)
	want := dump(t, n.replicas[0], "contacts")
	for _, r := range n.all() {
		f := mustGet(t, r, "contacts", "c1").Fields["stage"]
		if f.Value != "lost" || len(f.Candidates) != 3 {
			t.Errorf("replica %s: stage=%v with %d candidates, want lost with 3", r.writer, f.Value, len(f.Candidates))
		}
		if got := dump(t, r, "contacts"); got != want {
			t.Errorf("replica %s diverged: %s want %s", r.writer, got, want)
		}
	}
	// Writing the field after seeing the conflict resolves it everywhere.
	mustPut(t, n.replicas[1], "contacts", "c1", map[string]any{"stage": "won"})
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		if f := mustGet(t, r, "contacts", "c1").Fields["stage"]; f.Value != "won" || f.Conflicted() {
			t.Errorf("replica %s: after resolution stage=%v candidates=%d", r.writer, f.Value, len(f.Candidates))
		}
	}
}

func TestDeleteAgainstConcurrentEdit(t *testing.T) {
	cases := []struct {
		name       string
		editAfter  bool // the concurrent edit is newer than the delete
		wantExists bool
		wantFirst  any
		wantPhone  any
	}{
		{"delete newer than edit: deleted", false, false, nil, nil},
		{"edit newer than delete: whole record back", true, true, "Jeff", "555"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNet(t, 3)
			a, b := n.replicas[1], n.replicas[2]
			mustPut(t, n.replicas[0], "contacts", "c1", map[string]any{"first_name": "Jeff", "last_name": "Smith"})
			n.waitConverged(10 * time.Second)
			n.setOnline(1, false)
			n.setOnline(2, false)
			del, edit := epoch.Add(time.Hour), epoch.Add(2*time.Hour)
			if !tc.editAfter {
				del, edit = edit, del
			}
			a.clock.Set(del)
			if _, err := a.Delete(context.Background(), "contacts", "c1"); err != nil {
				t.Fatal(err)
			}
			b.clock.Set(edit)
			mustPut(t, b, "contacts", "c1", map[string]any{"phone": "555"})
			n.setOnline(1, true)
			n.setOnline(2, true)
			n.waitConverged(10 * time.Second)
			for _, r := range n.all() {
				rec, err := r.Get(context.Background(), "contacts", "c1")
				if !tc.wantExists {
					if !errors.Is(err, ErrNotFound) {
						t.Errorf("replica %s: want deleted, got %v %v", r.writer, rec, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("replica %s: %v", r.writer, err)
				}
				if rec.Fields["first_name"].Value != tc.wantFirst || rec.Fields["phone"].Value != tc.wantPhone || rec.Fields["last_name"].Value != "Smith" {
					t.Errorf("replica %s: got %v", r.writer, rec.Values())
				}
			}
		})
	}
}

func TestRecreateAfterDeleteStartsEmpty(t *testing.T) {
	n := newTestNet(t, 2)
	a := n.replicas[0]
	ctx := context.Background()
	mustPut(t, a, "contacts", "c1", map[string]any{"first_name": "Jeff", "last_name": "Smith", "phone": "1"})
	if _, err := a.Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Delete(ctx, "contacts", "c1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: want ErrNotFound, got %v", err)
	}
	if _, err := a.Put(ctx, "contacts", "c1", map[string]any{"first_name": "Anna"}); err == nil {
		t.Fatal("re-creating without the required last_name must fail")
	}
	res := mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Meier"})
	if !res.Created {
		t.Error("write after delete must count as a creation")
	}
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		got := mustGet(t, r, "contacts", "c1").Values()
		if len(got) != 1 || got["last_name"] != "Meier" {
			t.Errorf("replica %s: re-created record %v, want only last_name=Meier", r.writer, got)
		}
	}
}

func TestPutIsOneDelta(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	h0 := r.Stats(ctx).MaxHeight
	mustPut(t, r, "contacts", "c1", map[string]any{"first_name": "Jeff", "last_name": "Smith", "email": "j@x", "amount": 12.5, "active": true})
	if h := r.Stats(ctx).MaxHeight; h != h0+1 {
		t.Fatalf("a put of 5 fields made %d deltas, want 1", h-h0)
	}
	// Writing the same values again writes nothing.
	if res := mustPut(t, r, "contacts", "c1", map[string]any{"first_name": "Jeff"}); len(res.Fields) != 0 {
		t.Errorf("unchanged write wrote %v", res.Fields)
	}
	if h := r.Stats(ctx).MaxHeight; h != h0+1 {
		t.Errorf("unchanged write made a delta")
	}
}

func TestValidationErrorsWriteNothing(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	mustPut(t, r, "contacts", "c1", map[string]any{"last_name": "Smith", "email": "a@x"})
	h0 := r.Stats(ctx).MaxHeight
	bad := []struct {
		coll   string
		fields map[string]any
		is     error
	}{
		{"nope", map[string]any{"last_name": "x"}, schema.ErrUnknownCollection},
		{"contacts", map[string]any{"last_name": "x", "nmae": "y"}, schema.ErrUnknownField},
		{"contacts", map[string]any{"first_name": "x"}, nil},                  // required last_name missing on create
		{"contacts", map[string]any{"last_name": "x", "stage": "maybe"}, nil}, // enum
		{"contacts", map[string]any{"last_name": "x", "amount": "12"}, nil},   // type
		{"contacts", map[string]any{"last_name": "x", "email": "a@x"}, nil},   // unique
	}
	for i, b := range bad {
		_, err := r.Put(ctx, b.coll, "c2", b.fields)
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		if b.is != nil && !errors.Is(err, b.is) {
			t.Errorf("case %d: %v is not %v", i, err, b.is)
		}
	}
	if _, err := r.Get(ctx, "contacts", "c2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused write left a record: %v", err)
	}
	if h := r.Stats(ctx).MaxHeight; h != h0 {
		t.Errorf("refused writes made %d deltas", h-h0)
	}
	// Clearing a required field is refused too.
	if _, err := r.Put(ctx, "contacts", "c1", map[string]any{"last_name": nil}); err == nil {
		t.Error("clearing a required field must fail")
	}
}

func TestRestartKeepsDataAndClock(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	dir := r.dir
	res := mustPut(t, r, "contacts", "c1", map[string]any{"last_name": "Smith"})
	r.clock.Set(epoch.Add(-time.Hour)) // the physical clock jumps back
	r.stop()
	r2 := n.start(0, dir)
	r2.clock.Set(epoch.Add(-time.Hour))
	if got := mustGet(t, r2, "contacts", "c1").Values()["last_name"]; got != "Smith" {
		t.Fatalf("after restart: %v", got)
	}
	res2 := mustPut(t, r2, "accounts", "a1", map[string]any{"name": "Acme"})
	if !res2.Op.Newer(res.Op) {
		t.Errorf("clock went backwards across restart: %s then %s", res.Op, res2.Op)
	}
}

func TestSchemaReplicatesAndChangesAreAdditive(t *testing.T) {
	n := newTestNet(t, 2)
	ctx := context.Background()
	for _, r := range n.all() {
		sc, err := r.Schema(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := sc.Collection("contacts"); err != nil || c.Fields["stage"] == nil {
			t.Fatalf("replica %s: schema did not replicate: %v", r.writer, err)
		}
	}
	wider, err := schema.Parse([]byte(testSchema + "  deals:\n    fields:\n      title: {type: string}\n"))
	if err != nil {
		t.Fatal(err)
	}
	changed, err := n.replicas[1].ApplySchema(ctx, wider)
	if err != nil || len(changed) != 2 {
		t.Fatalf("additive change: %v %v", changed, err)
	}
	n.waitConverged(10 * time.Second)
	mustPut(t, n.replicas[0], "deals", "d1", map[string]any{"title": "Big one"})

	narrower, err := schema.Parse([]byte(`
collections:
  contacts:
    fields:
      last_name: {type: number}
`))
	if err != nil {
		t.Fatal(err)
	}
	h0 := n.replicas[0].Stats(ctx).MaxHeight
	if _, err := n.replicas[0].ApplySchema(ctx, narrower); !errors.Is(err, schema.ErrDestructiveChange) {
		t.Fatalf("destructive change: want ErrDestructiveChange, got %v", err)
	}
	if n.replicas[0].Stats(ctx).MaxHeight != h0 {
		t.Error("a refused schema change wrote something")
	}
}

func TestImportValidatesEverythingFirst(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	recs := []ImportRecord{
		{Line: 1, ID: "c1", Fields: map[string]any{"last_name": "A", "email": "a@x"}},
		{Line: 2, ID: "c2", Fields: map[string]any{"last_name": "B", "email": "b@x"}},
		{Line: 3, ID: "c3", Fields: map[string]any{"last_name": "C", "email": "a@x"}},
	}
	_, err := r.Import(ctx, "contacts", recs, nil)
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("want a unique violation on line 3, got %v", err)
	}
	if dump(t, r, "contacts") != "[]" {
		t.Fatalf("a failed import wrote records: %s", dump(t, r, "contacts"))
	}
	recs[2].Fields["email"] = "c@x"
	recs = append(recs, ImportRecord{Line: 4, ID: "c1", Fields: map[string]any{"first_name": "Again"}})
	res, err := r.Import(ctx, "contacts", recs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Written != 4 {
		t.Errorf("written %d, want 4", res.Written)
	}
	if got := mustGet(t, r, "contacts", "c1").Values(); got["first_name"] != "Again" || got["last_name"] != "A" || mustGet(t, r, "contacts", "c1").Fields["first_name"].Conflicted() {
		t.Errorf("a record imported twice: %v", got)
	}
	// Re-importing the same data writes nothing.
	res, err = r.Import(ctx, "contacts", recs[:3], nil)
	if err != nil || res.Unchanged != 3 || res.Deltas != 0 {
		t.Errorf("re-import: %+v %v", res, err)
	}
}

func TestImportBatchesIntoFewDeltas(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	r.opts.BatchOps = 50 // writes (one per record) per delta
	var recs []ImportRecord
	for i := range 400 {
		recs = append(recs, ImportRecord{Line: i + 1, ID: "c" + strconv.Itoa(i), Fields: map[string]any{
			"first_name": "F", "last_name": "L" + strconv.Itoa(i), "phone": "1", "stage": "lead", "amount": float64(i), "active": true}})
	}
	h0 := r.Stats(ctx).MaxHeight
	res, err := r.Import(ctx, "contacts", recs, nil)
	if err != nil {
		t.Fatal(err)
	}
	deltas := r.Stats(ctx).MaxHeight - h0
	if deltas != uint64(res.Deltas) || deltas != 8 {
		t.Errorf("400 records made %d deltas (result says %d), want 8 of 50 writes", deltas, res.Deltas)
	}
	count := 0
	if err := r.List(ctx, "contacts", func(*Record) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	if count != 400 {
		t.Errorf("listed %d records", count)
	}
}

// Operations that did not come from a Ferry node (bad keys, envelopes that do
// not decode or lie about their writer) are ignored and counted on every
// replica; nothing crashes and good records stay readable.
func TestMalformedOperationsAreIgnored(t *testing.T) {
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	ctx := context.Background()
	mustPut(t, a, "contacts", "good", map[string]any{"last_name": "Fine"})
	okBody := func(value any) []byte {
		b, _ := encodeWrite(&write{ID: OpID{Time: 1, Writer: "A"}, Ops: []Op{{ID: OpID{Time: 1, Writer: "A"}, Field: "last_name", Value: value}}})
		return b
	}
	frame := func(body wireBody) []byte {
		b, _ := cborEnc.Marshal(body)
		return append(binary.AppendUvarint([]byte{Format, 0}, uint64(len(b))), b...)
	}
	// A reference to a writer past the end of the writers table.
	badRef := frame(wireBody{Fields: []wireField{{Name: "last_name", Value: "x", Sup: []wireRef{{Field: "f", Time: 1, Writer: 5}}}}})
	rogue := map[string][]byte{
		"/contacts/bad1/0000000000000001-A":                []byte("not cbor"),
		"/contacts/bad2/0000000000000001-A":                []byte(`{"v":"x","t":"0000000000000001","w":"A"}`),
		"/contacts/bad3/not-an-op-id":                      okBody("x"),
		"/contacts/bad4/0000000000000001-A":                okBody(map[string]any{"nested": 1}),
		"/contacts/bad5/0000000000000001-A":                append([]byte{2, 0, 40}, okBody("x")[3:]...),
		"/contacts/bad6/0000000000000001-A":                append([]byte{9}, okBody("x")[1:]...),
		"/contacts/bad7/0000000000000001-A":                badRef,
		"/contacts/too/many/segments/0000000000000001-A/x": okBody("x"),
	}
	for k, v := range rogue {
		if err := a.eng().Put(ctx, dsKey(k), v); err != nil {
			t.Fatal(err)
		}
	}
	n.waitConverged(10 * time.Second)
	for _, r := range []*replica{a, b} {
		if got := dump(t, r, "contacts"); got != "[good: last_name=Fine]" {
			t.Errorf("replica %s lists %s", r.writer, got)
		}
		for _, id := range []string{"bad1", "bad2", "bad3", "bad4", "bad5", "bad6", "bad7"} {
			if _, err := r.Get(ctx, "contacts", id); !errors.Is(err, ErrNotFound) {
				t.Errorf("replica %s: %s: want not found, got %v", r.writer, id, err)
			}
		}
		if r.Stats(ctx).Malformed == 0 {
			t.Errorf("replica %s counted no malformed operations", r.writer)
		}
	}
	// Writing over a record with a malformed op still works.
	mustPut(t, b, "contacts", "bad1", map[string]any{"last_name": "Repaired"})
}

func dsKey(s string) ds.Key { return ds.RawKey(s) }

func TestDigestTellsConvergenceAndDivergence(t *testing.T) {
	n := newTestNet(t, 2)
	ctx := context.Background()
	a, b := n.replicas[0], n.replicas[1]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith"})
	n.waitConverged(10 * time.Second)
	checkDigests(t, n)
	da, _ := a.Digest(ctx)

	n.setOnline(1, false)
	mustPut(t, b, "contacts", "c1", map[string]any{"first_name": "John"})
	db, _ := b.Digest(ctx)
	if db == da {
		t.Fatal("a write did not change the digest")
	}
	if again, _ := a.Digest(ctx); again != da {
		t.Fatal("the digest changed without a write")
	}
	// Only the changed record's bucket differs.
	ba, _ := a.DigestBuckets(ctx)
	bb, _ := b.DigestBuckets(ctx)
	var differ []int
	for i := range ba {
		if ba[i] != bb[i] {
			differ = append(differ, i)
		}
	}
	if len(differ) != 1 {
		t.Fatalf("%d buckets differ, want 1", len(differ))
	}
	ha, _ := a.RecordHashes(ctx, differ)
	hb, _ := b.RecordHashes(ctx, differ)
	if ha["contacts/c1"] == hb["contacts/c1"] || len(hb) == 0 {
		t.Errorf("record hashes do not show contacts/c1 differing: %v %v", ha, hb)
	}
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
	checkDigests(t, n)
}
