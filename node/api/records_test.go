package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

// answer is a raw HTTP answer of the server.
type answer struct {
	code   int
	body   string
	header http.Header
}

// call sends one request to h and returns the whole answer.
func call(t *testing.T, h http.Handler, method, path, body string) answer {
	t.Helper()
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, path, nil)
	} else {
		r = httptest.NewRequest(method, path, strings.NewReader(body))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return answer{code: w.Code, body: w.Body.String(), header: w.Header()}
}

// wantJSON checks a 200 JSON answer and decodes it into v (unless nil).
func (a answer) wantJSON(t *testing.T, v any) {
	t.Helper()
	if a.code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", a.code, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(a.body), v); err != nil {
			t.Fatalf("decode %s: %v", a.body, err)
		}
	}
}

// wantError checks an error answer: its status, and a JSON body
// {"error": msg} whose message contains every part.
func (a answer) wantError(t *testing.T, code int, parts ...string) string {
	t.Helper()
	if a.code != code {
		t.Fatalf("status %d, want %d; body %s", a.code, code, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(a.body), &e); err != nil || len(e) != 1 {
		t.Fatalf("error body %q: want {\"error\": ...} (%v)", a.body, err)
	}
	msg, _ := e["error"].(string)
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q does not say %q", msg, p)
		}
	}
	return msg
}

// wantAPIError checks that err is an *Error with the status and a message
// containing every part.
func wantAPIError(t *testing.T, err error, code int, parts ...string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *api.Error %d", err, err, code)
	}
	if e.Status != code {
		t.Errorf("status %d, want %d (%s)", e.Status, code, e.Msg)
	}
	for _, p := range parts {
		if !strings.Contains(e.Msg, p) {
			t.Errorf("error %q does not say %q", e.Msg, p)
		}
	}
	if e.Error() != e.Msg {
		t.Errorf("Error() = %q, want the message %q", e.Error(), e.Msg)
	}
	return e
}

func TestSchemaGetAndApply(t *testing.T) {
	ctx := context.Background()
	b := &testBackend{store: newTestStore(t, storeOpts{})}
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	// An empty store has no collection: writes to one are refused.
	call(t, srv, "PUT", "/v1/records/contacts/c1", `{"fields": {"last_name": "X"}}`).
		wantError(t, http.StatusBadRequest, "unknown collection")

	changed, err := c.ApplySchema(ctx, []byte(testSchema))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"accounts", "accounts.name", "contacts", "contacts.active", "contacts.amount", "contacts.email",
		"contacts.first_name", "contacts.last_name", "contacts.notes", "contacts.phone", "contacts.stage"}
	if !slices.Equal(changed, want) {
		t.Errorf("changed %q, want %q", changed, want)
	}

	// The same schema again changes nothing: an empty list, never null.
	a := call(t, srv, "POST", "/v1/schema", testSchema)
	a.wantJSON(t, nil)
	if strings.TrimSpace(a.body) != `{"changed":[]}` {
		t.Errorf("re-applied schema answers %s, want {\"changed\":[]}", a.body)
	}

	// An added field is additive; the answer names it.
	more := strings.Replace(testSchema, "      name: {type: string, required: true}",
		"      name: {type: string, required: true}\n      city: {type: string}", 1)
	changed, err = c.ApplySchema(ctx, []byte(more))
	if err != nil || !slices.Equal(changed, []string{"accounts.city"}) {
		t.Errorf("add a field: changed %q, %v", changed, err)
	}

	raw, err := c.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sc struct {
		Collections map[string]struct {
			Fields map[string]map[string]any `json:"fields"`
		} `json:"collections"`
	}
	if err := json.Unmarshal(raw, &sc); err != nil {
		t.Fatalf("schema %s: %v", raw, err)
	}
	if f := sc.Collections["contacts"].Fields["amount"]; f["type"] != "number" {
		t.Errorf("schema contacts.amount = %v, want type number (schema %s)", f, raw)
	}
	if f := sc.Collections["accounts"].Fields["city"]; f["type"] != "string" {
		t.Errorf("schema accounts.city = %v, want type string", f)
	}

	// Caller mistakes are 400s and change nothing.
	call(t, srv, "POST", "/v1/schema", "collections: [not, a, map").wantError(t, http.StatusBadRequest)
	destructive := strings.Replace(more, "amount:     {type: number}", "amount:     {type: string}", 1)
	_, err = c.ApplySchema(ctx, []byte(destructive))
	wantAPIError(t, err, http.StatusBadRequest, "contacts.amount")
	removed := strings.Replace(more, "      city: {type: string}\n", "", 1)
	_, err = c.ApplySchema(ctx, []byte(removed))
	wantAPIError(t, err, http.StatusBadRequest, "accounts.city")
	raw2, err := c.Schema(ctx)
	if err != nil || !bytes.Equal(raw, raw2) {
		t.Errorf("refused schemas changed the schema: %s, %v", raw2, err)
	}
}

