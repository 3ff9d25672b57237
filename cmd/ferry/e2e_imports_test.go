package main

import (
	"path/filepath"
	"strings"
	"testing"
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
	schemaFile, _ := filepath.Abs("../../examples/crm.yaml")
	dir := initDir(t, t.TempDir(), "solo", "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, dir, "schema", "apply", schemaFile)
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
