package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"

	"github.com/ferry-crm/ferry/schema"
)

// aliasContacts is the test schema's contacts with aliases, as an export's
// headers name them.
func aliasContacts(t testing.TB) *schema.Collection {
	t.Helper()
	return collectionOf(t, `
collections:
  contacts:
    fields:
      first_name: {type: string, aliases: ["First Name", "Vorname"]}
      last_name:  {type: string, required: true, aliases: ["Last Name", "Nachname"]}
      email:      {type: string, unique: true, aliases: ["E-mail Address", "E-Mail"]}
      amount:     {type: number, aliases: ["Betrag"]}
      met_on:     {type: time, aliases: ["Datum"]}
`, "contacts")
}

func readWith(t *testing.T, text string, opts csvOptions) csvResult {
	t.Helper()
	res, err := readCSVWith(strings.NewReader(text), aliasContacts(t), opts)
	if err != nil {
		t.Fatalf("readCSVWith: %v\ninput:\n%s", err, text)
	}
	return res
}

func TestCSVAliasesAndMap(t *testing.T) {
	in := "Contact ID,First Name,LAST NAME,E-mail Address,Notes\n" +
		"003A,John,Rodman,john@example.com,met at fair\n"
	res := readWith(t, in, csvOptions{IDColumn: "contact id", Map: map[string]string{"notes": ""}})
	if len(res.Records) != 1 {
		t.Fatalf("%d records", len(res.Records))
	}
	r := res.Records[0]
	if r.ID != "003A" || r.Fields["first_name"] != "John" || r.Fields["last_name"] != "Rodman" || r.Fields["email"] != "john@example.com" {
		t.Errorf("record %+v", r)
	}
	if _, has := r.Fields["Notes"]; has || len(res.Ignored) != 1 || res.Ignored[0] != "Notes" {
		t.Errorf("ignored %q, fields %v", res.Ignored, r.Fields)
	}
	// --map wins over an alias.
	res = readWith(t, "id,Last Name,Nachname\nc1,Smith,Schmidt\n", csvOptions{Map: map[string]string{"Last Name": ""}})
	if res.Records[0].Fields["last_name"] != "Schmidt" {
		t.Errorf("map did not win: %v", res.Records[0].Fields)
	}
}

func TestCSVColumnErrors(t *testing.T) {
	c := aliasContacts(t)
	cases := []struct {
		name, in string
		opts     csvOptions
		want     string
	}{
		{"unknown column", "id,last_name,Fax\nc1,S,1\n", csvOptions{}, `unknown column "Fax"`},
		{"two columns one field", "id,Last Name,Nachname\nc1,S,T\n", csvOptions{}, `both map to "last_name"`},
		{"no id source", "Last Name\nSmith\n", csvOptions{}, "--id-column"},
		{"id column missing", "Last Name\nSmith\n", csvOptions{IDColumn: "Contact ID"}, `--id-column "Contact ID": no such column`},
		{"id-from unknown field", "Last Name\nSmith\n", csvOptions{IDFrom: []string{"fax"}}, `--id-from "fax"`},
		{"id column and id-from", "id,Last Name\nc1,S\n", csvOptions{IDFrom: []string{"email"}}, "for files without one"},
		{"id-from and new-ids", "Last Name\nS\n", csvOptions{IDFrom: []string{"email"}, NewIDs: true}, "give one of them"},
		{"id-from all empty", "Last Name,E-Mail\nSmith,\n", csvOptions{IDFrom: []string{"email"}}, "every one of them is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readCSVWith(strings.NewReader(tc.in), c, tc.opts)
			var ce *csvError
			if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want a csvError containing %q", err, tc.want)
			}
		})
	}
	res := readWith(t, "id,last_name,Fax\nc1,S,1\n", csvOptions{IgnoreUnknown: true})
	if len(res.Ignored) != 1 || res.Ignored[0] != "Fax" || len(res.Records) != 1 {
		t.Errorf("--ignore-unknown: %+v", res)
	}
}

func TestCSVIDs(t *testing.T) {
	in := "Last Name,E-Mail\nSmith,Jeff@Example.com\nJones, jeff@example.com \nDoe,doe@example.com\n"
	a := readWith(t, in, csvOptions{IDFrom: []string{"email"}})
	b := readWith(t, in, csvOptions{IDFrom: []string{"email"}})
	if a.Records[0].ID == "" || a.Records[0].ID != b.Records[0].ID {
		t.Fatalf("derived ids not stable: %q %q", a.Records[0].ID, b.Records[0].ID)
	}
	if a.Records[0].ID != a.Records[1].ID {
		t.Errorf("the same email (case and spaces aside) gave two ids: %q %q", a.Records[0].ID, a.Records[1].ID)
	}
	if a.Records[0].ID == a.Records[2].ID {
		t.Error("two emails gave one id")
	}
	n := readWith(t, in, csvOptions{NewIDs: true})
	m := readWith(t, in, csvOptions{NewIDs: true})
	if n.Records[0].ID == m.Records[0].ID || n.Records[0].ID == n.Records[1].ID {
		t.Errorf("--new-ids repeated an id: %q %q %q", n.Records[0].ID, m.Records[0].ID, n.Records[1].ID)
	}
}

