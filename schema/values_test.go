package schema

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func contacts(t testing.TB) *Collection {
	t.Helper()
	c, err := mustParse(t, testSchema).Collection("contacts")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseText(t *testing.T) {
	c := contacts(t)
	tests := []struct {
		field, text string
		want        any    // when ok
		err         string // substring of the error when not ok
	}{
		{"first_name", "Ada", "Ada", ""},
		{"first_name", "", "", ""},
		{"first_name", "  spaced  ", "  spaced  ", ""},
		{"first_name", "\xff", nil, "not valid UTF-8"},

		{"amount", "12.5", 12.5, ""},
		{"amount", "-3", -3.0, ""},
		{"amount", "1e3", 1000.0, ""},
		{"amount", " 7 ", 7.0, ""},
		{"amount", "-0", 0.0, ""},
		{"amount", "abc", nil, `value "abc" is not a number`},
		{"amount", "", nil, "is not a number"},
		{"amount", "NaN", nil, "not a finite number"},
		{"amount", "Inf", nil, "not a finite number"},
		{"amount", "-infinity", nil, "not a finite number"},
		{"amount", "1e400", nil, "out of range"},
		{"amount", "0x1p-2", nil, "not a decimal number"},
		{"amount", "1_000", 1000.0, ""}, // strconv.ParseFloat syntax
		{"amount", "1,000", nil, "is not a number"},

		{"active", "yes", true, ""},
		{"active", "TRUE", true, ""},
		{"active", "On", true, ""},
		{"active", "1", true, ""},
		{"active", "no", false, ""},
		{"active", "false", false, ""},
		{"active", "OFF", false, ""},
		{"active", "0", false, ""},
		{"active", "maybe", nil, `value "maybe" is not a boolean`},
		{"active", "", nil, "is not a boolean"},

		{"stage", "won", "won", ""},
		{"stage", "Won", nil, `value "Won" is not one of lead, qualified, won, lost`},
		{"stage", "maybe", nil, `field "stage": value "maybe" is not one of lead, qualified, won, lost`},
		{"stage", "", nil, "is not one of"},

		{"met_on", "2024-03-01T10:00:00+01:00", "2024-03-01T09:00:00Z", ""},
		{"met_on", "2024-03-01T10:00:00.500000000Z", "2024-03-01T10:00:00.5Z", ""},
		{"met_on", "2024-03-01T10:00:00.123456789-02:30", "2024-03-01T12:30:00.123456789Z", ""},
		{"met_on", "2024-03-01", "2024-03-01T00:00:00Z", ""},
		{"met_on", "yesterday", nil, `value "yesterday" is not a time`},
		{"met_on", "2024-02-30", nil, "is not a time"},
		{"met_on", "2024-03-01 10:00", nil, "is not a time"},
		{"met_on", "0000-01-01T00:00:00+01:00", nil, "out of range"},

		{"account", "a1", "a1", ""},
		{"account", "", nil, "must not be empty"},

		{"nmae", "x", nil, `unknown field "nmae"`},
	}
	for _, tt := range tests {
		t.Run(tt.field+"/"+tt.text, func(t *testing.T) {
			got, err := c.ParseText(tt.field, tt.text)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("ParseText(%q, %q): %v", tt.field, tt.text, err)
				}
				if got != tt.want {
					t.Fatalf("ParseText(%q, %q) = %#v, want %#v", tt.field, tt.text, got, tt.want)
				}
				if f, ok := got.(float64); ok && math.Signbit(f) != math.Signbit(tt.want.(float64)) {
					t.Errorf("sign of %v differs", f)
				}
				// FormatText is the inverse.
				if back, err := c.ParseText(tt.field, FormatText(got)); err != nil || back != got {
					t.Errorf("ParseText(FormatText(%#v)) = %#v, %v", got, back, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseText(%q, %q) = %#v, want error", tt.field, tt.text, got)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FieldError", err)
			}
			if fe.Collection != "contacts" || fe.Field != tt.field || fe.ID != "" {
				t.Errorf("FieldError = %+v", fe)
			}
			if !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), "contacts: ") {
				t.Errorf("error %q, want it to start with contacts: and mention %q", err, tt.err)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	c := contacts(t)
	when := time.Date(2024, 3, 1, 10, 0, 0, 0, time.FixedZone("x", 3600))
	tests := []struct {
		name  string
		field string
		v     any
		want  any
		err   string
	}{
		{"string", "first_name", "Ada", "Ada", ""},
		{"string nil", "first_name", nil, nil, ""},
		{"string number", "first_name", 1.0, nil, "want a string, got number 1"},
		{"string bad utf8", "first_name", "a\xffb", nil, "not valid UTF-8"},
		{"required nil", "last_name", nil, nil, `field "last_name" is required`},

		{"float", "amount", 12.5, 12.5, ""},
		{"int in float", "amount", 3.0, 3.0, ""},
		{"go int", "amount", 42, 42.0, ""},
		{"go int64", "amount", int64(-7), -7.0, ""},
		{"negative zero", "amount", math.Copysign(0, -1), 0.0, ""},
		{"json.Number", "amount", json.Number("1.25"), 1.25, ""},
		{"json.Number NaN", "amount", json.Number("NaN"), nil, "not a finite number"},
		{"NaN", "amount", math.NaN(), nil, "not a finite number"},
		{"Inf", "amount", math.Inf(1), nil, "not a finite number"},
		{"number as string", "amount", "12", nil, `want a number, got string "12"`},
		{"number as bool", "amount", true, nil, "want a number, got boolean true"},
		{"number nil", "amount", nil, nil, ""},

		{"bool", "active", true, true, ""},
		{"bool as string", "active", "true", nil, `want true or false, got string "true"`},
		{"bool as number", "active", 1.0, nil, "want true or false, got number 1"},

		{"enum", "stage", "lead", "lead", ""},
		{"enum bad", "stage", "maybe", nil, `value "maybe" is not one of lead, qualified, won, lost`},
		{"enum number", "stage", 1.0, nil, "want a string"},

		{"time", "met_on", "2024-03-01T10:00:00+01:00", "2024-03-01T09:00:00Z", ""},
		{"time date", "met_on", "2024-03-01", "2024-03-01T00:00:00Z", ""},
		{"time canonical", "met_on", "2024-03-01T09:00:00.25Z", "2024-03-01T09:00:00.25Z", ""},
		{"time.Time", "met_on", when, "2024-03-01T09:00:00Z", ""},
		{"time bad", "met_on", "yesterday", nil, "is not a time"},
		{"time spaces", "met_on", " 2024-03-01", nil, "is not a time"},
		{"time number", "met_on", 1709283600.0, nil, "want a time as a string"},

		{"ref", "account", "a1", "a1", ""},
		{"ref empty", "account", "", nil, "must not be empty"},
		{"ref number", "account", 1.0, nil, "want a record ID"},

		{"unknown", "nmae", "x", nil, `unknown field "nmae"`},
		{"object", "first_name", map[string]any{"a": 1.0}, nil, "got object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Normalize(tt.field, tt.v)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Normalize: %v", err)
				}
				if got != tt.want {
					t.Fatalf("Normalize = %#v, want %#v", got, tt.want)
				}
				if f, ok := got.(float64); ok && f == 0 && math.Signbit(f) {
					t.Errorf("got negative zero")
				}
				// Normalizing a normalized value changes nothing.
				if again, err := c.Normalize(tt.field, got); err != nil || again != got {
					t.Errorf("Normalize not idempotent: %#v, %v", again, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Normalize = %#v, want error", got)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FieldError", err)
			}
			if !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %q does not mention %q", err, tt.err)
			}
		})
	}
}

