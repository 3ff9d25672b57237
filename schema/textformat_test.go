package schema

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestParseTextInDecimalComma(t *testing.T) {
	c := contacts(t)
	de := TextFormat{DecimalComma: true}
	tests := []struct {
		text string
		want float64 // when err is empty
		err  string  // substring of the error
	}{
		{"12,5", 12.5, ""},
		{"12", 12, ""},
		{" 12,5 ", 12.5, ""},
		{"-12,5", -12.5, ""},
		{"+12,5", 12.5, ""},
		{"0,75", 0.75, ""},
		{",5", 0.5, ""},
		{"-0", 0, ""},
		{"-0,0", 0, ""},
		{"1.234,56", 1234.56, ""},
		{"1.234", 1234, ""},
		{"1.234.567,891", 1234567.891, ""},
		{"1 234,56", 1234.56, ""},
		{"1\u00a0234,56", 1234.56, ""},
		{"1\u202f234,56", 1234.56, ""},
		{"1'234,56", 1234.56, ""},
		{"-1'234'567", -1234567, ""},
		{"123.456", 123456, ""},
		{"1,5e3", 1500, ""},
		{"1,5E-3", 0.0015, ""},
		{"1.234e+2", 123400, ""},
		{"007", 7, ""},
		{"00,5", 0.5, ""},

		{"1,2,3", 0, "has more than one decimal comma"},
		{"1,234,56", 0, "has more than one decimal comma"},
		{"1.5", 0, `is ambiguous: with a decimal comma, "." separates groups of three digits`},
		{"12.5", 0, "is ambiguous"},
		{"1.2345", 0, "is ambiguous"},
		{"1234.567", 0, "is ambiguous"},
		{"1.234.56", 0, "is ambiguous"},
		{"1.23,5", 0, "is ambiguous"},
		{"0.123", 0, "must not start with 0"},
		{"1 23", 0, "grouped wrongly"},
		{"1'2345", 0, "grouped wrongly"},
		{"1.234 567", 0, `mixes the group separators '.' and ' '`},
		{"1..234", 0, "misplaced group separator"},
		{".234", 0, "misplaced group separator"},
		{"-.5", 0, "misplaced group separator"},
		{"1.234.", 0, "is ambiguous"},
		{"1,234.5", 0, "after the decimal comma"},
		{"1,5 ", 1.5, ""},
		{"12,", 0, "ends with the decimal comma"},
		{",", 0, "is not a number"},
		{"", 0, "is not a number"},
		{"-", 0, "is not a number"},
		{"+-1", 0, "is not a number"},
		{"abc", 0, "is not a number"},
		{"1_000", 0, "is not a number"},
		{"12,5 €", 0, "after the decimal comma"},
		{"12,5€", 0, "is not a number"},
		{"1\t234", 0, "is not a number"},
		{"NaN", 0, "is not a number"},
		{"Inf", 0, "is not a number"},
		{"0x10", 0, "is not a number"},
		{"1e", 0, "is not a number"},
		{"e5", 0, "is not a number"},
		{"1e+-5", 0, "is not a number"},
		{"1e5,5", 0, "is not a number"},
		{"1e400", 0, "is out of range"},
		{"1" + strings.Repeat("0", 400), 0, "is out of range"},
	}
	for _, tt := range tests {
		got, err := c.ParseTextIn("amount", tt.text, de)
		if tt.err == "" {
			if err != nil || got != tt.want || math.Signbit(got.(float64)) != math.Signbit(tt.want) {
				t.Errorf("ParseTextIn(amount, %q) = %#v, %v; want %v", tt.text, got, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseTextIn(amount, %q) = %#v, want an error", tt.text, got)
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Collection != "contacts" || fe.Field != "amount" || fe.Value != tt.text {
			t.Errorf("ParseTextIn(amount, %q): error %#v is not the right *FieldError", tt.text, err)
		}
		if !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), `contacts: field "amount": value `+quote(tt.text)) {
			t.Errorf("ParseTextIn(amount, %q) error %q, want it to mention %q", tt.text, err, tt.err)
		}
	}
}

func TestParseTextInDateLayout(t *testing.T) {
	c := contacts(t)
	tests := []struct {
		layout, text string
		want         string // when err is empty
		err          string
	}{
		{"02.01.2006", "01.03.2024", "2024-03-01T00:00:00Z", ""},
		{"02.01.2006", " 31.12.2026 ", "2026-12-31T00:00:00Z", ""},
		{"02.01.2006", "1.3.2024", "", `is not a time in the layout "02.01.2006" (want a time like "31.03.2024")`},
		{"2.1.2006", "1.3.2024", "2024-03-01T00:00:00Z", ""},
		{"2.1.2006", "01.03.2024", "2024-03-01T00:00:00Z", ""},
		{"02.01.2006", "31.02.2024", "", "is not a time"},
		{"02.01.2006", "2024-03-01", "", "is not a time"}, // only the layout
		{"02.01.2006", "", "", "is not a time"},
		{"01/02/2006 15:04", "03/01/2024 10:30", "2024-03-01T10:30:00Z", ""},
		{"01/02/2006 15:04", "03/01/2024 10:30:15", "", "is not a time"},
		{"01/02/2006 15:04", "03/01/2024", "", `want a time like "03/31/2024 14:30"`},
		{"02.01.2006 15:04:05", "01.03.2024 10:30:15.25", "2024-03-01T10:30:15.25Z", ""},
		{"02.01.2006 15:04 -07:00", "01.03.2024 10:30 +01:00", "2024-03-01T09:30:00Z", ""},
		{"02.01.06", "01.03.24", "2024-03-01T00:00:00Z", ""},
		{"02.01.06", "01.03.99", "1999-03-01T00:00:00Z", ""},
		{"2006-01-02", "2024-03-01", "2024-03-01T00:00:00Z", ""},
		{"02 Jan 2006", "01 Mar 2024", "2024-03-01T00:00:00Z", ""},
		{"2006-002", "2024-061", "2024-03-01T00:00:00Z", ""}, // day of the year
		{"02.01.2006 -07:00", "01.01.0000 +01:00", "", "out of range"},
		{"01.2006", "03.2024", "", `the date layout "01.2006" has no day`},
		{"Mon 01.2006", "Fri 03.2024", "", `has no day`},
		{"02.01", "01.03", "", "has no year"},
		{"15:04", "10:30", "", "has no year, month, day"},
		{"foo", "foo", "", "has no year, month, day"},
	}
	for _, tt := range tests {
		tf := TextFormat{DateLayout: tt.layout}
		got, err := c.ParseTextIn("met_on", tt.text, tf)
		if tt.err == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseTextIn(met_on, %q) in %q = %#v, %v; want %q", tt.text, tt.layout, got, err, tt.want)
			}
			if err := tf.Validate(); err != nil {
				t.Errorf("Validate(%q): %v", tt.layout, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "met_on" || fe.Value != tt.text {
			t.Errorf("ParseTextIn(met_on, %q) in %q = %#v, %v; want a *FieldError", tt.text, tt.layout, got, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ParseTextIn(met_on, %q) in %q: error %q, want it to mention %q", tt.text, tt.layout, err, tt.err)
		}
	}
	if err := (TextFormat{DateLayout: "02.01"}).Validate(); err == nil || !strings.Contains(err.Error(), `date layout "02.01" has no year`) {
		t.Errorf("Validate = %v", err)
	}
	if err := (TextFormat{DecimalComma: true}).Validate(); err != nil {
		t.Errorf("Validate = %v", err)
	}
}

// TestParseTextInOtherTypes checks that a TextFormat changes only numbers
// and times, and that the zero TextFormat is ParseText.
func TestParseTextInOtherTypes(t *testing.T) {
	c := contacts(t)
	formats := []TextFormat{{}, {DecimalComma: true}, {DateLayout: "02.01.2006"}, {DecimalComma: true, DateLayout: "02.01.2006"}}
	for _, tt := range []struct{ field, text string }{
		{"first_name", "1,5"}, {"first_name", " Ada "}, {"active", "yes"}, {"active", "1,0"},
		{"stage", "won"}, {"stage", "Won"}, {"account", "a,1"}, {"account", ""}, {"nmae", "1"},
	} {
		want, wantErr := c.ParseText(tt.field, tt.text)
		for _, tf := range formats {
			got, err := c.ParseTextIn(tt.field, tt.text, tf)
			if got != want || !reflect.DeepEqual(err, wantErr) {
				t.Errorf("ParseTextIn(%q, %q, %+v) = %#v, %v; ParseText gives %#v, %v", tt.field, tt.text, tf, got, err, want, wantErr)
			}
		}
	}
	for _, tt := range []struct{ field, text string }{
		{"amount", "12.5"}, {"amount", "1,5"}, {"amount", "1_000"}, {"amount", "0x1p-2"}, {"amount", "1e400"},
		{"met_on", "2024-03-01"}, {"met_on", "2024-03-01T10:00:00+01:00"}, {"met_on", "01.03.2024"},
	} {
		want, wantErr := c.ParseText(tt.field, tt.text)
		got, err := c.ParseTextIn(tt.field, tt.text, TextFormat{})
		if got != want || !reflect.DeepEqual(err, wantErr) {
			t.Errorf("ParseTextIn(%q, %q, zero) = %#v, %v; ParseText gives %#v, %v", tt.field, tt.text, got, err, want, wantErr)
		}
	}
	// DecimalComma leaves times alone, DateLayout numbers.
	if got, err := c.ParseTextIn("met_on", "2024-03-01", TextFormat{DecimalComma: true}); err != nil || got != "2024-03-01T00:00:00Z" {
		t.Errorf("time with DecimalComma = %#v, %v", got, err)
	}
	if got, err := c.ParseTextIn("amount", "12.5", TextFormat{DateLayout: "02.01.2006"}); err != nil || got != 12.5 {
		t.Errorf("number with DateLayout = %#v, %v", got, err)
	}
}

func TestValidateWriteTextIn(t *testing.T) {
	c := contacts(t)
	de := TextFormat{DecimalComma: true, DateLayout: "02.01.2006"}
	got, err := c.ValidateWriteTextIn("c1", map[string]any{"active": true},
		map[string]string{"last_name": "Müller", "amount": "1.234,5", "met_on": "01.03.2024"}, true, de)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"active": true, "last_name": "Müller", "amount": 1234.5, "met_on": "2024-03-01T00:00:00Z"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
	_, err = c.ValidateWriteTextIn("c1", nil, map[string]string{"amount": "1.5"}, false, de)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.ID != "c1" || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("ValidateWriteTextIn error = %v", err)
	}
}

// What FormatTextIn writes, ParseTextIn reads back as the same value.
func TestFormatTextInRoundTrip(t *testing.T) {
	sc, err := Parse([]byte("collections:\n  c:\n    fields:\n      n: {type: number}\n      d: {type: time}\n      s: {type: string}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := sc.Collections["c"]
	for _, tf := range []TextFormat{{}, {DecimalComma: true}, {DateLayout: "02.01.2006"}, {DecimalComma: true, DateLayout: "2006-01-02 15:04:05"}} {
		for field, text := range map[string]string{"n": "1234.5", "d": "2024-03-01", "s": "a, b; c"} {
			v, err := c.ParseText(field, text)
			if err != nil {
				t.Fatal(err)
			}
			out := c.FormatTextIn(field, v, tf)
			back, err := c.ParseTextIn(field, out, tf)
			if err != nil || back != v {
				t.Errorf("%+v: %s %v written %q read back %v, %v", tf, field, v, out, back, err)
			}
		}
	}
	if got := c.FormatTextIn("n", 1234.5, TextFormat{DecimalComma: true}); got != "1234,5" {
		t.Errorf("decimal comma: %q", got)
	}
	if got := c.FormatTextIn("d", "2024-03-01T00:00:00Z", TextFormat{DateLayout: "02.01.2006"}); got != "01.03.2024" {
		t.Errorf("date layout: %q", got)
	}
}
