package apijson

import (
	"strings"
	"testing"
)

// FuzzImportLines: import input as a user's file may hold it: every line
// is a record with an id, or the whole input is refused naming a line.
func FuzzImportLines(f *testing.F) {
	f.Add(`{"id":"c1","last_name":"Smith","amount":12.5}` + "\n\n" + `{"id":"c2"}`)
	f.Add(`{"id":1}`)
	f.Add(`{"id":"x"} {"id":"y"}`)
	f.Add("not json\n")
	f.Fuzz(func(t *testing.T, input string) {
		recs, err := ReadLines(strings.NewReader(input))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error %q does not name the line", err)
			}
			return
		}
		for _, r := range recs {
			if r.ID == "" || r.Line < 1 {
				t.Fatalf("accepted record %+v", r)
			}
			if _, has := r.Fields["id"]; has {
				t.Fatalf("the id stayed among the fields: %+v", r)
			}
		}
	})
}
