package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
)

// FuzzCSVImport feeds arbitrary bytes to the CSV import conversion with the
// reference contacts schema, read with commas or semicolons. It must never
// panic; every record it accepts must be a valid write of the schema (the
// required-on-create check needs the store and is the node's), must reach
// the node as one JSON line in order with the same values, and must come
// back the same through the CSV export (encoding/csv reads a CRLF inside a
// quoted cell as LF, so those are compared as LF).
func FuzzCSVImport(f *testing.F) {
	for _, seed := range []string{
		"id,last_name,first_name,amount,active,met_on,stage,account,email\nc1,Smith,Jeff,1200.50,yes,2024-03-01,lead,a1,jeff@example.com\nc2,Rodman,,-0,FALSE,,,,\n",
		"\uFEFFid;last_name;phone\r\nc1;\"Smith; Jr.\";\"+41 44\r\nline two\"\r\n;;\r\n",
		"id,last_name\n\"c \"\"1\"\"\",\"a,b\"\n\n",
		"id,last_name\nc1\n",
		"id,last_name,last_name\n",
		"last_name\nSmith\n",
		"id,nickname\n",
		"id,amount\nc1,12,5\n",
		"id,amount\nc1,0x10\n",
		"id,met_on\nc1,10000-01-01\n",
		"id,stage\n,won\n",
		"id,last_name\nc1,Sm\"ith\n",
		"id,last_name\nc1,\"Smith\n",
		"id,last_name\nc1,\xff\n",
		"",
		"\uFEFF",
		"\r\n\r\n",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(strings.ReplaceAll(seed, ",", ";")), true)
	}
	coll := testContacts(f)
	f.Fuzz(func(t *testing.T, data []byte, semicolon bool) {
		comma := ','
		if semicolon {
			comma = ';'
		}
		recs, err := readCSV(bytes.NewReader(data), coll, comma)
		if err != nil {
			if _, ok := err.(*csvError); !ok {
				t.Fatalf("error of type %T, not located: %v", err, err)
			}
			return
		}
		prev := 1
		for _, r := range recs {
			if r.Line <= prev {
				t.Fatalf("record %q on line %d after line %d", r.ID, r.Line, prev)
			}
			prev = r.Line
			if err := checkCSVID(r.ID); err != nil {
				t.Fatalf("accepted id %q: %v", r.ID, err)
			}
			if _, has := r.Fields["id"]; has {
				t.Fatalf("the id is among the fields: %+v", r)
			}
			norm, err := coll.ValidateWrite(r.ID, r.Fields, false)
			if err != nil {
				t.Fatalf("line %d: accepted record %+v fails validation: %v", r.Line, r, err)
			}
			if !reflect.DeepEqual(norm, r.Fields) {
				t.Fatalf("line %d: values not canonical: %v, normalized %v", r.Line, r.Fields, norm)
			}
		}

		// What the node receives.
		var body bytes.Buffer
		if err := writeImportLines(&body, recs); err != nil {
			t.Fatal(err)
		}
		sent, err := apijson.ReadLines(&body)
		if err != nil {
			t.Fatalf("the node refuses the lines: %v", err)
		}
		if len(sent) != len(recs) {
			t.Fatalf("%d records sent as %d", len(recs), len(sent))
		}
		for i, s := range sent {
			norm, err := coll.ValidateWrite(s.ID, s.Fields, false)
			if err != nil || s.Line != i+1 || s.ID != recs[i].ID || !reflect.DeepEqual(norm, recs[i].Fields) {
				t.Fatalf("record %d sent as line %d %q %v (%v), want %q %v", i, s.Line, s.ID, norm, err, recs[i].ID, recs[i].Fields)
			}
		}

		// Export and read back.
		var out bytes.Buffer
		ex := newCSVExporter(&out, coll, comma)
		for _, r := range recs {
			if err := ex.write(r.ID, r.Fields); err != nil {
				t.Fatal(err)
			}
		}
		if err := ex.flush(); err != nil {
			t.Fatal(err)
		}
		back, err := readCSV(bytes.NewReader(out.Bytes()), coll, comma)
		if err != nil {
			t.Fatalf("the export does not read back: %v\n%q", err, out.String())
		}
		if len(back) != len(recs) {
			t.Fatalf("%d records exported, %d read back", len(recs), len(back))
		}
		lf := func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
		for i, r := range recs {
			want := make(map[string]any, len(r.Fields))
			for k, v := range r.Fields {
				if s, ok := v.(string); ok {
					v = lf(s)
				}
				want[k] = v
			}
			if back[i].ID != lf(r.ID) || !reflect.DeepEqual(back[i].Fields, want) {
				t.Fatalf("record %d: exported %q %v, read back %q %v", i, r.ID, r.Fields, back[i].ID, back[i].Fields)
			}
		}
	})
}