func TestPut(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{writer: "W1"})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	// Typed fields: a new record.
	res, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "Smith", "amount": 12.5, "active": true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || !slices.Equal(res.Fields, []string{"active", "amount", "last_name"}) {
		t.Errorf("create: %+v", res)
	}
	op, err := crdt.ParseOpID(res.Op)
	if err != nil || op.Writer != "W1" {
		t.Errorf("create: op %q (%v), want an op id of writer W1", res.Op, err)
	}

	// Text, parsed by the fields' types, with typed values in one write.
	res, err = c.Put(ctx, "contacts", "c1", map[string]any{"first_name": "John"},
		map[string]string{"amount": " 13 ", "stage": "won", "active": "no"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Created || !slices.Equal(res.Fields, []string{"active", "amount", "first_name", "stage"}) || res.Op == "" {
		t.Errorf("update: %+v", res)
	}
	rec, err := c.Get(ctx, "contacts", "c1")
	if err != nil {
		t.Fatal(err)
	}
	wantFields := map[string]any{"first_name": "John", "last_name": "Smith", "amount": 13.0, "active": false, "stage": "won"}
	if fmt.Sprint(rec.Fields) != fmt.Sprint(wantFields) {
		t.Errorf("record fields %v, want %v", rec.Fields, wantFields)
	}
	if rec.Collection != "contacts" || rec.ID != "c1" || rec.UpdatedBy != "W1" || rec.UpdatedAt.IsZero() || rec.Conflicts != nil {
		t.Errorf("record %+v", rec)
	}

	// Unchanged values: nothing written, an empty list and no op.
	a := call(t, srv, "PUT", "/v1/records/contacts/c1", `{"fields": {"last_name": "Smith"}, "text": {"amount": "13"}}`)
	a.wantJSON(t, nil)
	if strings.TrimSpace(a.body) != `{"created":false,"fields":[]}` {
		t.Errorf("unchanged put answers %s", a.body)
	}

	// A number in the body is typed by the schema (json.Number).
	a = call(t, srv, "PUT", "/v1/records/contacts/c2", `{"fields": {"last_name": "Doe", "amount": 1e3}}`)
	var pr apijson.PutResponse
	a.wantJSON(t, &pr)
	if !pr.Created {
		t.Errorf("c2: %+v", pr)
	}
	if rec, err := c.Get(ctx, "contacts", "c2"); err != nil || rec.Fields["amount"] != 1000.0 {
		t.Errorf("c2 amount: %v, %v", rec.Fields, err)
	}

	// null clears a field.
	if res, err := c.Put(ctx, "contacts", "c1", map[string]any{"first_name": nil}, nil); err != nil ||
		!slices.Equal(res.Fields, []string{"first_name"}) {
		t.Errorf("clear: %+v, %v", res, err)
	}
	if rec, err := c.Get(ctx, "contacts", "c1"); err != nil || rec.Fields["first_name"] != nil {
		t.Errorf("cleared field still there: %v, %v", rec.Fields, err)
	}

	// Caller mistakes: 400, and nothing written.
	before := b.store.Stats(ctx).MaxHeight
	bad := []struct {
		name, path, body string
		parts            []string
	}{
		{"value and text", "/v1/records/contacts/c1", `{"fields": {"phone": "1"}, "text": {"phone": "2"}}`,
			[]string{`field "phone"`, "given both as a value and as text"}},
		{"empty write", "/v1/records/contacts/c1", `{}`, []string{"no fields to write"}},
		{"empty maps", "/v1/records/contacts/c9", `{"fields": {}, "text": {}}`, []string{"no fields to write"}},
		{"unknown collection", "/v1/records/nope/c1", `{"fields": {"x": "1"}}`, []string{"unknown collection", "nope"}},
		{"bad JSON", "/v1/records/contacts/c1", `{"fields": `, []string{"decode request"}},
		{"not an object", "/v1/records/contacts/c1", `[1, 2]`, []string{"decode request"}},
		{"bad text", "/v1/records/contacts/c1", `{"text": {"amount": "twelve"}}`, []string{`"amount"`, "not a number"}},
		{"bad type", "/v1/records/contacts/c1", `{"fields": {"amount": "12"}}`, []string{`"amount"`, "want a number"}},
		{"unknown field", "/v1/records/contacts/c1", `{"text": {"nmae": "x"}}`, []string{`unknown field "nmae"`}},
		{"bad enum", "/v1/records/contacts/c1", `{"text": {"stage": "maybe"}}`, []string{`"stage"`}},
		{"required missing", "/v1/records/contacts/c3", `{"fields": {"first_name": "Ann"}}`, []string{`"last_name"`, "required"}},
		{"required cleared", "/v1/records/contacts/c1", `{"fields": {"last_name": null}}`, []string{`"last_name"`, "required"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			call(t, srv, "PUT", tc.path, tc.body).wantError(t, http.StatusBadRequest, tc.parts...)
		})
	}
	if h := b.store.Stats(ctx).MaxHeight; h != before {
		t.Errorf("refused writes made %d deltas", h-before)
	}
	if _, err := c.Get(ctx, "contacts", "c3"); err == nil {
		t.Errorf("refused create of c3 left a record")
	}

	// The client sees the same as *Error.
	_, err = c.Put(ctx, "contacts", "c1", map[string]any{"phone": "1"}, map[string]string{"phone": "2"})
	wantAPIError(t, err, http.StatusBadRequest, "given both as a value and as text")
	_, err = c.Put(ctx, "contacts", "c1", nil, nil)
	wantAPIError(t, err, http.StatusBadRequest, "no fields to write")
}

func TestPutUnique(t *testing.T) {
	ctx := context.Background()
	c := newTestClient(newTestBackend(t, storeOpts{}))
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "A", "email": "a@example.com"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.Put(ctx, "contacts", "c2", map[string]any{"last_name": "B"}, map[string]string{"email": "a@example.com"})
	wantAPIError(t, err, http.StatusBadRequest, "contacts/c2", `already used by record "c1"`, "unique")
	if _, err := c.Get(ctx, "contacts", "c2"); err == nil {
		t.Error("the refused write created c2")
	}
	// The holder itself may write its value again, and give it up.
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"email": "a@example.com", "first_name": "Al"}, nil); err != nil {
		t.Errorf("holder rewrites its value: %v", err)
	}
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"email": "b@example.com"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "contacts", "c2", map[string]any{"last_name": "B", "email": "a@example.com"}, nil); err != nil {
		t.Errorf("a released value is free: %v", err)
	}
}

