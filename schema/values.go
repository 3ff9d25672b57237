package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Field values in Go. A value of a string, enum or ref field is a Go string;
// of a time field, a string in RFC 3339 format in UTC without trailing zeros
// in the fraction (time.RFC3339Nano of t.UTC()); of a number field, a finite
// float64; of a bool field, a bool. nil means the field is cleared.

// timeHint is the accepted time syntax, for error messages.
const timeHint = "want RFC 3339 like 2006-01-02T15:04:05Z, or a date like 2006-01-02"

// lookup returns the definition of the named field.
func (c *Collection) lookup(field string) (*Field, *FieldError) {
	if c != nil {
		if f := c.Fields[field]; f != nil {
			return f, nil
		}
	}
	return nil, c.unknownField(field)
}

// ParseText parses a value typed on the command line for the named field and
// returns it in canonical form:
//
//   - string: the text as is (the empty string is allowed);
//   - number: a decimal number as strconv.ParseFloat reads it; NaN,
//     infinities, out-of-range and hexadecimal numbers are refused;
//   - bool: true/false, yes/no, 1/0 or on/off, in any case;
//   - enum: one of the field's values, exactly;
//   - time: RFC 3339 with or without fractional seconds, or a date
//     2006-01-02 meaning midnight UTC; returned in UTC as time.RFC3339Nano;
//   - ref: any non-empty string.
//
// Surrounding spaces are ignored for numbers, bools and times. Errors are
// *FieldError with an empty ID. ParseText is ParseTextIn with the zero
// TextFormat.
func (c *Collection) ParseText(field, text string) (any, error) {
	return c.ParseTextIn(field, text, TextFormat{})
}

// ParseTextIn is ParseText for text written in format tf: with
// tf.DecimalComma numbers are read by parseDecimalComma, and with
// tf.DateLayout times are read with that layout (see TextFormat). Other
// types, and the zero TextFormat, are read as ParseText reads them. Errors
// are *FieldError with an empty ID.
func (c *Collection) ParseTextIn(field, text string, tf TextFormat) (any, error) {
	f, fe := c.lookup(field)
	if fe != nil {
		return nil, fe
	}
	switch f.Type {
	case TypeNumber:
		var n float64
		var reason string
		if tf.DecimalComma {
			n, reason = parseDecimalComma(strings.TrimSpace(text))
		} else {
			n, reason = parseNumber(strings.TrimSpace(text))
		}
		if reason != "" {
			return nil, c.badValue(field, text, "value %s %s", quote(text), reason)
		}
		return n, nil
	case TypeBool:
		switch strings.ToLower(strings.TrimSpace(text)) {
		case "true", "yes", "1", "on":
			return true, nil
		case "false", "no", "0", "off":
			return false, nil
		}
		return nil, c.badValue(field, text, "value %s is not a boolean (want true/false, yes/no, 1/0 or on/off)", quote(text))
	case TypeTime:
		var t, reason string
		if tf.DateLayout != "" {
			t, reason = parseTimeLayout(strings.TrimSpace(text), tf.DateLayout)
		} else {
			t, reason = parseTime(strings.TrimSpace(text))
		}
		if reason != "" {
			return nil, c.badValue(field, text, "value %s %s", quote(text), reason)
		}
		return t, nil
	default:
		return c.normalizeString(field, f, text)
	}
}

// Normalize checks a value decoded from JSON for the named field and returns
// it in canonical form (see ParseText for the forms). It accepts what
// encoding/json produces: string, float64, json.Number, bool and nil, and
// also Go integer types and float32 for number fields and time.Time for time
// fields. There is no coercion between kinds: a string for a number or bool
// field is an error. nil clears the field and is refused for a required
// field. Errors are *FieldError with an empty ID.
func (c *Collection) Normalize(field string, v any) (any, error) {
	f, fe := c.lookup(field)
	if fe != nil {
		return nil, fe
	}
	if v == nil {
		if f.Required {
			return nil, c.requiredField(field, v)
		}
		return nil, nil
	}
	switch f.Type {
	case TypeNumber:
		var n float64
		switch x := v.(type) {
		case float64:
			n = x
		case float32:
			n = float64(x)
		case json.Number:
			var reason string
			if n, reason = parseNumber(string(x)); reason != "" {
				return nil, c.badValue(field, v, "value %s %s", quote(string(x)), reason)
			}
		case int:
			n = float64(x)
		case int8:
			n = float64(x)
		case int16:
			n = float64(x)
		case int32:
			n = float64(x)
		case int64:
			n = float64(x)
		case uint:
			n = float64(x)
		case uint8:
			n = float64(x)
		case uint16:
			n = float64(x)
		case uint32:
			n = float64(x)
		case uint64:
			n = float64(x)
		default:
			return nil, c.wrongKind(field, f, v)
		}
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return nil, c.badValue(field, v, "value %s is not a finite number", quote(v))
		}
		return n + 0, nil // +0 turns -0 into 0
	case TypeBool:
		b, ok := v.(bool)
		if !ok {
			return nil, c.wrongKind(field, f, v)
		}
		return b, nil
	case TypeTime:
		switch x := v.(type) {
		case string:
			t, reason := parseTime(x)
			if reason != "" {
				return nil, c.badValue(field, v, "value %s %s", quote(x), reason)
			}
			return t, nil
		case time.Time:
			t, ok := formatTime(x)
			if !ok {
				return nil, c.badValue(field, v, "time %s is out of range (years 0000 to 9999 UTC)", quote(x))
			}
			return t, nil
		}
		return nil, c.wrongKind(field, f, v)
	default:
		s, ok := v.(string)
		if !ok {
			return nil, c.wrongKind(field, f, v)
		}
		return c.normalizeString(field, f, s)
	}
}

