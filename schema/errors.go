package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Test for them with errors.Is; the errors returned by this
// package wrap them with context.
var (
	// ErrInvalidSchema is wrapped by every error Parse and Validate return.
	ErrInvalidSchema = errors.New("invalid schema")
	// ErrUnknownCollection is wrapped by Schema.Collection when the name is
	// not defined.
	ErrUnknownCollection = errors.New("unknown collection")
	// ErrUnknownField is matched by a *FieldError about a field the
	// collection does not define.
	ErrUnknownField = errors.New("unknown field")
	// ErrRequired is matched by a *FieldError about a required field that is
	// missing on create or being set to nil.
	ErrRequired = errors.New("field is required")
	// ErrDestructiveChange is wrapped by CheckAdditive when a schema change
	// would remove or alter something already defined.
	ErrDestructiveChange = errors.New("destructive schema change refused")
)

// FieldError describes a bad field or field value in a write. Collection and
// ID locate the record (ID is empty when the error comes from ParseText or
// Normalize; callers may fill it in), Field names the field, Value is the
// offending value as given, and Reason says what is wrong with it. The
// Reasons "unknown field" and "is required" are special: they make the error
// match ErrUnknownField and ErrRequired.
type FieldError struct {
	Collection string
	ID         string
	Field      string
	Value      any
	Reason     string
}

// Error formats the error as "collection/id: field "name": reason", leaving
// out the parts that are empty. Unknown and required fields read
// `unknown field "name"` and `field "name" is required`.
func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Collection != "" && e.ID != "":
		b.WriteString(e.Collection + "/" + e.ID + ": ")
	case e.Collection != "":
		b.WriteString(e.Collection + ": ")
	case e.ID != "":
		b.WriteString(e.ID + ": ")
	}
	switch {
	case e.Reason == reasonUnknownField:
		fmt.Fprintf(&b, "unknown field %q", e.Field)
	case e.Reason == reasonRequired:
		fmt.Fprintf(&b, "field %q is required", e.Field)
	case e.Field != "":
		fmt.Fprintf(&b, "field %q: %s", e.Field, e.Reason)
	default:
		b.WriteString(e.Reason)
	}
	return b.String()
}

// Unwrap returns the sentinel error this FieldError stands for, judged by
// its Reason: ErrUnknownField for "unknown field", ErrRequired for "is
// required", nil otherwise.
func (e *FieldError) Unwrap() error {
	switch e.Reason {
	case reasonUnknownField:
		return ErrUnknownField
	case reasonRequired:
		return ErrRequired
	}
	return nil
}

// Reasons of the FieldErrors that stand for sentinels.
const (
	reasonUnknownField = "unknown field"
	reasonRequired     = "is required"
)

func (c *Collection) unknownField(field string) *FieldError {
	return &FieldError{Collection: c.name(), Field: field, Reason: reasonUnknownField}
}

func (c *Collection) requiredField(field string, v any) *FieldError {
	return &FieldError{Collection: c.name(), Field: field, Value: v, Reason: reasonRequired}
}

func (c *Collection) badValue(field string, v any, format string, args ...any) *FieldError {
	return &FieldError{Collection: c.name(), Field: field, Value: v, Reason: fmt.Sprintf(format, args...)}
}

// quote renders a value for an error message, shortening long strings.
func quote(v any) string {
	const max = 64
	switch x := v.(type) {
	case string:
		if r := []rune(x); len(r) > max {
			x = string(r[:max]) + "..."
		}
		return fmt.Sprintf("%q", x)
	case nil:
		return "null"
	default:
		s := fmt.Sprint(x)
		if r := []rune(s); len(r) > max {
			s = string(r[:max]) + "..."
		}
		return s
	}
}

// kind names the JSON kind of a decoded value for an error message.
func kind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case nil:
		return "null"
	case json.Number, float64, float32, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	default:
		return fmt.Sprintf("%T", v)
	}
}
