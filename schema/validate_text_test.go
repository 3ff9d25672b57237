package schema

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestValidateWriteText(t *testing.T) {
	c := contacts(t)
	tests := []struct {
		name     string
		fields   map[string]any
		text     map[string]string
		creating bool
		want     map[string]any
		err      string // the whole error message when not ok
		is       error
	}{
		{
			name:     "text only, parsed by type",
			text:     map[string]string{"last_name": "Lovelace", "amount": " 12.5 ", "active": "yes", "met_on": "2024-03-01"},
			creating: true,
			want:     map[string]any{"last_name": "Lovelace", "amount": 12.5, "active": true, "met_on": "2024-03-01T00:00:00Z"},
		},
		{
			name:     "typed and text together",
			fields:   map[string]any{"last_name": "Lovelace", "amount": json.Number("3")},
			text:     map[string]string{"stage": "won", "active": "off"},
			creating: true,
			want:     map[string]any{"last_name": "Lovelace", "amount": 3.0, "stage": "won", "active": false},
		},
		{
			name:     "a required field given as text satisfies create",
			text:     map[string]string{"last_name": ""},
			want:     map[string]any{"last_name": ""},
			creating: true,
		},
		{
			name: "nothing",
			want: map[string]any{},
		},
		{
			name:     "required missing on create, text counted",
			text:     map[string]string{"first_name": "Ada"},
			creating: true,
			err:      `contacts/c1: field "last_name" is required`,
			is:       ErrRequired,
		},
		{
			name: "bad text carries the record id",
			text: map[string]string{"amount": "twelve"},
			err:  `contacts/c1: field "amount": value "twelve" is not a number`,
		},
		{
			name: "unknown field as text",
			text: map[string]string{"nmae": "x"},
			err:  `contacts/c1: unknown field "nmae"`,
			is:   ErrUnknownField,
		},
		{
			// One pass in name order: the text error on "amount" comes
			// before the typed error on "stage".
			name:   "first problem in name order across both forms",
			fields: map[string]any{"stage": "maybe"},
			text:   map[string]string{"amount": "x"},
			err:    `contacts/c1: field "amount": value "x" is not a number`,
		},
		{
			name:   "first problem in name order, typed first",
			fields: map[string]any{"amount": "x"},
			text:   map[string]string{"stage": "maybe"},
			err:    `contacts/c1: field "amount": want a number, got string "x"`,
		},
		{
			name:   "a field given twice",
			fields: map[string]any{"first_name": "Ada"},
			text:   map[string]string{"first_name": "Ada"},
			err:    `contacts/c1: field "first_name": given both as a value and as text (give it once)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.ValidateWriteText("c1", tt.fields, tt.text, tt.creating)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("ValidateWriteText: %v", err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
				for k, w := range tt.want {
					if g, ok := got[k]; !ok || g != w {
						t.Errorf("%s = %#v, want %#v", k, g, w)
					}
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
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
		})
	}
}

// ValidateWrite is ValidateWriteText without text: same results.
func TestValidateWriteIsValidateWriteTextWithoutText(t *testing.T) {
	c := contacts(t)
	in := map[string]any{"last_name": "L", "amount": json.Number("1e2"), "stage": "lead"}
	a, errA := c.ValidateWrite("c1", in, true)
	b, errB := c.ValidateWriteText("c1", in, nil, true)
	if errA != nil || errB != nil || len(a) != len(b) {
		t.Fatalf("%v %v / %v %v", a, errA, b, errB)
	}
	for k, v := range a {
		if b[k] != v {
			t.Errorf("%s: %v vs %v", k, v, b[k])
		}
	}
}
