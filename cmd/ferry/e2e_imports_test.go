package main

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/text/encoding/charmap"
)

// Contact exports of the CRMs users leave, as those products write them
// (testdata/exports/README.md: layouts, encodings, sources), imported
// without editing, with the commands the README gives: every row becomes a
// record, and importing the file again changes nothing.
func TestImportCRMExports(t *testing.T) {
	e2e(t)
	schemaFile, err := filepath.Abs("../../examples/crm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		file  string
		args  []string
		rows  int
		check func(t *testing.T, recs map[string]map[string]any)
	}{
		{"sugarcrm.csv", []string{"--id-column", "ID", "--ignore-unknown"}, 7, nil},
		{"outlook.csv", []string{"--id-from", "email", "--map", "Account=", "--ignore-unknown"}, 7, func(t *testing.T, recs map[string]map[string]any) {
			wantValue(t, recs, "last_name", "Müller") // Windows-1252 decoded
		}},
		{"dynamics.csv", []string{"--id-column", "(Do Not Modify) Contact", "--ignore-unknown"}, 7, nil},
		{"salesforce.csv", []string{"--id-column", "Contact ID", "--ignore-unknown"}, 7, nil},
		{"hubspot.csv", []string{"--id-column", "Record ID", "--ignore-unknown"}, 7, nil},
		{"excel-de.csv", []string{"--delimiter", ";", "--encoding", "windows-1252", "--decimal-comma", "--date-format", "02.01.2006", "--id-from", "email", "--ignore-unknown"}, 7, func(t *testing.T, recs map[string]map[string]any) {
			wantValue(t, recs, "amount", 1234.5)
			wantValue(t, recs, "met_on", "2024-03-01T00:00:00Z")
		}},
		{"excel-unicode.txt", []string{"--format", "csv", "--encoding", "utf-16", "--delimiter", `\t`, "--date-format", "02.01.2006", "--id-from", "email", "--ignore-unknown"}, 6, nil},
	}
	root := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			dir := initDir(t, root, strings.TrimSuffix(tc.file, filepath.Ext(tc.file)), "--listen", "/ip4/127.0.0.1/tcp/0")
			mustFerry(t, dir, "schema", "apply", schemaFile)
			file, err := filepath.Abs(filepath.Join("testdata", "exports", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			args := append([]string{"import", "-q", "contacts", file}, tc.args...)
			r := mustFerry(t, dir, args...)
			if !strings.Contains(r.Stdout, "imported ") {
				t.Fatalf("no import summary:\n%s", r)
			}
			recs, n := exportRecords(t, dir, "contacts")
			if n != tc.rows || len(recs) != tc.rows {
				t.Fatalf("%d records (%d lines) after the import, want %d:\n%s", len(recs), n, tc.rows, r)
			}
			for id, rec := range recs {
				if rec["last_name"] == nil || rec["last_name"] == "" {
					t.Errorf("record %s has no last_name: %v", id, rec)
				}
			}
			if tc.check != nil {
				tc.check(t, recs)
			}
			again := mustFerry(t, dir, args...)
			if !strings.Contains(again.Stdout, "0 written") {
				t.Errorf("importing the same file again wrote something:\n%s", again)
			}
		})
	}
}

// A column the collection does not know fails the import, naming it and
// the way out; nothing is written.
func TestImportUnknownColumnSaysHow(t *testing.T) {
	e2e(t)
	dir := crmDir(t, t.TempDir())
	file, _ := filepath.Abs("testdata/exports/hubspot.csv")
	r := ferry(t, dir, "import", "-q", "contacts", file, "--id-column", "Record ID")
	if r.Code == 0 || !strings.Contains(r.Stderr, "--ignore-unknown") || !strings.Contains(r.Stderr, "unknown column") {
		t.Fatalf("want a failure naming the column and --ignore-unknown:\n%s", r)
	}
	if _, n := exportRecords(t, dir, "contacts"); n != 0 {
		t.Errorf("%d records written by a failed import", n)
	}
	if r := ferry(t, dir, "import", "-q", "contacts", file, "--map", "Record ID=nosuchfield"); r.Code != exitUsage {
		t.Errorf("--map to a field the collection lacks: want exit %d:\n%s", exitUsage, r)
	}
}

// wantValue checks that some record holds value in field.
func wantValue(t *testing.T, recs map[string]map[string]any, field string, value any) {
	t.Helper()
	for _, rec := range recs {
		if rec[field] == value {
			return
		}
	}
	t.Errorf("no record has %s = %v", field, value)
}