// TestWeirdIDs: ids with dots, slashes, spaces and percents survive the
// trip through the URL (the client escapes, the router unescapes).
func TestWeirdIDs(t *testing.T) {
	ctx := context.Background()
	c := newTestClient(newTestBackend(t, storeOpts{}))
	ids := []string{".", "..", "a/b", "../x", "a.b", "with space", "50%", "q?x=1#f", "é"}
	for _, id := range ids {
		if _, err := c.Put(ctx, "contacts", id, map[string]any{"last_name": id}, nil); err != nil {
			t.Errorf("put %q: %v", id, err)
			continue
		}
		rec, err := c.Get(ctx, "contacts", id)
		if err != nil || rec.ID != id || rec.Fields["last_name"] != id {
			t.Errorf("get %q: %+v, %v", id, rec, err)
		}
		if h, err := c.History(ctx, "contacts", id, "last_name"); err != nil || len(h) != 1 {
			t.Errorf("history %q: %v, %v", id, h, err)
		}
	}
	n := 0
	if err := c.List(ctx, "contacts", ListOptions{}, func([]byte) error { n++; return nil }); err != nil || n != len(ids) {
		t.Errorf("list: %d records, %v; want %d", n, err, len(ids))
	}
	for _, id := range ids {
		if _, err := c.Delete(ctx, "contacts", id); err != nil {
			t.Errorf("delete %q: %v", id, err)
		}
	}
}

