package crdt

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/schema"
)

func TestPutText(t *testing.T) {
	n := newTestNet(t, 1)
	r := n.replicas[0]
	ctx := context.Background()
	res, err := r.PutText(ctx, "contacts", "c1", map[string]any{"last_name": "Smith"},
		map[string]string{"amount": " 12.5 ", "active": "yes", "stage": "won"})
	if err != nil || !res.Created || strings.Join(res.Fields, ",") != "active,amount,last_name,stage" {
		t.Fatalf("PutText: %+v %v", res, err)
	}
	got := mustGet(t, r, "contacts", "c1").Values()
	if got["amount"] != 12.5 || got["active"] != true || got["stage"] != "won" || got["last_name"] != "Smith" {
		t.Errorf("PutText wrote %v", got)
	}
	h0 := r.Stats(ctx).MaxHeight
	bad := []struct {
		name   string
		fields map[string]any
		text   map[string]string
		err    string
		is     error
	}{
		{"bad text", nil, map[string]string{"amount": "twelve"}, `contacts/c1: field "amount": value "twelve" is not a number`, nil},
		{"bad value", map[string]any{"amount": "12"}, nil, `contacts/c1: field "amount": want a number, got string "12"`, nil},
		{"unknown field", nil, map[string]string{"nmae": "x"}, `contacts/c1: unknown field "nmae"`, schema.ErrUnknownField},
		{"given twice", map[string]any{"phone": "1"}, map[string]string{"phone": "2"}, `contacts/c1: field "phone": given both as a value and as text (give it once)`, nil},
		{"required cleared", map[string]any{"last_name": nil}, nil, `contacts/c1: field "last_name" is required`, schema.ErrRequired},
		{"nothing", nil, nil, "put contacts/c1: no fields to write", ErrNoFields},
		{"empty maps", map[string]any{}, map[string]string{}, "put contacts/c1: no fields to write", ErrNoFields},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := r.PutText(ctx, "contacts", "c1", b.fields, b.text)
			if err == nil || err.Error() != b.err {
				t.Fatalf("error %v, want %s", err, b.err)
			}
			var fe *schema.FieldError
			if b.is != ErrNoFields && (!errors.As(err, &fe) || fe.ID != "c1") {
				t.Errorf("want a *schema.FieldError naming c1, got %#v", err)
			}
			if b.is != nil && !errors.Is(err, b.is) {
				t.Errorf("%v is not %v", err, b.is)
			}
		})
	}
	if h := r.Stats(ctx).MaxHeight; h != h0 {
		t.Errorf("refused writes made %d deltas", h-h0)
	}
	// Put keeps accepting an empty write of an existing record: nothing
	// is written.
	res, err = r.Put(ctx, "contacts", "c1", map[string]any{})
	if err != nil || len(res.Fields) != 0 || r.Stats(ctx).MaxHeight != h0 {
		t.Errorf("empty Put: %+v %v", res, err)
	}
}
