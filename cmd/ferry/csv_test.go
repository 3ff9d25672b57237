package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/schema"
)

// csvTestSchema is the reference CRM schema (demo_schema.yaml), which has a
// field of every type.
const csvTestSchema = `
collections:
  accounts:
    fields:
      name: {type: string, required: true}
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      email:      {type: string, unique: true}
      phone:      {type: string}
      stage:      {type: enum, values: [lead, qualified, won, lost]}
      amount:     {type: number}
      active:     {type: bool}
      met_on:     {type: time}
      account:    {type: ref, to: accounts}
`

func testContacts(t testing.TB) *schema.Collection {
	t.Helper()
	return collectionOf(t, csvTestSchema, "contacts")
}

// collectionOf parses a schema and returns one of its collections.
func collectionOf(t testing.TB, yaml, name string) *schema.Collection {
	t.Helper()
	sc, err := schema.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	c, err := sc.Collection(name)
	if err != nil {
		t.Fatal(err)
	}
	c.Name = name
	return c
}

func mustReadCSV(t *testing.T, text string, comma rune) []csvRecord {
	t.Helper()
	recs, err := readCSV(strings.NewReader(text), testContacts(t), comma)
	if err != nil {
		t.Fatalf("readCSV: %v\ninput:\n%s", err, text)
	}
	return recs
}