// A dry run tells what an import would do, row by row, writing nothing;
// --rejects imports the good rows and sets the bad ones aside, each with
// its line and reason, in a file that imports again once fixed.
func TestImportDryRunAndRejects(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	dir := crmDir(t, root)
	base := filepath.Join(root, "base.csv")
	writeFile(t, base, "Contact ID,Last Name,Amount\nc1,Smith,10\n")
	mustFerry(t, dir, "import", "-q", "contacts", base, "--id-column", "Contact ID")

	file := filepath.Join(root, "export.csv")
	writeFile(t, file, "Contact ID,Last Name,Amount\n"+
		"c1,Smith,10\n"+ // line 2: unchanged
		"c2,Jones,20\n"+ // line 3: new
		"c3,Doe,\n"+ // line 4: new
		"c4,Bad,abc\n"+ // line 5: not a number (refused here)
		"c5,,5\n") // line 6: a new record without its required last name (refused by the node)

	dry := mustFerry(t, dir, "import", "-q", "contacts", file, "--id-column", "Contact ID", "--dry-run")
	if !strings.Contains(dry.Stdout, "dry run of 5 records into contacts: 2 would be created, 0 updated, 1 unchanged, 2 rejected; nothing written") {
		t.Errorf("dry run report:\n%s", dry)
	}
	if !strings.Contains(dry.Stderr, "line 5") || !strings.Contains(dry.Stderr, "line 6") || strings.Contains(dry.Stderr, "line 3") {
		t.Errorf("dry run should list lines 5 and 6 only:\n%s", dry)
	}
	if _, n := exportRecords(t, dir, "contacts"); n != 1 {
		t.Fatalf("a dry run wrote: %d records", n)
	}

	// Without --rejects the import stays all or nothing.
	if r := ferry(t, dir, "import", "-q", "contacts", file, "--id-column", "Contact ID"); r.Code == 0 {
		t.Fatalf("an import with bad rows succeeded:\n%s", r)
	}
	if _, n := exportRecords(t, dir, "contacts"); n != 1 {
		t.Fatalf("a failed import wrote: %d records", n)
	}

	rejects := filepath.Join(root, "rejects.csv")
	r := mustFerry(t, dir, "import", "-q", "contacts", file, "--id-column", "Contact ID", "--rejects", rejects)
	if !strings.Contains(r.Stdout, "2 written (2 created), 1 unchanged, 2 rejected (in "+rejects+")") {
		t.Errorf("import report:\n%s", r)
	}
	recs, n := exportRecords(t, dir, "contacts")
	if n != 3 || recs["c2"] == nil || recs["c3"] == nil || recs["c4"] != nil || recs["c5"] != nil {
		t.Fatalf("after the import: %v", recs)
	}
	data, err := os.ReadFile(rejects)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(string(data))).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("rejects file (%v):\n%s", err, data)
	}
	if strings.Join(rows[0], ",") != "line,reason,Contact ID,Last Name,Amount" ||
		rows[1][0] != "5" || rows[1][2] != "c4" || !strings.Contains(rows[1][1], "Amount") ||
		rows[2][0] != "6" || rows[2][2] != "c5" || !strings.Contains(rows[2][1], "last_name") {
		t.Errorf("rejects file:\n%s", data)
	}
	if r := ferry(t, dir, "import", "-q", "contacts", file, "--id-column", "Contact ID", "--rejects", rejects); r.Code != exitUsage {
		t.Errorf("--rejects onto an existing file: want exit %d:\n%s", exitUsage, r)
	}

	// Fixed, the rejects import with the two added columns left out.
	fixed := strings.Replace(strings.Replace(string(data), ",abc", ",7", 1), "c5,,5", "c5,Roe,5", 1)
	writeFile(t, rejects+".fixed.csv", fixed)
	mustFerry(t, dir, "import", "-q", "contacts", rejects+".fixed.csv", "--id-column", "Contact ID", "--map", "line=", "--map", "reason=")
	if _, n := exportRecords(t, dir, "contacts"); n != 5 {
		t.Errorf("after importing the fixed rejects: %d records, want 5", n)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// An export written for a German Excel (aliases as headers, ';', decimal
// commas, dates, Windows-1252) imports back with the same options and
// changes nothing.
func TestExportForExcelRoundTrip(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	dir := crmDir(t, root)
	de, _ := filepath.Abs("testdata/exports/excel-de.csv")
	locale := []string{"--delimiter", ";", "--decimal-comma", "--date-format", "02.01.2006", "--encoding", "windows-1252"}
	mustFerry(t, dir, append([]string{"import", "-q", "contacts", de, "--id-from", "email", "--ignore-unknown"}, locale...)...)
	before, n := exportRecords(t, dir, "contacts")

	r := mustFerry(t, dir, append([]string{"export", "contacts", "--format", "csv", "--headers", "aliases", "--id-column", "Kunden-Nr"}, locale...)...)
	decoded, err := charmap.Windows1252.NewDecoder().String(r.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	header := strings.SplitN(decoded, "\n", 2)[0]
	if !strings.HasPrefix(header, "Kunden-Nr;") || !strings.Contains(decoded, "1234,5") || !strings.Contains(decoded, "01.03.2024") || !strings.Contains(decoded, "Weiß") {
		t.Fatalf("export for Excel:\n%s", decoded)
	}
	file := filepath.Join(root, "back.csv")
	if err := os.WriteFile(file, []byte(r.Stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	again := mustFerry(t, dir, append([]string{"import", "-q", "contacts", file, "--id-column", "Kunden-Nr"}, locale...)...)
	if !strings.Contains(again.Stdout, "0 written") || !strings.Contains(again.Stdout, fmt.Sprintf("%d unchanged", n)) {
		t.Errorf("the round trip changed records:\n%s", again)
	}
	after, _ := exportRecords(t, dir, "contacts")
	if !reflect.DeepEqual(before, after) {
		t.Errorf("records changed:\nbefore %v\nafter  %v", before, after)
	}
	if r := ferry(t, dir, "export", "contacts", "--headers", "aliases"); r.Code != exitUsage {
		t.Errorf("--headers without --format csv: want exit %d:\n%s", exitUsage, r)
	}
}

// crmDir makes a data dir under root with examples/crm.yaml applied.
func crmDir(t *testing.T, root string) string {
	t.Helper()
	schemaFile, err := filepath.Abs("../../examples/crm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := initDir(t, root, "solo", "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, dir, "schema", "apply", schemaFile)
	return dir
}
