package schema

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// TextFormat says how values typed as text are written, for ParseTextIn.
// The zero TextFormat is ParseText's format.
type TextFormat struct {
	// DecimalComma makes numbers use ',' as the decimal mark, as in "12,5"
	// and "-0,75", with optional group separators in the integer part:
	// '.', ' ', U+00A0 (no-break space), U+202F (narrow no-break space) or
	// '\'' — one kind per number, each followed by exactly three digits, as
	// in "1.234.567,89", "1 234,56" or "1'234". An exponent may follow
	// ("1,5e3"). Text that could mean something else is refused rather
	// than guessed: "1.5" (with a decimal comma '.' separates groups of
	// three), "0.123", two commas, mixed or misplaced separators.
	DecimalComma bool
	// DateLayout, if not empty, is the Go time layout (see package time)
	// that time values are written in, such as "02.01.2006",
	// "2.1.2006" (day and month with or without a leading zero) or
	// "01/02/2006 15:04". It must include the year, month and day. As in
	// ParseText, a time without a zone is UTC, so a date-only layout gives
	// midnight UTC; a layout with a zone (such as "-07:00") is honoured and
	// the result is in UTC. Only the layout is accepted: RFC 3339 text is
	// refused unless the layout is RFC 3339.
	DateLayout string
}

// Validate reports whether the format is usable: DateLayout, if set, must
// include the year, month and day. ParseTextIn refuses the values of time
// fields in a format that does not validate.
func (tf TextFormat) Validate() error {
	if tf.DateLayout == "" {
		return nil
	}
	if reason := layoutProblem(tf.DateLayout); reason != "" {
		return fmt.Errorf("date layout %q %s", tf.DateLayout, reason)
	}
	return nil
}