func TestCSVReadGood(t *testing.T) {
	in := "id,last_name,first_name,amount,active,met_on,stage,account,email\n" +
		"c1,Smith,Jeff,1200.50,yes,2024-03-01,lead,a1,jeff@example.com\n" +
		"c2,Rodman,,-0,FALSE,2024-03-01T10:00:00+02:00,,,\n" +
		"\n" + // a blank line: skipped
		",,,,,,,,\n" + // a row of empty cells: skipped
		"c3, Keller ,Anna, 7 ,on,,won,,\n"
	got := mustReadCSV(t, in, ',')
	want := []csvRecord{
		{Line: 2, ID: "c1", Fields: map[string]any{"last_name": "Smith", "first_name": "Jeff", "amount": 1200.5, "active": true,
			"met_on": "2024-03-01T00:00:00Z", "stage": "lead", "account": "a1", "email": "jeff@example.com"}},
		{Line: 3, ID: "c2", Fields: map[string]any{"last_name": "Rodman", "amount": 0.0, "active": false, "met_on": "2024-03-01T08:00:00Z"}},
		{Line: 6, ID: "c3", Fields: map[string]any{"last_name": " Keller ", "first_name": "Anna", "amount": 7.0, "active": true, "stage": "won"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readCSV:\n got  %+v\n want %+v", got, want)
	}
	// Only a header: no records, no error.
	if got := mustReadCSV(t, "id,last_name\n", ','); len(got) != 0 {
		t.Errorf("header only: %+v", got)
	}
}

func TestCSVReadErrors(t *testing.T) {
	long := strings.Repeat("x", 513)
	for _, tc := range []struct{ name, in, want string }{
		{"empty file", "", `line 1: the file is empty: want a header row naming the columns, one of them the id`},
		{"unknown column", "id,last_name,phone_number\n", `line 1: unknown column "phone_number": contacts has no such field or alias (its fields: account, active, amount, email, first_name, last_name, met_on, phone, stage); map it with --map "phone_number=FIELD", or leave it out with --ignore-unknown`},
		{"duplicate column", "id,email,last_name, email\n", `line 1: column "email" appears twice in the header (columns 2 and 4)`},
		{"missing id", "last_name,email\nSmith,s@example.com\n", `line 1: no "id" column in the header (it has "last_name", "email"): name the column that holds the ids (--id-column "Contact ID"), derive ids from fields (--id-from email), or give every row a new id (--new-ids)`},
		{"unnamed column", "id,,last_name\n", `line 1: column 2 has no name in the header`},
		{"too few cells", "id,last_name,email\nc1,Smith,s@x\nc2,Jones\n", `line 3: 2 cells, but the header has 3 columns`},
		{"too many cells", "id,last_name\nc1,Smith,extra\n", `line 2: 3 cells, but the header has 2 columns (a cell holding ',' must be quoted)`},
		{"empty id", "id,last_name\nc1,Smith\n,Jones\n", `line 3, column "id": empty record id`},
		{"id too long", "id,last_name\n" + long + ",Smith\n", `line 2, column "id": record id "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"... is longer than 512 bytes`},
		{"id not UTF-8", "id,last_name\nc\xff,Smith\n", `line 2, column "id": record id "c\xff" is not valid UTF-8`},
		{"decimal comma", "id;last_name;amount\nc1;Smith;\"12,5\"\n", `line 2, column "amount" (record "c1"): value "12,5" is not a number`},
		{"bad bool", "id,active\nc1,maybe\n", `line 2, column "active" (record "c1"): value "maybe" is not a boolean (want true/false, yes/no, 1/0 or on/off)`},
		{"bad enum", "id,stage\nc1,Won\n", `line 2, column "stage" (record "c1"): value "Won" is not one of lead, qualified, won, lost`},
		{"bad time", "id,met_on\nc1,01/03/2024\n", `line 2, column "met_on" (record "c1"): value "01/03/2024" is not a time (want RFC 3339 like 2006-01-02T15:04:05Z, or a date like 2006-01-02)`},
		{"spaces are a value", "id,amount\nc1,  \n", `line 2, column "amount" (record "c1"): value "  " is not a number`},
		{"string not UTF-8", "id,last_name\nc1,Sm\xffth\n", `line 2, column "last_name" (record "c1"): value "Sm\xffth" is not valid UTF-8`},
		{"bare quote", "id,last_name\nc1,Sm\"ith\n", `line 2: bare " in non-quoted-field (at byte 6; a cell holding quotes is quoted and doubles them: "say ""hi""")`},
		{"unclosed quote", "id,last_name\nc1,Smith\nc2,\"Jones\nc3,Keller\n", `line 3: extraneous or missing " in quoted-field (at line 4, byte 11; a cell holding quotes is quoted and doubles them: "say ""hi""")`},
		{"error after a multi-line cell", "id,last_name,phone\nc1,Smith,\"a\nb\"\nc2,Jones,x\nc3,Keller,\"\n\",7\n", `line 5: 4 cells, but the header has 3 columns (a cell holding ',' must be quoted)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			comma := ','
			if strings.HasPrefix(tc.in, "id;") {
				comma = ';'
			}
			recs, err := readCSV(strings.NewReader(tc.in), testContacts(t), comma)
			if err == nil {
				t.Fatalf("accepted: %+v", recs)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got  %s\n want %s", err, tc.want)
			}
		})
	}
}

func TestCSVBOMCRLFQuotes(t *testing.T) {
	in := "\uFEFFid,last_name,first_name,phone\r\n" +
		"c1,\"Smith, Jr.\",\"Jeff \"\"JJ\"\"\",\"+41 44\r\nline two\"\r\n" +
		"c2,Jones,,\r\n" +
		"c3,\"\",Anna,\"\"\r\n" // quoted empty cells are empty cells too
	got := mustReadCSV(t, in, ',')
	want := []csvRecord{
		{Line: 2, ID: "c1", Fields: map[string]any{"last_name": "Smith, Jr.", "first_name": `Jeff "JJ"`, "phone": "+41 44\nline two"}},
		{Line: 4, ID: "c2", Fields: map[string]any{"last_name": "Jones"}},
		{Line: 5, ID: "c3", Fields: map[string]any{"first_name": "Anna"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readCSV:\n got  %+v\n want %+v", got, want)
	}
	// A BOM anywhere else is data: here it makes the first column unknown.
	if _, err := readCSV(strings.NewReader("\uFEFF\uFEFFid,last_name\n"), testContacts(t), ','); err == nil || !strings.Contains(err.Error(), "unknown column") {
		t.Errorf("a second BOM: %v", err)
	}
}

func TestCSVSemicolons(t *testing.T) {
	in := "\uFEFFid;last_name;first_name;amount;met_on\r\n" +
		"c1;Müller;\"Anna; Maria\";12.5;2024-03-01\r\n" +
		"c2;Dubois;Léa,Marie;-3;\r\n"
	got := mustReadCSV(t, in, ';')
	want := []csvRecord{
		{Line: 2, ID: "c1", Fields: map[string]any{"last_name": "Müller", "first_name": "Anna; Maria", "amount": 12.5, "met_on": "2024-03-01T00:00:00Z"}},
		{Line: 3, ID: "c2", Fields: map[string]any{"last_name": "Dubois", "first_name": "Léa,Marie", "amount": -3.0}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readCSV:\n got  %+v\n want %+v", got, want)
	}
	// The same file read with commas has one column "id;last_name;...".
	if _, err := readCSV(strings.NewReader(in), testContacts(t), ','); err == nil || !strings.Contains(err.Error(), `unknown column "id;last_name;first_name;amount;met_on"`) {
		t.Errorf("semicolon file read with commas: %v", err)
	}
}

func TestCSVDelimiterFlag(t *testing.T) {
	for in, want := range map[string]rune{",": ',', ";": ';', `\t`: '\t', "tab": '\t', "\t": '\t', "|": '|', "§": '§'} {
		if got, err := parseDelimiter(in); err != nil || got != want {
			t.Errorf("parseDelimiter(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ";;", `"`, "\n", "\r", "\xff", "\uFEFF"} {
		if got, err := parseDelimiter(in); err == nil {
			t.Errorf("parseDelimiter(%q) = %q, want an error", in, got)
		}
	}
}

// TestCSVRoundTrip exports records the way the node streams them (JSON
// export lines) and reads the CSV back.
func TestCSVRoundTrip(t *testing.T) {
	coll := testContacts(t)
	lines := []string{
		`{"id":"c1","last_name":"Smith, Jr.","first_name":"Jeff \"JJ\"","amount":1200.5,"active":true,"met_on":"2024-03-01T09:00:00.123Z","stage":"won","account":"a1","email":"jeff@example.com"}`,
		`{"id":"c 2","last_name":"  spaces  ","phone":"line one\nline two; three","amount":1e21,"active":false}`,
		`{"id":"c3","last_name":"Tiny","amount":0.000001,"met_on":"0001-01-01T00:00:00Z"}`,
		`{"id":"#4","last_name":"\\.","first_name":"=SUM(A1)"}`,
	}
	for _, comma := range []rune{',', ';', '\t'} {
		var out bytes.Buffer
		ex := newCSVExporter(&out, coll, comma)
		for _, l := range lines {
			if err := ex.writeLine([]byte(l)); err != nil {
				t.Fatal(err)
			}
		}
		if err := ex.flush(); err != nil {
			t.Fatal(err)
		}
		if comma == ',' {
			header, _, _ := strings.Cut(out.String(), "\n")
			if header != "id,account,active,amount,email,first_name,last_name,met_on,phone,stage" {
				t.Errorf("header %q", header)
			}
			if !strings.Contains(out.String(), "\nc 2,,false,1000000000000000000000,") || !strings.Contains(out.String(), "\nc3,,,0.000001,,,Tiny,0001-01-01T00:00:00Z,,\n") {
				t.Errorf("numbers not written as get shows them:\n%s", out.String())
			}
		}
		recs, err := readCSV(bytes.NewReader(out.Bytes()), coll, comma)
		if err != nil {
			t.Fatalf("delimiter %q: reading the export back: %v\n%s", comma, err, out.String())
		}
		if len(recs) != len(lines) {
			t.Fatalf("delimiter %q: %d records back, want %d", comma, len(recs), len(lines))
		}
		for i, l := range lines {
			var want map[string]any
			if err := json.Unmarshal([]byte(l), &want); err != nil {
				t.Fatal(err)
			}
			id := want["id"]
			delete(want, "id")
			if recs[i].ID != id || !reflect.DeepEqual(recs[i].Fields, want) {
				t.Errorf("delimiter %q: record %d:\n got  %q %v\n want %q %v", comma, i, recs[i].ID, recs[i].Fields, id, want)
			}
		}
	}
	// An empty collection still gets its header; a field the schema lacks
	// is an error.
	var out bytes.Buffer
	ex := newCSVExporter(&out, coll, ',')
	if err := ex.flush(); err != nil || !strings.HasPrefix(out.String(), "id,account,") {
		t.Errorf("empty export: %q, %v", out.String(), err)
	}
	if err := newCSVExporter(&out, coll, ',').writeLine([]byte(`{"id":"x","nickname":"X"}`)); err == nil || !strings.Contains(err.Error(), `contacts/x has a field "nickname" the schema does not define`) {
		t.Errorf("unknown field in export: %v", err)
	}
}

// TestCSVImportLines checks the JSON Lines sent to the node: the node reads
// one record per CSV row, line K being row K, with the typed values; and its
// "line K" errors are turned into CSV lines.
func TestCSVImportLines(t *testing.T) {
	coll := testContacts(t)
	recs := mustReadCSV(t, "id,last_name,phone,amount,active\nc1,Smith,\"a\nb\",12.5,yes\n\nc<&>2,Jones,,3,no\n", ',')
	var buf bytes.Buffer
	if err := writeImportLines(&buf, recs); err != nil {
		t.Fatal(err)
	}
	got, err := apijson.ReadLines(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("%d lines for %d records", len(got), len(recs))
	}
	for i, r := range got {
		norm, err := coll.ValidateWrite(r.ID, r.Fields, true)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if r.Line != i+1 || r.ID != recs[i].ID || !reflect.DeepEqual(norm, recs[i].Fields) {
			t.Errorf("line %d: %+v (normalized %v), want %+v", i+1, r, norm, recs[i])
		}
	}
	for msg, want := range map[string]string{
		`line 2: contacts/c<&>2: field "email": value "x" is used by c1`: `line 5: contacts/c<&>2: field "email": value "x" is used by c1`,
		`line 1: contacts/c1: field "first_name" is required`:            `line 2: contacts/c1: field "first_name" is required`,
		`line 3: out of range`:   `line 3: out of range`,
		`unknown collection "x"`: `unknown collection "x"`,
	} {
		if got := relocateImportError(msg, recs); got != want {
			t.Errorf("relocateImportError(%q) = %q, want %q", msg, got, want)
		}
	}
}

// TestCSVImportE2E imports a CSV file through the real binary into a running
// node, reads the records back, checks that a bad file writes nothing, and
// that export --format csv imports back unchanged.
func TestCSVImportE2E(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	dir := initDir(t, root, "laptop", "--listen", "/ip4/127.0.0.1/tcp/0")
	startNode(t, dir)
	mustFerry(t, dir, "schema", "apply", schemaFile)

	good := filepath.Join(root, "crm-export.CSV")
	text := "\uFEFFid;last_name;first_name;amount;active;met_on;phone\r\n" +
		"c1;Smith;Jeff;1200.5;yes;2024-03-01;\"+41 44\r\nsecond line\"\r\n" +
		"c2;\"Rodman; Jr.\";;12;no;;\r\n"
	if err := os.WriteFile(good, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mustFerry(t, dir, "import", "contacts", good, "--delimiter", ";")
	if !strings.HasPrefix(r.Stdout, "imported 2 records into contacts: 2 written") {
		t.Errorf("import printed:\n%s", r)
	}
	waitRecord(t, dir, "contacts", "c1", map[string]any{"last_name": "Smith", "first_name": "Jeff", "amount": 1200.5, "active": true,
		"met_on": "2024-03-01T00:00:00Z", "phone": "+41 44\nsecond line"})
	if rec := waitRecord(t, dir, "contacts", "c2", map[string]any{"last_name": "Rodman; Jr.", "amount": 12.0, "active": false}); len(rec.Fields) != 3 {
		t.Errorf("c2 has fields %v, want 3", rec.Fields)
	}

	// A bad row 3 (line 4, after a two-line cell): exit 1, the line and
	// column are named, nothing is written.
	before := mustStatus(t, dir)
	bad := filepath.Join(root, "bad.txt")
	if err := os.WriteFile(bad, []byte("id,last_name,phone,amount\nb1,Bad,\"two\nlines\",1\nb2,Bad,,12;5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = ferry(t, dir, "import", "contacts", bad, "--format", "csv")
	if want := `ferry: import: ` + bad + `: line 4, column "amount" (record "b2"): value "12;5" is not a number`; r.Code != 1 || !strings.Contains(r.Stderr, want) {
		t.Errorf("import of a bad CSV: want exit 1 and %q:\n%s", want, r)
	}
	// A row the node refuses (a new record without its required last_name):
	// the node's line is turned into the CSV line.
	r = runFerry(t, strings.NewReader("id,first_name\nb3,Anna\n"), "--dir", dir, "import", "contacts", "-", "--format", "csv")
	if r.Code != 1 || !strings.Contains(r.Stderr, `stdin: line 2: contacts/b3: field "last_name" is required`) {
		t.Errorf("import of a CSV row without a required field:\n%s", r)
	}
	if after := mustStatus(t, dir); after.DAGHeight != before.DAGHeight {
		t.Errorf("failed CSV imports moved the DAG from %d to %d", before.DAGHeight, after.DAGHeight)
	}
	if r := ferry(t, dir, "get", "contacts", "b1"); r.Code != 1 {
		t.Errorf("a failed import wrote contacts/b1:\n%s", r)
	}

	// export --format csv imports back with nothing to change.
	exp := mustFerry(t, dir, "export", "contacts", "--format", "csv")
	if !strings.HasPrefix(exp.Stdout, "id,account,active,amount,") || !strings.Contains(exp.Stdout, "\nc2,,false,12,,,Rodman; Jr.,,,\n") {
		t.Errorf("export --format csv:\n%s", exp)
	}
	r = runFerry(t, strings.NewReader(exp.Stdout), "--dir", dir, "import", "-q", "contacts", "-", "--format", "csv")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "imported 2 records into contacts: 0 written, 2 unchanged") {
		t.Errorf("re-import of the CSV export:\n%s", r)
	}
}