// normalizeString checks a string value of a string, enum or ref field.
func (c *Collection) normalizeString(field string, f *Field, s string) (any, error) {
	if !utf8.ValidString(s) {
		return nil, c.badValue(field, s, "value %s is not valid UTF-8", quote(s))
	}
	switch f.Type {
	case TypeString:
		return s, nil
	case TypeEnum:
		for _, v := range f.Values {
			if s == v {
				return s, nil
			}
		}
		return nil, c.badValue(field, s, "value %s is not one of %s", quote(s), strings.Join(f.Values, ", "))
	case TypeRef:
		if s == "" {
			return nil, c.badValue(field, s, "a ref must not be empty")
		}
		return s, nil
	default:
		return nil, c.badValue(field, s, "field has unknown type %q", f.Type)
	}
}

// wrongKind reports a value of the wrong JSON kind for field f.
func (c *Collection) wrongKind(field string, f *Field, v any) *FieldError {
	var want string
	switch f.Type {
	case TypeNumber:
		want = "a number"
	case TypeBool:
		want = "true or false"
	case TypeTime:
		want = "a time as a string (" + timeHint + ")"
	case TypeEnum:
		want = "a string, one of " + strings.Join(f.Values, ", ")
	case TypeRef:
		want = "a record ID as a string"
	case TypeString:
		want = "a string"
	default:
		return c.badValue(field, v, "field has unknown type %q", f.Type)
	}
	return c.badValue(field, v, "want %s, got %s %s", want, kind(v), quote(v))
}

// parseNumber parses a decimal number, returning a reason when it is bad.
func parseNumber(s string) (float64, string) {
	t := strings.TrimLeft(s, "+-")
	if strings.HasPrefix(t, "0x") || strings.HasPrefix(t, "0X") {
		return 0, "is not a decimal number"
	}
	n, err := strconv.ParseFloat(s, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, "is out of range"
	case err != nil:
		return 0, "is not a number"
	case math.IsNaN(n) || math.IsInf(n, 0):
		return 0, "is not a finite number"
	}
	return n + 0, "" // +0 turns -0 into 0
}

// parseTime parses RFC 3339 or a date and formats it canonically, returning
// a reason when it is bad.
func parseTime(s string) (string, string) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t, err = time.Parse(time.DateOnly, s)
	}
	if err != nil {
		return "", "is not a time (" + timeHint + ")"
	}
	out, ok := formatTime(t)
	if !ok {
		return "", "is out of range (years 0000 to 9999 UTC)"
	}
	return out, ""
}

// formatTime formats t in UTC as time.RFC3339Nano; ok is false when the
// year in UTC cannot be written in RFC 3339.
func formatTime(t time.Time) (string, bool) {
	u := t.UTC()
	if u.Year() < 0 || u.Year() > 9999 {
		return "", false
	}
	return u.Format(time.RFC3339Nano), true
}

// FormatText renders a field value for display; it is the inverse of
// ParseText. Numbers are written in decimal without trailing zeros, bools as
// true or false, strings as they are and nil as the empty string.
func FormatText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case json.Number:
		return string(x)
	default:
		return fmt.Sprint(x)
	}
}

// ValidateWrite checks a write of fields to record id and returns the values
// normalized, in a new map. Every field must be defined by the collection
// and every value valid for its field (see Normalize). A nil value clears a
// field and is kept as nil in the result; required fields can never be set
// to nil, and when creating is true they must all be present. Fields are
// checked in name order and the first problem is returned as a *FieldError.
// Unique fields are not checked here: that needs the store.
func (c *Collection) ValidateWrite(id string, fields map[string]any, creating bool) (map[string]any, error) {
	return c.ValidateWriteText(id, fields, nil, creating)
}

// ValidateWriteText is ValidateWrite for a write whose values come in two
// forms: fields holds values decoded from JSON or made in Go (checked by
// Normalize) and text holds values typed as text (parsed by ParseText). Both
// are checked in one pass, in field-name order, so the first problem is the
// same whichever form a value came in. A field given in both forms is
// refused: which one was meant cannot be told. Every *FieldError carries id.
func (c *Collection) ValidateWriteText(id string, fields map[string]any, text map[string]string, creating bool) (map[string]any, error) {
	return c.ValidateWriteTextIn(id, fields, text, creating, TextFormat{})
}

// ValidateWriteTextIn is ValidateWriteText with the text values parsed by
// ParseTextIn in format tf rather than by ParseText.
func (c *Collection) ValidateWriteTextIn(id string, fields map[string]any, text map[string]string, creating bool, tf TextFormat) (map[string]any, error) {
	out := make(map[string]any, len(fields)+len(text))
	names := make([]string, 0, len(fields)+len(text))
	for name := range fields {
		names = append(names, name)
	}
	for name := range text {
		if _, dup := fields[name]; !dup {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		v, isValue := fields[name]
		t, isText := text[name]
		var err error
		switch {
		case isValue && isText:
			err = c.badValue(name, t, "given both as a value and as text (give it once)")
		case isText:
			v, err = c.ParseTextIn(name, t, tf)
		default:
			v, err = c.Normalize(name, v)
		}
		if err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				fe.ID = id
			}
			return nil, err
		}
		out[name] = v
	}
	if creating {
		for _, name := range c.FieldNames() {
			if f := c.Fields[name]; f != nil && f.Required {
				if _, ok := out[name]; !ok {
					fe := c.requiredField(name, nil)
					fe.ID = id
					return nil, fe
				}
			}
		}
	}
	return out, nil
}
