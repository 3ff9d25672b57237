package schema

import (
	"math"
	"os"
	"reflect"
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
