package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/text/encoding/charmap"
)

// The line map keeps runs of consecutive lines, and answers for every
// request line the file line of its record.
func TestLineMap(t *testing.T) {
	var m lineMap
	file := []int{2, 3, 4, 6, 7, 10, 11, 12, 13, 14, 20}
	for _, l := range file {
		m.add(l)
	}
	if len(m.runs) != 4 {
		t.Errorf("%d runs for %v, want 4: %v", len(m.runs), file, m.runs)
	}
	for k, want := range file {
		if got, ok := m.line(k + 1); !ok || got != want {
			t.Errorf("line(%d) = %d, %t; want %d", k+1, got, ok, want)
		}
	}
	for _, k := range []int{0, -1, len(file) + 1} {
		if got, ok := m.line(k); ok {
			t.Errorf("line(%d) = %d, want none", k, got)
		}
	}
	if got := relocateLine("line 4: contacts/x: bad", &m); got != "line 6: contacts/x: bad" {
		t.Errorf("relocated: %q", got)
	}
	if got := relocateLine("line 12: out of range", &m); got != "line 12: out of range" {
		t.Errorf("relocated out of range: %q", got)
	}
}

// The encoding is told from the whole file, read as a stream: a character
// cut by a read is still UTF-8, a Windows-1252 byte at the very end makes
// the whole file Windows-1252.
func TestDecodeCSVStreams(t *testing.T) {
	pad := strings.Repeat("a", 64<<10-1)
	for _, tc := range []struct {
		name, text string
		valid      bool
	}{
		{"ascii", "id,last_name\n", true},
		{"empty", "", true},
		{"cut rune", pad + "é" + pad + "€\n", true},
		{"cut 4-byte rune", pad[:len(pad)-2] + "😀x", true},
		{"cp1252 at the end", pad + pad + "\xe9", false},
		{"truncated rune at the end", pad + "\xe2\x82", false},
		{"bad continuation", "ab\xe2\x28\xa1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte per read: every rune is cut.
			if got, err := validUTF8(iotest.OneByteReader(strings.NewReader(tc.text))); err != nil || got != tc.valid {
				t.Errorf("one byte at a time: %t, %v; want %t", got, err, tc.valid)
			}
			got, err := validUTF8(strings.NewReader(tc.text))
			if err != nil || got != tc.valid {
				t.Errorf("validUTF8 = %t, %v; want %t", got, err, tc.valid)
			}
		})
	}

	// A large file whose only non-ASCII byte is Windows-1252, on its last
	// row: decoded as Windows-1252 from the start.
	var b strings.Builder
	b.WriteString("id;last_name\n")
	for i := range 5000 {
		fmt.Fprintf(&b, "c%d;Name%d\n", i, i)
	}
	b.WriteString("c5000;Müller\n")
	data, err := charmap.Windows1252.NewEncoder().String(b.String())
	if err != nil {
		t.Fatal(err)
	}
	res := readWith(t, data, csvOptions{})
	if res.Encoding != "windows-1252" || res.Comma != ';' || len(res.Records) != 5001 || res.Records[5000].Fields["last_name"] != "Müller" {
		t.Errorf("read as %s, %q: %d records", res.Encoding, res.Comma, len(res.Records))
	}
}

// A large CSV file is sent to the node as it is read, row by row. A bad
// last row fails the import, naming its line, with nothing written; with
// --rejects (the file from stdin, through a pipe) the good rows go in and
// the bad ones are set aside with their cells, those refused here and
// those refused by the node.
func TestImportLargeCSVStreams(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	dir := crmDir(t, root)
	const n = 20000 // data rows, lines 2 to n+1; then the bad line n+2
	var b bytes.Buffer
	b.WriteString("Contact ID,Last Name,Amount,phone\n")
	for i := 1; i <= n; i++ {
		switch {
		case i == n/2: // line n/2+1: a new record without its last name (refused by the node)
			fmt.Fprintf(&b, "c%d,,%d,\n", i, i)
		case i%1000 == 0: // a cell over two lines
			fmt.Fprintf(&b, "c%d,Name %d,%d,\"first\nsecond\"\n", i, i, i)
		default:
			fmt.Fprintf(&b, "c%d,Name %d,%d,\n", i, i, i)
		}
	}
	lines := strings.Count(b.String(), "\n")
	bad := lines + 1
	fmt.Fprintf(&b, "c%d,Bad,abc,\n", n+1) // not a number (refused here)
	file := filepath.Join(root, "big.csv")
	writeFile(t, file, b.String())

	r := ferry(t, dir, "import", "-q", "contacts", file, "--id-column", "Contact ID")
	if want := fmt.Sprintf(`line %d, column "Amount" (record "c%d")`, bad, n+1); r.Code != 1 || !strings.Contains(r.Stderr, want) {
		t.Fatalf("import of a file with a bad last row: want exit 1 and %q:\n%s", want, r)
	}
	if _, count := exportRecords(t, dir, "contacts"); count != 0 {
		t.Fatalf("a failed import wrote %d records", count)
	}

	rejects := filepath.Join(root, "rejects.csv")
	r = runFerry(t, bytes.NewReader(b.Bytes()), "--dir", dir, "import", "-q", "contacts", "-", "--format", "csv", "--id-column", "Contact ID", "--rejects", rejects)
	if want := fmt.Sprintf("imported %d records into contacts: %d written (%d created), 0 unchanged, 2 rejected (in %s)", n+1, n-1, n-1, rejects); r.Code != 0 || !strings.Contains(r.Stdout, want) {
		t.Fatalf("import with --rejects: want %q:\n%s", want, r)
	}
	recs, count := exportRecords(t, dir, "contacts")
	if count != n-1 || recs[fmt.Sprintf("c%d", n/2)] != nil || recs["c1"]["last_name"] != "Name 1" || recs["c1000"]["phone"] != "first\nsecond" ||
		recs[fmt.Sprintf("c%d", n)]["amount"] != float64(n) {
		t.Errorf("%d records after the import; c1 %v, c1000 %v", count, recs["c1"], recs["c1000"])
	}
	data, err := os.ReadFile(rejects)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("rejects file (%v):\n%s", err, data)
	}
	// Line n/2+1, plus one for each two-line cell before it.
	nodeLine := n/2 + 1 + (n/2-1)/1000
	if strings.Join(rows[0], ",") != "line,reason,Contact ID,Last Name,Amount,phone" ||
		rows[1][0] != fmt.Sprint(nodeLine) || !strings.Contains(rows[1][1], "last_name") || strings.Join(rows[1][2:], ",") != fmt.Sprintf("c%d,,%d,", n/2, n/2) ||
		rows[2][0] != fmt.Sprint(bad) || !strings.Contains(rows[2][1], "Amount") || strings.Join(rows[2][2:], ",") != fmt.Sprintf("c%d,Bad,abc,", n+1) {
		t.Errorf("rejects file:\n%s", data)
	}
}
