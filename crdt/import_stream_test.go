package crdt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/schema"
)

// genSource yields n contacts made on the fly (nothing of them is kept):
// record i has id c<i> (or another prefix), line i+1 and a unique email. It counts how often
// it is read; bad, if set, may replace a record (a record that fails
// validation) in a given pass.
type genSource struct {
	prefix string // of the ids, "c" if empty
	n      int
	passes int
	bad    func(pass, i int) (ImportRecord, bool)
}

func (g *genSource) source(yield func(ImportRecord) error) error {
	g.passes++
	prefix := g.prefix
	if prefix == "" {
		prefix = "c"
	}
	for i := range g.n {
		r := ImportRecord{Line: i + 1, ID: fmt.Sprintf("%s%d", prefix, i), Fields: map[string]any{
			"last_name": fmt.Sprintf("L%d", i), "email": fmt.Sprintf("%s%d@x", prefix, i), "amount": float64(i)}}
		if g.bad != nil {
			if b, ok := g.bad(g.passes, i); ok {
				r = b
			}
		}
		if err := yield(r); err != nil {
			return err
		}
	}
	return nil
}

// TestImportStreamReadsTwice: a streamed import reads its source once to
// validate it and once to write it, and holds none of the records: the
// source here makes each one as it is asked for.
func TestImportStreamReadsTwice(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	r.opts.BatchOps = 150 // writes (one per record) per delta
	mustPut(t, r, "contacts", "c5", map[string]any{"last_name": "L5", "email": "c5@x", "amount": 5.0})
	mustPut(t, r, "contacts", "c6", map[string]any{"last_name": "Other"})

	const total = 2000
	g := &genSource{n: total}
	var progress [][2]int
	h0 := r.Stats(ctx).MaxHeight
	res, err := r.ImportStream(ctx, "contacts", g.source, ImportOptions{}, func(done, all int) {
		progress = append(progress, [2]int{done, all})
	})
	if err != nil {
		t.Fatal(err)
	}
	if g.passes != 2 {
		t.Errorf("the source was read %d times, want 2", g.passes)
	}
	want := ImportResult{Records: total, Written: total - 1, Created: total - 2, Unchanged: 1, Deltas: res.Deltas}
	if fmt.Sprint(res) != fmt.Sprint(want) || res.Deltas < 10 {
		t.Errorf("result %+v, want %+v in at least 10 deltas (1999 writes, BatchOps 150)", res, want)
	}
	if got := r.Stats(ctx).MaxHeight - h0; got != uint64(res.Deltas) {
		t.Errorf("the DAG grew by %d, the result says %d deltas", got, res.Deltas)
	}
	if len(progress) != res.Deltas+1 {
		t.Errorf("%d progress calls for %d deltas", len(progress), res.Deltas)
	}
	for i, p := range progress {
		if p[1] != total || p[0] <= 0 || (i > 0 && p[0] < progress[i-1][0]) {
			t.Errorf("progress %d: %v", i, p)
		}
	}
	if last := progress[len(progress)-1]; last[0] != total {
		t.Errorf("last progress %v, want %d done", last, total)
	}
	count := 0
	if err := r.List(ctx, "contacts", func(*Record) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	if count != total {
		t.Errorf("listed %d records, want %d", count, total)
	}
	if got := mustGet(t, r, "contacts", "c1999").Values(); got["email"] != "c1999@x" || got["amount"] != 1999.0 {
		t.Errorf("c1999: %v", got)
	}
}

// A bad record found by the first pass fails the import with its line;
// the second pass never starts and nothing is written.
func TestImportStreamBadRecordWritesNothing(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	g := &genSource{n: 500, bad: func(_, i int) (ImportRecord, bool) {
		// Line 451 takes line 3's email.
		return ImportRecord{Line: i + 1, ID: "dup", Fields: map[string]any{"last_name": "D", "email": "c2@x"}}, i == 450
	}}
	h0 := r.Stats(ctx).MaxHeight
	_, err := r.ImportStream(ctx, "contacts", g.source, ImportOptions{}, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "line 451: ") {
		t.Fatalf("want line 451 refused, got %v", err)
	}
	wantUnique(t, errors.Unwrap(err), "dup", "email", "c2@x", "c2")
	if g.passes != 1 || r.Stats(ctx).MaxHeight != h0 || dump(t, r, "contacts") != "[]" {
		t.Errorf("after a refused import: %d passes, DAG %d -> %d, records %s", g.passes, h0, r.Stats(ctx).MaxHeight, dump(t, r, "contacts"))
	}
}

// SkipInvalid sets the bad records aside and writes the others; a dry run
// reads the source once, counts and writes nothing.
func TestImportStreamSkipInvalidAndDryRun(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	mustPut(t, r, "contacts", "c0", map[string]any{"last_name": "L0", "email": "c0@x", "amount": 0.0})
	mustPut(t, r, "contacts", "c1", map[string]any{"last_name": "Old"})
	bad := func(_, i int) (ImportRecord, bool) {
		switch i {
		case 3: // not a number
			return ImportRecord{Line: 4, ID: "c3", Fields: map[string]any{"last_name": "L3", "amount": "x"}}, true
		case 5: // a new record without its last name
			return ImportRecord{Line: 6, ID: "c5", Fields: map[string]any{"first_name": "F"}}, true
		case 7: // line 2's email
			return ImportRecord{Line: 8, ID: "c7", Fields: map[string]any{"last_name": "L7", "email": "c1@x"}}, true
		}
		return ImportRecord{}, false
	}
	wantRejected := []ImportRejection{
		{Line: 4, ID: "c3", Reason: `contacts/c3: field "amount"`},
		{Line: 6, ID: "c5", Reason: "last_name"},
		{Line: 8, ID: "c7", Reason: `already used by record "c1"`},
	}
	checkRejected := func(t *testing.T, got []ImportRejection) {
		t.Helper()
		if len(got) != len(wantRejected) {
			t.Fatalf("rejected %+v, want %+v", got, wantRejected)
		}
		for i, w := range wantRejected {
			if got[i].Line != w.Line || got[i].ID != w.ID || !strings.Contains(got[i].Reason, w.Reason) {
				t.Errorf("rejected[%d] = %+v, want %+v", i, got[i], w)
			}
		}
	}

	g := &genSource{n: 10, bad: bad}
	h0 := r.Stats(ctx).MaxHeight
	res, err := r.ImportStream(ctx, "contacts", g.source, ImportOptions{DryRun: true, SkipInvalid: true}, func(int, int) {
		t.Error("a dry run reported progress")
	})
	if err != nil {
		t.Fatal(err)
	}
	// c0 unchanged, c1 updated, 5 created, 3 rejected.
	if g.passes != 1 || res.Records != 10 || res.Written != 6 || res.Created != 5 || res.Unchanged != 1 || res.Deltas != 0 {
		t.Errorf("dry run: %d passes, %+v", g.passes, res)
	}
	checkRejected(t, res.Rejected)
	if r.Stats(ctx).MaxHeight != h0 {
		t.Error("a dry run wrote")
	}
	// Without SkipInvalid a dry run stops at the first bad record.
	if _, err := r.ImportStream(ctx, "contacts", (&genSource{n: 10, bad: bad}).source, ImportOptions{DryRun: true}, nil); err == nil || !strings.HasPrefix(err.Error(), "line 4: ") {
		t.Errorf("dry run without SkipInvalid: %v", err)
	}

	g = &genSource{n: 10, bad: bad}
	res, err = r.ImportStream(ctx, "contacts", g.source, ImportOptions{SkipInvalid: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.passes != 2 || res.Records != 10 || res.Written != 6 || res.Created != 5 || res.Unchanged != 1 || res.Deltas != 1 {
		t.Errorf("import: %d passes, %+v", g.passes, res)
	}
	checkRejected(t, res.Rejected)
	for _, id := range []string{"c3", "c5", "c7"} {
		if _, err := r.Get(ctx, "contacts", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("rejected %s was written: %v", id, err)
		}
	}
	if got := mustGet(t, r, "contacts", "c1").Values(); got["last_name"] != "L1" || got["email"] != "c1@x" {
		t.Errorf("c1 after the import: %v", got)
	}
}

// A record left out claims no unique value, and gives back none: a record
// refused on its second unique field does not take or free values with its
// first.
func TestImportRejectedClaimsNothing(t *testing.T) {
	n := newTestNetWithSchema(t, 1, `
collections:
  contacts:
    fields:
      last_name: {type: string, required: true}
      email:     {type: string, unique: true}
      phone:     {type: string, unique: true}
`)
	r := n.replicas[0]
	ctx := context.Background()
	mustPut(t, r, "contacts", "held", map[string]any{"last_name": "H", "email": "h@x", "phone": "1"})
	mustPut(t, r, "contacts", "other", map[string]any{"last_name": "O", "phone": "2"})
	recs := []ImportRecord{
		{Line: 1, ID: "held", Fields: map[string]any{"email": "new@x", "phone": "2"}}, // phone taken
		{Line: 2, ID: "z", Fields: map[string]any{"last_name": "Z", "email": "h@x"}},  // held keeps h@x
		{Line: 3, ID: "a", Fields: map[string]any{"last_name": "A", "email": "a@x"}},
		{Line: 4, ID: "a", Fields: map[string]any{"email": "b@x", "phone": "2"}},       // phone taken
		{Line: 5, ID: "b", Fields: map[string]any{"last_name": "B", "email": "a@x"}},   // a keeps a@x
		{Line: 6, ID: "c", Fields: map[string]any{"last_name": "C", "email": "b@x"}},   // b@x is free
		{Line: 7, ID: "d", Fields: map[string]any{"last_name": "D", "email": "new@x"}}, // so is new@x
	}
	res, err := r.ImportWith(ctx, "contacts", recs, ImportOptions{SkipInvalid: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var lines []int
	for _, x := range res.Rejected {
		lines = append(lines, x.Line)
	}
	if res.Written != 3 || fmt.Sprint(lines) != "[1 2 4 5]" {
		t.Errorf("result %+v, want 3 written and lines 1, 2, 4, 5 left out", res)
	}
	for id, email := range map[string]any{"held": "h@x", "a": "a@x", "c": "b@x", "d": "new@x"} {
		if got := mustGet(t, r, "contacts", id).Values()["email"]; got != email {
			t.Errorf("%s has email %v, want %v", id, got, email)
		}
	}
}

// What goes wrong with the source: its own error, in either pass, fails
// the import (nothing written when it comes in the first); a second pass
// that reads other records than the first is refused; a record that fails
// in the second pass stops the import with its line.
func TestImportStreamSourceErrors(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	r.opts.BatchOps = 30
	h0 := r.Stats(ctx).MaxHeight
	broken := errors.New("line 7: not a JSON object")
	// failIn is a source that fails on line 7 of the given pass.
	failIn := func(pass int) ImportSource {
		g := &genSource{n: 100}
		return func(yield func(ImportRecord) error) error {
			return g.source(func(rec ImportRecord) error {
				if g.passes == pass && rec.Line == 7 {
					return broken
				}
				return yield(rec)
			})
		}
	}
	_, err := r.ImportStream(ctx, "contacts", failIn(1), ImportOptions{}, nil)
	if !errors.Is(err, broken) || err.Error() != "import contacts: line 7: not a JSON object" {
		t.Errorf("source error in the first pass: %v", err)
	}
	if r.Stats(ctx).MaxHeight != h0 {
		t.Error("an import whose source failed in the first pass wrote")
	}
	if _, err := r.ImportStream(ctx, "contacts", failIn(2), ImportOptions{}, nil); !errors.Is(err, broken) {
		t.Errorf("source error in the second pass: %v", err)
	}

	shrinking := func() ImportSource {
		pass := 0
		return func(yield func(ImportRecord) error) error {
			pass++
			g := &genSource{n: 100 - 10*(pass-1)}
			return g.source(yield)
		}
	}
	if _, err := r.ImportStream(ctx, "contacts", shrinking(), ImportOptions{}, nil); !errors.Is(err, ErrImportSourceChanged) {
		t.Errorf("a source with fewer records in the second pass: %v", err)
	}
	growing := func() ImportSource {
		pass := 0
		return func(yield func(ImportRecord) error) error {
			pass++
			g := &genSource{n: 100 + pass}
			return g.source(yield)
		}
	}
	if _, err := r.ImportStream(ctx, "contacts", growing(), ImportOptions{}, nil); !errors.Is(err, ErrImportSourceChanged) {
		t.Errorf("a source with more records in the second pass: %v", err)
	}

	// Line 80 is good in the first pass, not in the second: the import
	// stops there, the deltas before it stay.
	g := &genSource{prefix: "n", n: 100, bad: func(pass, i int) (ImportRecord, bool) {
		return ImportRecord{Line: 80, ID: "x80", Fields: map[string]any{"last_name": "X", "amount": "many"}}, pass == 2 && i == 79
	}}
	h1 := r.Stats(ctx).MaxHeight
	res, err := r.ImportStream(ctx, "contacts", g.source, ImportOptions{}, nil)
	var fe *schema.FieldError
	if err == nil || !strings.HasPrefix(err.Error(), "line 80: ") || !errors.As(err, &fe) || fe.Field != "amount" {
		t.Fatalf("a record failing in the second pass: %v", err)
	}
	if res.Deltas == 0 || r.Stats(ctx).MaxHeight-h1 != uint64(res.Deltas) || res.Written >= 80 {
		t.Errorf("stopped at line 80: %+v", res)
	}
}