func TestGetAndDelete(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	call(t, srv, "GET", "/v1/records/contacts/nobody", "").wantError(t, http.StatusNotFound, "not found")
	_, err := c.Get(ctx, "contacts", "nobody")
	wantAPIError(t, err, http.StatusNotFound, "not found")
	// A record of an unknown collection is a missing record (a write to it
	// is a 400: TestPut).
	call(t, srv, "GET", "/v1/records/nope/c1", "").wantError(t, http.StatusNotFound, "not found")
	call(t, srv, "DELETE", "/v1/records/contacts/nobody", "").wantError(t, http.StatusNotFound, "not found")

	if err := b.store.SetNodeInfo(ctx, "laptop-1", crdt.RoleLaptop); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "Smith"}, nil); err != nil {
		t.Fatal(err)
	}
	var rec apijson.Record
	call(t, srv, "GET", "/v1/records/contacts/c1", "").wantJSON(t, &rec)
	if rec.UpdatedBy != "A" || rec.UpdatedByName != "laptop-1" {
		t.Errorf("updated by %q %q, want A laptop-1 (Names)", rec.UpdatedBy, rec.UpdatedByName)
	}

	var del map[string]string
	call(t, srv, "DELETE", "/v1/records/contacts/c1", "").wantJSON(t, &del)
	if op, err := crdt.ParseOpID(del["op"]); err != nil || op.Writer != "A" || len(del) != 1 {
		t.Errorf("delete answers %v (%v)", del, err)
	}
	call(t, srv, "GET", "/v1/records/contacts/c1", "").wantError(t, http.StatusNotFound, "not found")
	_, err = c.Delete(ctx, "contacts", "c1")
	wantAPIError(t, err, http.StatusNotFound, "c1", "not found")

	// A write brings it back as a new record.
	if res, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "Again"}, nil); err != nil || !res.Created {
		t.Errorf("put after delete: %+v, %v", res, err)
	}
	if op, err := c.Delete(ctx, "contacts", "c1"); err != nil || op == "" {
		t.Errorf("client delete: %q, %v", op, err)
	}
}

