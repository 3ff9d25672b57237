package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/crdt"
)

// Deterministic CRM data with the semantics of /work/shared/bench/gen_records.py
// (same name lists, fields, value ranges and formats), drawn from a seeded
// PCG generator instead of Python's: the same flags always give the same
// records, but not the same bytes as the Python script.

var (
	firstNames = strings.Fields("Jeff Anna Lena Omar Yuki Carlos Priya Noah Mia Ivan Sara Tom Aisha Ben Chen Lea")
	lastNames  = strings.Fields("Smith Rodman Meier Okafor Tanaka Garcia Patel Keller Rossi Novak Berg Dubois Haddad Kim Silva Weber")
	stages     = []string{"lead", "qualified", "won", "lost"}
	editFields = []string{"first_name", "phone", "stage", "amount", "active"}
	epoch      = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
)

const contactsCollection = "contacts"

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// round2 is Python's round(x, 2), close enough for generated amounts.
func round2(x float64) float64 { return math.Round(x*100) / 100 }

// contact is gen_records.py's contact(): 8 fields.
func contact(r *rand.Rand, i int, prefix string) crdt.ImportRecord {
	f, l := pick(r, firstNames), pick(r, lastNames)
	day := epoch.AddDate(0, 0, r.IntN(2000))
	return crdt.ImportRecord{
		Line: i + 1,
		ID:   fmt.Sprintf("%s%d", prefix, i),
		Fields: map[string]any{
			"first_name": f,
			"last_name":  l,
			"email":      fmt.Sprintf("%s.%s.%d@example.com", strings.ToLower(f), strings.ToLower(l), i),
			"phone":      fmt.Sprintf("+41 44 %03d %02d %02d", r.IntN(1000), r.IntN(100), r.IntN(100)),
			"stage":      pick(r, stages),
			"amount":     round2(100 + r.Float64()*(250000-100)),
			"active":     r.Float64() < 0.8,
			"met_on":     day.Format("2006-01-02") + "T09:00:00Z",
		},
	}
}

// contacts returns n contacts c0..c(n-1), seeded.
func contacts(n int, seed uint64) []crdt.ImportRecord {
	r := newRand(seed)
	out := make([]crdt.ImportRecord, n)
	for i := range out {
		out[i] = contact(r, i, "c")
	}
	return out
}

// edit is one single-field edit of a contact.
type edit struct {
	ID    string
	Field string
	Value any
}

// edits returns n single-field edits of the contacts in base (as returned
// by contacts), with gen_records.py's edit() semantics: a random contact, a
// random field among first_name, phone, stage, amount, active, and a random
// value of that field. One difference: a value equal to the field's current
// value is drawn again, so that every edit really changes the record (an
// unchanged value is a no-op for Store.Put: no delta, no fsync). It also
// returns the expected final state of every contact.
func edits(n int, base []crdt.ImportRecord, seed uint64) ([]edit, map[string]map[string]any) {
	r := newRand(seed)
	state := make(map[string]map[string]any, len(base))
	for _, rec := range base {
		m := make(map[string]any, len(rec.Fields))
		for k, v := range rec.Fields {
			m[k] = v
		}
		state[rec.ID] = m
	}
	value := func(field string) any {
		switch field {
		case "first_name":
			return pick(r, firstNames)
		case "phone":
			return fmt.Sprintf("+41 79 %03d %02d %02d", r.IntN(1000), r.IntN(100), r.IntN(100))
		case "stage":
			return pick(r, stages)
		case "amount":
			return round2(100 + r.Float64()*(250000-100))
		default: // active
			return r.Float64() < 0.5
		}
	}
	out := make([]edit, n)
	for i := range out {
		id := base[r.IntN(len(base))].ID
		field := pick(r, editFields)
		v := value(field)
		for v == state[id][field] {
			v = value(field)
		}
		state[id][field] = v
		out[i] = edit{ID: id, Field: field, Value: v}
	}
	return out, state
}

// coalesce turns a run of edits into import records, one per contact, each
// holding the last value of every field the run edited (what the run leaves
// behind), in order of first appearance.
func coalesce(run []edit, firstLine int) []crdt.ImportRecord {
	var out []crdt.ImportRecord
	at := map[string]int{}
	for i, e := range run {
		j, ok := at[e.ID]
		if !ok {
			j = len(out)
			at[e.ID] = j
			out = append(out, crdt.ImportRecord{Line: firstLine + i, ID: e.ID, Fields: map[string]any{}})
		}
		out[j].Fields[e.Field] = e.Value
	}
	return out
}

// cloneRecords deep-copies records: Store.Import rewrites their Fields.
func cloneRecords(recs []crdt.ImportRecord) []crdt.ImportRecord {
	out := make([]crdt.ImportRecord, len(recs))
	for i, r := range recs {
		m := make(map[string]any, len(r.Fields))
		for k, v := range r.Fields {
			m[k] = v
		}
		out[i] = crdt.ImportRecord{Line: r.Line, ID: r.ID, Fields: m}
	}
	return out
}