func TestCSVLocaleAndEncodings(t *testing.T) {
	de := "id;Nachname;Vorname;Betrag;Datum\n" +
		"c1;Müller;Zoë;1.234,50;01.03.2024\n"
	opts := csvOptions{Format: schema.TextFormat{DecimalComma: true, DateLayout: "02.01.2006"}}
	check := func(t *testing.T, res csvResult, enc string) {
		t.Helper()
		if res.Comma != ';' || res.Encoding != enc {
			t.Errorf("detected %q, %s; want ';', %s", res.Comma, res.Encoding, enc)
		}
		r := res.Records[0]
		if r.Fields["last_name"] != "Müller" || r.Fields["first_name"] != "Zoë" || fmt.Sprint(r.Fields["met_on"]) != "2024-03-01T00:00:00Z" {
			t.Errorf("record %+v", r.Fields)
		}
		if v, ok := r.Fields["amount"].(float64); !ok || v != 1234.5 {
			t.Errorf("amount %v (%T), want 1234.5", r.Fields["amount"], r.Fields["amount"])
		}
	}
	t.Run("utf-8", func(t *testing.T) { check(t, readWith(t, de, opts), "utf-8") })
	t.Run("utf-8 BOM", func(t *testing.T) { check(t, readWith(t, utf8BOM+de, opts), "utf-8") })
	t.Run("windows-1252", func(t *testing.T) {
		b, err := charmap.Windows1252.NewEncoder().String(de)
		if err != nil {
			t.Fatal(err)
		}
		check(t, readWith(t, b, opts), "windows-1252")
	})
	t.Run("utf-16 BOM, tabs", func(t *testing.T) {
		b, err := unicode.UTF16(unicode.LittleEndian, unicode.UseBOM).NewEncoder().String(strings.ReplaceAll(de, ";", "\t"))
		if err != nil {
			t.Fatal(err)
		}
		res := readWith(t, b, opts)
		if res.Comma != '\t' || res.Encoding != "utf-16" || res.Records[0].Fields["last_name"] != "Müller" {
			t.Errorf("utf-16: %q %s %+v", res.Comma, res.Encoding, res.Records)
		}
	})
	t.Run("utf-8 forced on cp1252 bytes", func(t *testing.T) {
		b, _ := charmap.Windows1252.NewEncoder().String(de)
		_, err := readCSVWith(strings.NewReader(b), aliasContacts(t), csvOptions{Encoding: "utf-8"})
		if err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("decimal comma off", func(t *testing.T) {
		_, err := readCSVWith(strings.NewReader(de), aliasContacts(t), csvOptions{Format: schema.TextFormat{DateLayout: "02.01.2006"}})
		if err == nil || !strings.Contains(err.Error(), `column "Betrag"`) {
			t.Errorf("a decimal comma without --decimal-comma: %v", err)
		}
	})
}

func TestDetectComma(t *testing.T) {
	for in, want := range map[string]rune{
		"id,a,b\n":            ',',
		"id;a;b\n1,5;2,5;3\n": ';',
		"id\ta\tb\n":          '\t',
		`"a;b",c` + "\n":      ',',
		"id\n":                ',',
	} {
		if got := detectComma(in); got != want {
			t.Errorf("detectComma(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzCSVForeignImport: a file as another CRM or Excel may write it, read with
// everything detected (encoding, delimiter), aliases, unknown columns left
// out, a decimal comma and a date layout, ids from a column, from fields or
// new. It never panics; a failure is located (*csvError) or says the
// encoding; every record read has a valid id and only fields of the
// collection.
func FuzzCSVForeignImport(f *testing.F) {
	for _, seed := range []string{
		"Contact ID,First Name,Last Name,E-mail Address,Notes\n003A,John,Rodman,john@example.com,x\n",
		"\uFEFFid;Nachname;Betrag;Datum\nc1;Müller;1.234,50;01.03.2024\n",
		"\xff\xfei\x00d\x00\t\x00N\x00a\x00c\x00h\x00n\x00a\x00m\x00e\x00\n\x00",
		"Nachname,E-Mail\nM\xfcller,m@example.com\n",
		"Last Name,E-Mail\nSmith,\n",
	} {
		for mode := range uint8(3) {
			f.Add([]byte(seed), mode)
		}
	}
	coll := aliasContacts(f)
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		opts := csvOptions{IgnoreUnknown: true, Format: schema.TextFormat{DecimalComma: true, DateLayout: "02.01.2006"}}
		switch mode % 3 {
		case 1:
			opts.IDFrom = []string{"email", "last_name"}
		case 2:
			opts.NewIDs = true
		}
		res, err := readCSVWith(strings.NewReader(string(data)), coll, opts)
		if err != nil {
			var ce *csvError
			if !errors.As(err, &ce) && !strings.Contains(err.Error(), "decode") && !strings.Contains(err.Error(), "read CSV") {
				t.Fatalf("unlocated error %T: %v", err, err)
			}
			return
		}
		for _, r := range res.Records {
			if checkCSVID(r.ID) != nil {
				t.Fatalf("record with a bad id %q", r.ID)
			}
			for k := range r.Fields {
				if coll.Field(k) == nil {
					t.Fatalf("field %q is not in the collection", k)
				}
			}
		}
	})
}
