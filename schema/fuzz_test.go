package schema

import (
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile(crmPath); err == nil {
		f.Add(data)
	}
	for _, seed := range []string{
		testSchema,
		"",
		"collections: {}",
		"collections: {a: {fields: {b: {tpye: string}}}}",
		"collections: {a: {fields: {b: {type: enum, values: [x, 'y', \"z w\", 1, true]}}}}",
		"collections: {a: {policy: office, fields: {b: {type: ref, to: a, policy: manual, required: true, unique: true}}}}",
		`{"collections": {"a": {"fields": {"b": {"type": "time"}}}}}`,
		"collections: {a: {fields: {b: &x {type: string}, c: *x}}}",
		"collections:\n  a:\n    fields:\n      b: {type: enum, values: [\"line\\nbreak\", \"#\", \": x\", \"- y\"]}\n",
		"[",
		"collections: [1]",
		"---\n---\n",
		"collections: {a: {fields: {b: {type: string, aliases: [Last Name, \"x y\", 'true', 1]}, c: {type: bool, aliases: C}}}}",
		"collections: {a: {fields: {b: {type: string, aliases: [ID]}, c: {type: string, aliases: [' B ']}}}}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		y, err := s.YAML()
		if err != nil {
			t.Fatalf("YAML(): %v", err)
		}
		back, err := Parse(y)
		if err != nil {
			t.Fatalf("Parse(YAML()) failed: %v\ninput:\n%s\nYAML():\n%s", err, data, y)
		}
		if !reflect.DeepEqual(s, back) {
			t.Fatalf("Parse(YAML()) differs\ninput:\n%s\nYAML():\n%s", data, y)
		}
		if err := CheckAdditive(s, back); err != nil {
			t.Fatalf("CheckAdditive(s, s): %v", err)
		}
		if !reflect.DeepEqual(s.Clone(), s) {
			t.Fatal("Clone differs")
		}
	})
}

// fuzzTypes is the collection FuzzParseText draws its field from.
var fuzzTypes = []string{"s", "n", "b", "e", "t", "r"}

func FuzzParseText(f *testing.F) {
	for i := range fuzzTypes {
		for _, text := range []string{"", "x", "1", "-0", "1e400", "NaN", "0x1p3", "yes", "won",
			"2024-03-01", "2024-03-01T10:00:00.000+01:00", "9999-12-31T23:59:59-01:00"} {
			f.Add(uint8(i), text)
		}
	}
	s, err := Parse([]byte(`collections: {c: {fields: {
		s: {type: string}, n: {type: number}, b: {type: bool},
		e: {type: enum, values: [lead, won, "a b"]}, t: {type: time}, r: {type: ref, to: c}}}}`))
	if err != nil {
		f.Fatal(err)
	}
	c, _ := s.Collection("c")
	f.Fuzz(func(t *testing.T, typ uint8, text string) {
		field := fuzzTypes[int(typ)%len(fuzzTypes)]
		v, err := c.ParseText(field, text)
		if err != nil {
			if _, ok := err.(*FieldError); !ok {
				t.Fatalf("error %T is not a *FieldError", err)
			}
			return
		}
		if n, ok := v.(float64); ok && (math.IsNaN(n) || math.IsInf(n, 0) || math.Signbit(n) && n == 0) {
			t.Fatalf("ParseText(%q, %q) = %v", field, text, n)
		}
		// The parsed value is canonical and survives display and re-parsing.
		if again, err := c.Normalize(field, v); err != nil || again != v {
			t.Fatalf("Normalize(%q, %#v) = %#v, %v", field, v, again, err)
		}
		if back, err := c.ParseText(field, FormatText(v)); err != nil || back != v {
			t.Fatalf("ParseText(%q, FormatText(%#v)) = %#v, %v", field, v, back, err)
		}
	})
}

func FuzzParseTextIn(f *testing.F) {
	for _, text := range []string{"", "12,5", "-0,0", "1.234,56", "1 234,56", "1\u00a0234,56", "1\u202f234,56",
		"1'234,56", "1.5", "0.123", "1,2,3", ",5", "12,", "1,5e3", "1e400", "1.234 567", "1..234",
		"01.03.2024", "31.02.2024", "1.3.2024", "2024-03-01"} {
		f.Add(uint8(0), text)
		f.Add(uint8(1), text)
	}
	s, err := Parse([]byte(`collections: {c: {fields: {n: {type: number}, t: {type: time}}}}`))
	if err != nil {
		f.Fatal(err)
	}
	c, _ := s.Collection("c")
	de := TextFormat{DecimalComma: true, DateLayout: "02.01.2006"}
	f.Fuzz(func(t *testing.T, typ uint8, text string) {
		field := []string{"n", "t"}[int(typ)%2]
		v, err := c.ParseTextIn(field, text, de)
		if err != nil {
			if _, ok := err.(*FieldError); !ok {
				t.Fatalf("error %T is not a *FieldError", err)
			}
			return
		}
		if again, err := c.Normalize(field, v); err != nil || again != v {
			t.Fatalf("Normalize(%q, %#v) = %#v, %v", field, v, again, err)
		}
		if field == "t" {
			return
		}
		n, ok := v.(float64)
		if !ok || math.IsNaN(n) || math.IsInf(n, 0) || math.Signbit(n) && n == 0 {
			t.Fatalf("ParseTextIn(n, %q) = %#v", text, v)
		}
		// The number is what the text says with the group separators
		// dropped and the comma read as a point.
		plain := strings.Map(func(r rune) rune {
			switch {
			case r == ',':
				return '.'
			case isGroupSeparator(r):
				return -1
			}
			return r
		}, strings.TrimSpace(text))
		want, err := strconv.ParseFloat(plain, 64)
		if err != nil || want != n {
			t.Fatalf("ParseTextIn(n, %q) = %v, but ParseFloat(%q) = %v, %v", text, n, plain, want, err)
		}
		// Digits grouped by separators come in threes after the first
		// group of one to three: "1.5" is never read as 15.
		mantissa, _, _ := strings.Cut(strings.TrimLeft(strings.TrimSpace(text), "+-"), ",")
		mantissa, _, _ = strings.Cut(strings.ToLower(mantissa), "e")
		if groups := strings.FieldsFunc(mantissa, isGroupSeparator); len(groups) > 1 {
			for i, g := range groups {
				if len(g) != 3 && (i > 0 || len(g) > 3) {
					t.Fatalf("ParseTextIn(n, %q) accepted digit groups %q", text, groups)
				}
			}
		}
	})
}