func TestFormatText(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{nil, ""},
		{"x", "x"},
		{12.5, "12.5"},
		{3.0, "3"},
		{1e21, "1000000000000000000000"},
		{0.000001, "0.000001"},
		{true, "true"},
		{false, "false"},
		{json.Number("1.50"), "1.50"},
	}
	for _, tt := range tests {
		if got := FormatText(tt.v); got != tt.want {
			t.Errorf("FormatText(%#v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestValidateWrite(t *testing.T) {
	c := contacts(t)
	tests := []struct {
		name     string
		fields   map[string]any
		creating bool
		want     map[string]any
		err      string
		is       error // sentinel the error matches, if any
	}{
		{
			name:     "create ok",
			fields:   map[string]any{"last_name": "Lovelace", "amount": json.Number("10"), "met_on": "2024-03-01"},
			creating: true,
			want:     map[string]any{"last_name": "Lovelace", "amount": 10.0, "met_on": "2024-03-01T00:00:00Z"},
		},
		{
			name:   "update without required",
			fields: map[string]any{"stage": "won", "first_name": nil},
			want:   map[string]any{"stage": "won", "first_name": nil},
		},
		{
			name:   "empty update",
			fields: nil,
			want:   map[string]any{},
		},
		{
			name:   "unknown field",
			fields: map[string]any{"nmae": "x", "last_name": "L"},
			err:    `contacts/c1: unknown field "nmae"`,
			is:     ErrUnknownField,
		},
		{
			name:     "missing required on create",
			fields:   map[string]any{"first_name": "Ada"},
			creating: true,
			err:      `contacts/c1: field "last_name" is required`,
			is:       ErrRequired,
		},
		{
			name:   "required set to nil on update",
			fields: map[string]any{"last_name": nil},
			err:    `contacts/c1: field "last_name" is required`,
			is:     ErrRequired,
		},
		{
			name:     "required set to nil on create",
			fields:   map[string]any{"last_name": nil},
			creating: true,
			err:      `contacts/c1: field "last_name" is required`,
			is:       ErrRequired,
		},
		{
			name:   "bad enum value",
			fields: map[string]any{"stage": "maybe"},
			err:    `contacts/c1: field "stage": value "maybe" is not one of lead, qualified, won, lost`,
		},
		{
			name:   "first bad field in name order",
			fields: map[string]any{"stage": "maybe", "amount": "x"},
			err:    `contacts/c1: field "amount": want a number, got string "x"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in map[string]any
			if tt.fields != nil {
				in = make(map[string]any)
				for k, v := range tt.fields {
					in[k] = v
				}
			}
			got, err := c.ValidateWrite("c1", in, tt.creating)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("ValidateWrite: %v", err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
				for k, w := range tt.want {
					if g, ok := got[k]; !ok || g != w {
						t.Errorf("%s = %#v, want %#v", k, g, w)
					}
				}
				if in != nil {
					got["first_name"] = "mutated"
					if v, ok := in["first_name"]; ok && v == "mutated" {
						t.Error("result shares the input map")
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateWrite = %v, want error", got)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FieldError", err)
			}
			if fe.ID != "c1" || fe.Collection != "contacts" {
				t.Errorf("FieldError = %+v", fe)
			}
			if err.Error() != tt.err {
				t.Errorf("error = %q, want %q", err, tt.err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if tt.is == nil && (errors.Is(err, ErrUnknownField) || errors.Is(err, ErrRequired)) {
				t.Errorf("error %v matches a sentinel it should not", err)
			}
		})
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		e    *FieldError
		want string
	}{
		{&FieldError{Collection: "contacts", ID: "c1", Field: "a", Reason: "bad"}, `contacts/c1: field "a": bad`},
		{&FieldError{Collection: "contacts", Field: "a", Reason: "bad"}, `contacts: field "a": bad`},
		{&FieldError{Field: "a", Reason: "bad"}, `field "a": bad`},
		{&FieldError{Collection: "contacts", ID: "c1", Reason: "bad"}, `contacts/c1: bad`},
		{&FieldError{Collection: "contacts", Field: "x", Reason: "unknown field"}, `contacts: unknown field "x"`},
		{&FieldError{Collection: "contacts", ID: "c1", Field: "x", Reason: "is required"}, `contacts/c1: field "x" is required`},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	// A hand-built unknown-field error still matches the sentinel.
	if !errors.Is(tests[4].e, ErrUnknownField) {
		t.Error("hand-built unknown field error does not match ErrUnknownField")
	}
	if !errors.Is(tests[5].e, ErrRequired) {
		t.Error("hand-built required error does not match ErrRequired")
	}
	if errors.Is(tests[0].e, ErrUnknownField) {
		t.Error("value error matches ErrUnknownField")
	}
}