// listLines lists a collection and decodes every line.
func listLines(t *testing.T, c *Client, collection string, opts ListOptions) []map[string]any {
	t.Helper()
	var out []map[string]any
	err := c.List(context.Background(), collection, opts, func(line []byte) error {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("line %s: %w", line, err)
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ids(lines []map[string]any) []string {
	var out []string
	for _, l := range lines {
		id, _ := l["id"].(string)
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func TestList(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	// An empty collection is an empty stream.
	a := call(t, srv, "GET", "/v1/records/contacts", "")
	if a.code != http.StatusOK || a.body != "" || a.header.Get("Content-Type") != "application/x-ndjson" {
		t.Errorf("empty list: %d %q %q", a.code, a.header.Get("Content-Type"), a.body)
	}

	big := strings.Repeat("x", 200<<10) // a line longer than the scanner's first buffer
	recs := map[string]map[string]any{
		"c1": {"last_name": "One", "stage": "won", "amount": 10.0},
		"c2": {"last_name": "Two", "stage": "lead", "amount": 20.0},
		"c3": {"last_name": "Three", "stage": "won", "amount": 20.0, "active": true},
		"c4": {"last_name": "Four", "notes": big},
	}
	for id, f := range recs {
		if _, err := c.Put(ctx, "contacts", id, f, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Put(ctx, "accounts", "a1", map[string]any{"name": "Acme"}, nil); err != nil {
		t.Fatal(err)
	}

	all := listLines(t, c, "contacts", ListOptions{})
	if got := ids(all); !slices.Equal(got, []string{"c1", "c2", "c3", "c4"}) {
		t.Fatalf("list ids %v", got)
	}
	for _, l := range all {
		if l["collection"] != "contacts" || l["updated_by"] != "A" || l["fields"] == nil {
			t.Errorf("list line %v: want an apijson.Record", l)
		}
		if l["id"] == "c4" && l["fields"].(map[string]any)["notes"] != big {
			t.Errorf("c4's long notes did not survive the listing")
		}
	}

	where := []struct {
		where string
		want  []string
	}{
		{"stage=won", []string{"c1", "c3"}},
		{"amount=20", []string{"c2", "c3"}},
		{"amount= 20.0 ", []string{"c2", "c3"}}, // parsed by the field's type
		{"active=yes", []string{"c3"}},
		{"last_name=Four", []string{"c4"}},
		{"stage=lost", nil},
		{"first_name=", nil}, // the empty text of a string
	}
	for _, w := range where {
		if got := ids(listLines(t, c, "contacts", ListOptions{Where: w.where})); !slices.Equal(got, w.want) {
			t.Errorf("where %s: %v, want %v", w.where, got, w.want)
		}
	}

	// Export: import lines, "id" plus the fields.
	exp := listLines(t, c, "contacts", ListOptions{Export: true, Where: "stage=won"})
	if got := ids(exp); !slices.Equal(got, []string{"c1", "c3"}) {
		t.Fatalf("export ids %v", got)
	}
	for _, l := range exp {
		want := map[string]any{"id": l["id"]}
		for k, v := range recs[l["id"].(string)] {
			want[k] = v
		}
		if fmt.Sprint(l) != fmt.Sprint(want) {
			t.Errorf("export line %v, want %v", l, want)
		}
	}
	// Exported lines import back unchanged.
	var buf bytes.Buffer
	if err := c.List(ctx, "contacts", ListOptions{Export: true}, func(line []byte) error {
		buf.Write(line)
		buf.WriteByte('\n')
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Import(ctx, "contacts", &buf, crdt.ImportOptions{}, nil)
	if err != nil || res.Records != 4 || res.Unchanged != 4 || res.Written != 0 {
		t.Errorf("re-import of the export: %+v, %v", res, err)
	}

	// Bad requests: 400 before any line.
	bad := []struct {
		path  string
		parts []string
	}{
		{"/v1/records/contacts?where=stage", []string{`"stage"`, "want FIELD=VALUE"}},
		{"/v1/records/contacts?where=nope%3D1", []string{`"nope"`}},
		{"/v1/records/contacts?where=amount%3Dmany", []string{`"amount"`}},
		{"/v1/records/contacts?where=stage%3Dmaybe", []string{`"stage"`}},
		{"/v1/records/nope", []string{"unknown collection"}},
	}
	for _, tc := range bad {
		call(t, srv, "GET", tc.path, "").wantError(t, http.StatusBadRequest, tc.parts...)
	}
	err = c.List(ctx, "contacts", ListOptions{Where: "stage"}, func([]byte) error {
		t.Error("a refused list called fn")
		return nil
	})
	wantAPIError(t, err, http.StatusBadRequest, "want FIELD=VALUE")

	// fn's error stops the listing and is returned as is.
	stop := errors.New("stop here")
	n := 0
	err = c.List(ctx, "contacts", ListOptions{}, func([]byte) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn error: %v after %d lines", err, n)
	}
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{batchOps: 2})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	if _, err := c.Put(ctx, "contacts", "c0", map[string]any{"last_name": "Zero", "email": "z@example.com"}, nil); err != nil {
		t.Fatal(err)
	}
	input := `{"id": "c1", "last_name": "One", "amount": 1}
{"id": "c2", "last_name": "Two", "stage": "won"}

{"id": "c3", "last_name": "Three", "active": true}
{"id": "c4", "last_name": "Four", "amount": 4.5}
{"id": "c0", "last_name": "Zero", "email": "z@example.com"}
`
	var progress []apijson.ImportProgress
	res, err := c.Import(ctx, "contacts", strings.NewReader(input), crdt.ImportOptions{}, func(p apijson.ImportProgress) {
		progress = append(progress, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := crdt.ImportResult{Records: 5, Written: 4, Created: res.Created, Unchanged: 1, Deltas: res.Deltas}
	if !reflect.DeepEqual(res, want) || res.Deltas < 2 {
		t.Errorf("result %+v, want %+v with at least 2 deltas (BatchOps 2)", res, want)
	}
	if len(progress) < 2 {
		t.Fatalf("progress %+v: want progress lines and a final line", progress)
	}
	last := progress[len(progress)-1]
	if last.Done != 5 || last.Total != 5 || last.Result == nil || !reflect.DeepEqual(*last.Result, res) || last.Error != "" {
		t.Errorf("final line %+v", last)
	}
	for i, p := range progress[:len(progress)-1] {
		if p.Total != 5 || p.Result != nil || p.Error != "" || p.Done <= 0 || p.Done > 5 ||
			(i > 0 && p.Done < progress[i-1].Done) {
			t.Errorf("progress line %d: %+v", i, p)
		}
	}
	for id, v := range map[string]any{"c1": 1.0, "c4": 4.5} {
		if rec, err := c.Get(ctx, "contacts", id); err != nil || rec.Fields["amount"] != v {
			t.Errorf("imported %s: %v, %v", id, rec.Fields, err)
		}
	}

	// The raw answer is JSON Lines: progress, then the result.
	a := call(t, srv, "POST", "/v1/import/accounts", `{"id": "a1", "name": "Acme"}`+"\n")
	lines := strings.Split(strings.TrimSpace(a.body), "\n")
	if a.code != http.StatusOK || a.header.Get("Content-Type") != "application/x-ndjson" || len(lines) < 2 ||
		lines[0] != `{"done":1,"total":1}` ||
		lines[len(lines)-1] != `{"done":1,"total":1,"result":{"Records":1,"Written":1,"Created":1,"Unchanged":0,"Deltas":1}}` {
		t.Errorf("raw import answer: %d %q %q", a.code, a.header.Get("Content-Type"), a.body)
	}

	// A bad line fails the whole import with its line number: 400, nothing
	// written.
	before := b.store.Stats(ctx).MaxHeight
	bad := []struct {
		name, coll, body string
		parts            []string
	}{
		{"not JSON", "contacts", "{\"id\": \"n1\", \"last_name\": \"N\"}\n{\"id\": \"n2\", \"last_name\": \n", []string{"line 2", "not a JSON object"}},
		{"no id", "contacts", "{\"id\": \"n1\", \"last_name\": \"N\"}\n\n{\"last_name\": \"N\"}\n", []string{"line 3", `"id"`}},
		{"two values", "contacts", `{"id": "n1", "last_name": "N"} {"id": "n2"}`, []string{"line 1", "more than one JSON value"}},
		{"bad value", "contacts", "{\"id\": \"n1\", \"last_name\": \"N\"}\n{\"id\": \"n2\", \"last_name\": \"N\", \"amount\": \"x\"}\n", []string{"line 2", `"amount"`}},
		{"required", "contacts", "{\"id\": \"n1\", \"last_name\": \"N\"}\n{\"id\": \"n2\", \"first_name\": \"N\"}\n", []string{"line 2", `"last_name"`, "required"}},
		{"unique", "contacts", "{\"id\": \"n1\", \"last_name\": \"N\", \"email\": \"z@example.com\"}\n", []string{"line 1", `already used by record "c0"`}},
		{"unique within", "contacts", "{\"id\": \"n1\", \"last_name\": \"N\", \"email\": \"q@example.com\"}\n{\"id\": \"n2\", \"last_name\": \"N\", \"email\": \"q@example.com\"}\n", []string{"line 2", `"n1"`}},
		{"unknown collection", "nope", `{"id": "n1"}`, []string{"unknown collection"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			call(t, srv, "POST", "/v1/import/"+tc.coll, tc.body).wantError(t, http.StatusBadRequest, tc.parts...)
			called := false
			_, err := c.Import(ctx, tc.coll, strings.NewReader(tc.body), crdt.ImportOptions{}, func(apijson.ImportProgress) { called = true })
			wantAPIError(t, err, http.StatusBadRequest, tc.parts...)
			if called {
				t.Error("a refused import reported progress")
			}
		})
	}
	if h := b.store.Stats(ctx).MaxHeight; h != before {
		t.Errorf("refused imports made %d deltas", h-before)
	}
	for _, id := range []string{"n1", "n2"} {
		if _, err := c.Get(ctx, "contacts", id); err == nil {
			t.Errorf("a refused import wrote %s", id)
		}
	}

	// An empty input imports nothing, and says so.
	res, err = c.Import(ctx, "contacts", strings.NewReader("\n\n"), crdt.ImportOptions{}, nil)
	if err != nil || !reflect.DeepEqual(res, crdt.ImportResult{}) {
		t.Errorf("empty import: %+v, %v", res, err)
	}
}

// TestListCutShort: a listing that fails once lines are on their way ends
// with an error line; the client returns that error after the lines before
// it.
func TestListCutShort(t *testing.T) {
	ctx := context.Background()
	var failAfter atomic.Int64
	failAfter.Store(-1)
	b := newTestBackend(t, storeOpts{failAfter: &failAfter})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := c.Put(ctx, "contacts", id, map[string]any{"last_name": id}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(listLines(t, c, "contacts", ListOptions{})); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
	failAfter.Store(4) // c1's and c2's entries, then the error
	a := call(t, srv, "GET", "/v1/records/contacts", "")
	lines := strings.Split(strings.TrimSpace(a.body), "\n")
	if a.code != http.StatusOK || len(lines) < 2 || !strings.HasPrefix(lines[0], `{"collection":"contacts","id":"c1"`) ||
		!strings.HasPrefix(lines[len(lines)-1], `{"error":`) || !strings.Contains(lines[len(lines)-1], errReadFailed.Error()) {
		t.Fatalf("cut listing: %d %q", a.code, a.body)
	}
	var got []string
	err := c.List(ctx, "contacts", ListOptions{}, func(line []byte) error {
		got = append(got, string(line))
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), errReadFailed.Error()) || len(got) != len(lines)-1 {
		t.Errorf("List: %v after %d lines, want the read error after %d", err, len(got), len(lines)-1)
	}
	failAfter.Store(0)
	// Before anything is written, the failure is still a stream error.
	if err := c.List(ctx, "contacts", ListOptions{}, func([]byte) error { return nil }); err == nil ||
		!strings.Contains(err.Error(), errReadFailed.Error()) {
		t.Errorf("List failing at once: %v", err)
	}
}

// TestDiskFull: a write refused under the disk reserve is a 507 that says
// nothing was written; the same write succeeds once there is room.
func TestDiskFull(t *testing.T) {
	ctx := context.Background()
	var full atomic.Bool
	b := newTestBackend(t, storeOpts{full: &full})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "A"}, nil); err != nil {
		t.Fatal(err)
	}
	full.Store(true)
	call(t, srv, "PUT", "/v1/records/contacts/c1", `{"fields": {"phone": "1"}}`).
		wantError(t, http.StatusInsufficientStorage, "not written", "disk almost full")
	call(t, srv, "DELETE", "/v1/records/contacts/c1", "").wantError(t, http.StatusInsufficientStorage, "disk almost full")
	_, err := c.Import(ctx, "contacts", strings.NewReader(`{"id": "c2", "last_name": "B"}`), crdt.ImportOptions{}, nil)
	wantAPIError(t, err, http.StatusInsufficientStorage, "disk almost full")
	_, err = c.ApplySchema(ctx, []byte(strings.Replace(testSchema, "notes:", "memo: {type: string}\n      notes:", 1)))
	wantAPIError(t, err, http.StatusInsufficientStorage, "disk almost full")
	// Reads still work.
	if rec, err := c.Get(ctx, "contacts", "c1"); err != nil || rec.Fields["phone"] != nil {
		t.Errorf("get while full: %v, %v", rec.Fields, err)
	}
	full.Store(false)
	if res, err := c.Put(ctx, "contacts", "c1", map[string]any{"phone": "1"}, nil); err != nil || len(res.Fields) != 1 {
		t.Errorf("put with room again: %+v, %v", res, err)
	}
}

// TestImportCutShort: an import that fails once deltas are written ends its
// stream with an error line; the client returns an *ImportError saying how
// far it got, and the records of the deltas written stay.
func TestImportCutShort(t *testing.T) {
	ctx := context.Background()
	var room atomic.Int64
	room.Store(1 << 30)
	b := newTestBackend(t, storeOpts{room: &room, batchOps: 2})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)
	var in strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&in, `{"id": "c%d", "last_name": "L"}`+"\n", i)
	}
	// Room to open the import's delta and commit the first one (2
	// records), not the second.
	room.Store(2)
	var progress []apijson.ImportProgress
	res, err := c.Import(ctx, "contacts", strings.NewReader(in.String()), crdt.ImportOptions{}, func(p apijson.ImportProgress) {
		progress = append(progress, p)
	})
	var ie *ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("Import: %v (%T), want *ImportError", err, err)
	}
	if ie.Done != 2 || ie.Total != 5 || !strings.Contains(ie.Msg, "not written") || !strings.Contains(ie.Msg, "disk almost full") {
		t.Errorf("ImportError %+v", ie)
	}
	if !reflect.DeepEqual(res, crdt.ImportResult{}) || len(progress) != 2 || progress[0].Done != 2 || progress[1].Error == "" {
		t.Errorf("result %+v, progress %+v", res, progress)
	}
	for id, want := range map[string]bool{"c1": true, "c2": true, "c3": false, "c4": false, "c5": false} {
		if _, err := c.Get(ctx, "contacts", id); (err == nil) != want {
			t.Errorf("%s written: %t, want %t", id, err == nil, want)
		}
	}
	// The raw answer: a 200 whose last line carries the error.
	input := strings.NewReplacer("c1", "d1", "c2", "d2", "c3", "d3").Replace(in.String())
	room.Store(2)
	a := call(t, srv, "POST", "/v1/import/contacts", input)
	lines := strings.Split(strings.TrimSpace(a.body), "\n")
	if a.code != http.StatusOK || len(lines) != 2 || lines[0] != `{"done":2,"total":5}` ||
		!strings.HasPrefix(lines[1], `{"done":2,"total":5,"error":"import contacts: not written`) {
		t.Errorf("raw answer: %d %q", a.code, a.body)
	}
	// Refused before the first delta: a plain 507, nothing written.
	room.Store(1)
	call(t, srv, "POST", "/v1/import/contacts", strings.Replace(input, "d1", "e1", 1)).
		wantError(t, http.StatusInsufficientStorage, "not written", "disk almost full")
	if _, err := c.Get(ctx, "contacts", "e1"); err == nil {
		t.Error("a refused import wrote e1")
	}
}

// TestConcurrentRequests: the server serves many requests at once (run
// with -race).
func TestConcurrentRequests(t *testing.T) {
	ctx := context.Background()
	c := newTestClient(newTestBackend(t, storeOpts{}))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Go(func() {
			id := fmt.Sprintf("c%d", i)
			if _, err := c.Put(ctx, "contacts", id, map[string]any{"last_name": id}, nil); err != nil {
				errs <- err
				return
			}
			if _, err := c.Get(ctx, "contacts", id); err != nil {
				errs <- err
			}
			if err := c.List(ctx, "contacts", ListOptions{}, func([]byte) error { return nil }); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(listLines(t, c, "contacts", ListOptions{})); n != 16 {
		t.Errorf("%d records, want 16", n)
	}
}