// layoutProblem says what is wrong with a time layout, or "" when it shows
// year, month and day. It formats dates that differ only in the year, the
// month or the day but fall on the same weekday (so that a weekday name
// does not count as a day).
func layoutProblem(layout string) string {
	base := time.Date(2006, 1, 2, 15, 4, 5, 0, time.UTC) // a Monday
	var missing []string
	for _, o := range []struct {
		what  string
		other time.Time
	}{
		{"year", time.Date(2012, 1, 2, 15, 4, 5, 0, time.UTC)},   // a Monday
		{"month", time.Date(2006, 10, 2, 15, 4, 5, 0, time.UTC)}, // a Monday
		{"day", time.Date(2006, 1, 30, 15, 4, 5, 0, time.UTC)},   // a Monday
	} {
		if base.Format(layout) == o.other.Format(layout) {
			missing = append(missing, o.what)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return "has no " + strings.Join(missing, ", ") + " (want a Go time layout such as 02.01.2006 or 01/02/2006 15:04)"
}

// parseTimeLayout parses s with a time layout and formats it canonically,
// returning a reason when it is bad.
func parseTimeLayout(s, layout string) (string, string) {
	if reason := layoutProblem(layout); reason != "" {
		return "", fmt.Sprintf("cannot be read: the date layout %q %s", layout, reason)
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		example := time.Date(2024, 3, 31, 14, 30, 0, 0, time.UTC).Format(layout)
		return "", fmt.Sprintf("is not a time in the layout %q (want a time like %q)", layout, example)
	}
	out, ok := formatTime(t)
	if !ok {
		return "", "is out of range (years 0000 to 9999 UTC)"
	}
	return out, ""
}

// isGroupSeparator reports whether r may separate groups of digits in a
// number written with a decimal comma.
func isGroupSeparator(r rune) bool {
	switch r {
	case '.', ' ', '\u00a0', '\u202f', '\'':
		return true
	}
	return false
}

// decimalCommaHint is the accepted number syntax with a decimal comma, for
// error messages.
const decimalCommaHint = " (want a number with a decimal comma, like 12,5 or 1.234,56)"

// parseDecimalComma parses a number written with a decimal comma (see
// TextFormat.DecimalComma), returning a reason when it is bad. It rewrites
// s in the syntax of strconv.ParseFloat, with digits only, and leaves the
// rest (range, finiteness, -0) to parseNumber.
func parseDecimalComma(s string) (float64, string) {
	var b strings.Builder
	rest := s
	if rest != "" && (rest[0] == '+' || rest[0] == '-') {
		b.WriteByte(rest[0])
		rest = rest[1:]
	}
	var (
		sep        rune // the group separator in use, 0 before the first
		group      int  // digits since the last separator (or the start)
		intDigits  int
		fracDigits int
		comma      bool
		leadZero   bool // the integer part starts with 0
	)
	// badGroups explains a group of the wrong size.
	badGroups := func() string {
		if sep == '.' {
			return `is ambiguous: with a decimal comma, "." separates groups of three digits (write the decimal mark as ",")`
		}
		return fmt.Sprintf("has digits grouped wrongly (a group separator %q must be followed by exactly three digits)", sep)
	}
	i := 0
mantissa:
	for i < len(rest) {
		r, size := utf8.DecodeRuneInString(rest[i:])
		switch {
		case r >= '0' && r <= '9':
			if comma {
				fracDigits++
			} else {
				if intDigits == 0 && r == '0' {
					leadZero = true
				}
				intDigits++
				group++
			}
			b.WriteRune(r)
		case r == ',':
			if comma {
				return 0, "has more than one decimal comma" + decimalCommaHint
			}
			if sep != 0 && group != 3 {
				return 0, badGroups()
			}
			comma = true
			b.WriteByte('.')
		case isGroupSeparator(r):
			switch {
			case comma:
				return 0, fmt.Sprintf("has a group separator %q after the decimal comma%s", r, decimalCommaHint)
			case group == 0:
				return 0, fmt.Sprintf("has a misplaced group separator %q%s", r, decimalCommaHint)
			case sep == 0 && leadZero:
				return 0, fmt.Sprintf("is ambiguous: a number with group separators must not start with 0%s", decimalCommaHint)
			case sep == 0 && group > 3:
				sep = r
				return 0, badGroups()
			case sep == 0:
				sep = r
			case r != sep:
				return 0, fmt.Sprintf("mixes the group separators %q and %q%s", sep, r, decimalCommaHint)
			case group != 3:
				return 0, badGroups()
			}
			group = 0
		case r == 'e' || r == 'E':
			break mantissa
		default:
			return 0, "is not a number" + decimalCommaHint
		}
		i += size
	}
	if intDigits+fracDigits == 0 {
		return 0, "is not a number" + decimalCommaHint
	}
	if sep != 0 && !comma && group != 3 {
		return 0, badGroups()
	}
	if comma && fracDigits == 0 {
		return 0, "ends with the decimal comma" + decimalCommaHint
	}
	if exp := rest[i:]; exp != "" {
		// exp starts with e or E: an optional sign, then digits.
		digits := strings.TrimLeft(exp[1:], "+-")
		if digits == "" || len(exp)-1-len(digits) > 1 || strings.Trim(digits, "0123456789") != "" {
			return 0, "is not a number" + decimalCommaHint
		}
		b.WriteString(exp)
	}
	return parseNumber(b.String())
}

// FormatTextIn renders a value of field for a file written in tf, the
// inverse of ParseTextIn: with DecimalComma a number is written with a
// decimal comma and no group separators ("1234,5"); with DateLayout a time
// is written in that layout, in UTC. Other values are written as
// FormatText writes them.
func (c *Collection) FormatTextIn(field string, v any, tf TextFormat) string {
	f := c.Fields[field]
	if f == nil || v == nil {
		return FormatText(v)
	}
	switch f.Type {
	case TypeNumber:
		s := FormatText(v)
		if tf.DecimalComma {
			s = strings.Replace(s, ".", ",", 1)
		}
		return s
	case TypeTime:
		s := FormatText(v)
		if tf.DateLayout == "" {
			return s
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return s
		}
		return t.UTC().Format(tf.DateLayout)
	}
	return FormatText(v)
}
