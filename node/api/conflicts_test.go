package api

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

// TestConflicts builds real conflicts (two replicas writing the same
// fields concurrently) and lists and resolves them through the API of A.
func TestConflicts(t *testing.T) {
	ctx := context.Background()
	p := newConflictPair(t)
	p.conflict(t, "phone", "222", "333") // policy manual: open
	p.conflict(t, "amount", 2.0, 3.0)    // policy newest: decided
	b := &testBackend{store: p.a}
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	cs, err := c.Conflicts(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Field != "amount" || cs[1].Field != "phone" {
		t.Fatalf("conflicts %+v, want amount then phone", cs)
	}
	amount, phone := cs[0], cs[1]
	if amount.Policy != "newest" || amount.Open || phone.Policy != "manual" || !phone.Open {
		t.Errorf("policies: amount %s open=%t, phone %s open=%t", amount.Policy, amount.Open, phone.Policy, phone.Open)
	}
	if phone.Collection != "contacts" || phone.ID != "c1" || len(phone.Candidates) != 2 {
		t.Fatalf("phone conflict %+v", phone)
	}
	// Candidate 1 is the one shown: the newest (B's); writers are named.
	c1, c2 := phone.Candidates[0], phone.Candidates[1]
	if c1.N != 1 || c1.Value != "333" || c1.Writer != "B" || c1.WriterName != "laptop-b" ||
		c2.N != 2 || c2.Value != "222" || c2.Writer != "A" || c2.WriterName != "office-a" {
		t.Errorf("phone candidates %+v", phone.Candidates)
	}
	for _, cand := range phone.Candidates {
		if op, err := crdt.ParseOpID(cand.Op); err != nil || op.Writer != cand.Writer || cand.At.IsZero() {
			t.Errorf("candidate %+v: op %v", cand, err)
		}
	}

	// The record shows its conflicts too.
	rec, err := c.Get(ctx, "contacts", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Fields["phone"] != "333" || len(rec.Conflicts) != 2 || !rec.Conflicts["phone"].Open ||
		len(rec.Conflicts["phone"].Candidates) != 2 || rec.Conflicts["amount"].Open {
		t.Errorf("record %+v", rec)
	}

	// Filters.
	if open, err := c.Conflicts(ctx, "", true); err != nil || len(open) != 1 || open[0].Field != "phone" {
		t.Errorf("open conflicts: %+v, %v", open, err)
	}
	a := call(t, srv, "GET", "/v1/conflicts?collection=accounts", "")
	a.wantJSON(t, nil)
	if strings.TrimSpace(a.body) != "[]" {
		t.Errorf("no conflict answers %s, want []", a.body)
	}
	if cs, err := c.Conflicts(ctx, "contacts", false); err != nil || len(cs) != 2 {
		t.Errorf("conflicts of contacts: %+v, %v", cs, err)
	}
	_, err = c.Conflicts(ctx, "nope", false)
	wantAPIError(t, err, http.StatusBadRequest, "unknown collection")

	// Resolve: caller mistakes first; none writes anything.
	expect := []string{c1.Op, c2.Op}
	before := p.a.Stats(ctx).MaxHeight
	bad := []struct {
		name, field, body string
		code              int
		parts             []string
	}{
		{"neither", "phone", `{}`, 400, []string{"give either a pick or a value"}},
		{"both", "phone", `{"pick": 1, "value": "x"}`, 400, []string{"give either a pick or a value"}},
		{"pick and text", "phone", `{"pick": 1, "text": "x"}`, 400, []string{"give either a pick or a value"}},
		{"bad JSON", "phone", `{"pick": `, 400, []string{"decode request"}},
		{"record with value", crdt.RecordField, `{"value": "x"}`, 400, []string{"record conflict", "--pick"}},
		{"bad expect", "phone", `{"pick": 1, "expect": ["nonsense"]}`, 400, nil},
		{"pick out of range", "phone", `{"pick": 3}`, 400, []string{"--pick 3", "2 candidates"}},
		{"bad value", "amount", `{"value": "many"}`, 400, []string{`"amount"`}},
		{"bad text", "amount", `{"text": "many"}`, 400, []string{`"amount"`, "not a number"}},
		{"changed", "phone", `{"pick": 1, "expect": ["` + c2.Op + `", "` + c1.Op + `"]}`, 409, []string{"changed"}},
		{"fewer expected", "phone", `{"pick": 1, "expect": ["` + c1.Op + `"]}`, 409, []string{"changed"}},
		{"no conflict", "last_name", `{"pick": 1}`, 409, []string{"no conflict"}},
		{"no record", "phone", `{"pick": 1}`, 409, []string{"no conflict"}},
		{"no record conflict", crdt.RecordField, `{"pick": 1}`, 409, []string{"no conflict"}},
		{"unknown collection", "phone", `{"pick": 1}`, 400, []string{"unknown collection"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/resolve/contacts/c1/" + tc.field
			switch tc.name {
			case "no record":
				path = "/v1/resolve/contacts/c9/phone"
			case "unknown collection":
				path = "/v1/resolve/nope/c1/phone"
			}
			call(t, srv, "POST", path, tc.body).wantError(t, tc.code, tc.parts...)
		})
	}
	if h := p.a.Stats(ctx).MaxHeight; h != before {
		t.Errorf("refused resolutions made %d deltas", h-before)
	}

	// Pick candidate 2 (A's), expecting the candidates as listed.
	op, err := c.Resolve(ctx, "contacts", "c1", "phone", apijson.ResolveRequest{Pick: 2, Expect: expect})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := crdt.ParseOpID(op); err != nil || id.Writer != "A" {
		t.Errorf("resolve answers op %q (%v)", op, err)
	}
	// A value given as text, parsed by the field's type.
	text := "42.5"
	if op, err := c.Resolve(ctx, "contacts", "c1", "amount", apijson.ResolveRequest{Text: &text}); err != nil || op == "" {
		t.Errorf("resolve amount with text: %q, %v", op, err)
	}
	rec, err = c.Get(ctx, "contacts", "c1")
	if err != nil || rec.Fields["phone"] != "222" || rec.Fields["amount"] != 42.5 || rec.Conflicts != nil {
		t.Errorf("after resolve: %+v, %v", rec, err)
	}
	if cs, err := c.Conflicts(ctx, "", false); err != nil || len(cs) != 0 {
		t.Errorf("conflicts after resolve: %+v, %v", cs, err)
	}
	// Resolved: nothing left to resolve.
	_, err = c.Resolve(ctx, "contacts", "c1", "phone", apijson.ResolveRequest{Pick: 1})
	wantAPIError(t, err, http.StatusConflict, "no conflict")

	// A typed value resolves a new conflict.
	p.conflict(t, "stage", "won", "lost")
	if op, err := c.Resolve(ctx, "contacts", "c1", "stage", apijson.ResolveRequest{Value: "qualified"}); err != nil || op == "" {
		t.Errorf("resolve stage with a value: %q, %v", op, err)
	}
	if rec, err := c.Get(ctx, "contacts", "c1"); err != nil || rec.Fields["stage"] != "qualified" || rec.Conflicts != nil {
		t.Errorf("after resolve with value: %+v, %v", rec, err)
	}

	// History tells which writes came from here and which from the peer.
	h, err := c.History(ctx, "contacts", "c1", "phone")
	if err != nil {
		t.Fatal(err)
	}
	origins := map[string]string{}
	for _, e := range h {
		if e.Field != "phone" {
			t.Errorf("history of phone lists %+v", e)
		}
		origins[e.Value.(string)] = e.Origin
	}
	if origins["111"] != "here" || origins["222"] != "here" || origins["333"] != "peer" {
		t.Errorf("history origins %v", origins)
	}
}

func TestHistory(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "Smith", "phone": "1"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"phone": "2"}, nil); err != nil {
		t.Fatal(err)
	}

	h, err := c.History(ctx, "contacts", "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, e := range h {
		fields = append(fields, e.Field)
		if e.Writer != "A" || e.Origin != "here" || e.At.IsZero() || e.Block == "" {
			t.Errorf("history entry %+v", e)
		}
	}
	slices.Sort(fields)
	if !slices.Equal(fields, []string{"last_name", "phone", "phone"}) {
		t.Errorf("history fields %v", fields)
	}

	h, err = c.History(ctx, "contacts", "c1", "phone")
	if err != nil || len(h) != 2 {
		t.Fatalf("history of phone: %+v, %v", h, err)
	}
	// Oldest first: the first write is superseded by the second.
	if h[0].Value != "1" || h[0].Visible || h[1].Value != "2" || !h[1].Visible ||
		len(h[1].Supersedes) != 1 || h[1].Supersedes[0] != "phone/"+h[0].Op {
		t.Errorf("history of phone: %+v", h)
	}

	// A delete is shown under _record.
	if _, err := c.Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	h, err = c.History(ctx, "contacts", "c1", crdt.RecordField)
	if err != nil || len(h) != 1 || h[0].Field != crdt.RecordField || !h[0].Deleted || h[0].Value != nil || len(h[0].Seen) == 0 {
		t.Errorf("history of the record: %+v, %v", h, err)
	}
	// The history of a deleted record stays readable.
	if h, err := c.History(ctx, "contacts", "c1", ""); err != nil || len(h) != 4 {
		t.Errorf("history after delete: %d entries, %v", len(h), err)
	}

	// Raw answer: a JSON array.
	var raw []map[string]any
	call(t, srv, "GET", "/v1/history/contacts/c1?field=last_name", "").wantJSON(t, &raw)
	if len(raw) != 1 || raw[0]["field"] != "last_name" || raw[0]["value"] != "Smith" {
		t.Errorf("raw history %v", raw)
	}

	_, err = c.History(ctx, "contacts", "never", "")
	wantAPIError(t, err, http.StatusNotFound, "contacts/never", "not found")
	_, err = c.History(ctx, "contacts", "c1", "first_name") // a field never written
	wantAPIError(t, err, http.StatusNotFound, "not found")
	_, err = c.History(ctx, "contacts", "c1", "nope")
	wantAPIError(t, err, http.StatusBadRequest, `unknown field "nope"`)
	_, err = c.History(ctx, "contacts", "c1", crdt.DeleteField) // internal name, not a field
	wantAPIError(t, err, http.StatusBadRequest, "unknown field")
	_, err = c.History(ctx, "nope", "c1", "")
	wantAPIError(t, err, http.StatusBadRequest, "unknown collection")
}

// TestIgnored: an open network ignores nothing, and says so with [].
func TestIgnored(t *testing.T) {
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	a := call(t, srv, "GET", "/v1/ignored", "")
	a.wantJSON(t, nil)
	if strings.TrimSpace(a.body) != "[]" {
		t.Errorf("ignored answers %s, want []", a.body)
	}
	ig, err := NewClient(srv).Ignored(context.Background())
	if err != nil || len(ig) != 0 || ig == nil {
		t.Errorf("client ignored: %#v, %v", ig, err)
	}
}
