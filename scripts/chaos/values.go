package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
)

// Values.

var fieldNames = []string{"name", "email", "city", "phone", "stage", "amount", "score", "active"}

var words = []string{"ada", "ben", "cleo", "dan", "eva", "finn", "gus", "hana", "ivo", "jo", "kai", "lea"}

var cities = []string{"Bern", "Basel", "Geneva", "Zurich", "Lugano", "Chur", "Sion", "Thun"}

var stages = []string{"lead", "qualified", "won", "lost"}

// randomValue returns a value of field f, as typed JSON and as CLI text.
func randomValue(r *rand.Rand, f string) (any, string) {
	switch f {
	case "name":
		s := fmt.Sprintf("%s %s-%d", words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(100))
		return s, s
	case "email":
		s := fmt.Sprintf("%s%d@example.com", words[r.IntN(len(words))], r.IntN(1000))
		return s, s
	case "city":
		s := cities[r.IntN(len(cities))]
		return s, s
	case "phone":
		s := fmt.Sprintf("+41 79 %03d %02d", r.IntN(1000), r.IntN(100))
		return s, s
	case "stage":
		s := stages[r.IntN(len(stages))]
		return s, s
	case "amount":
		v := float64(r.IntN(20000)) / 2
		return v, strconv.FormatFloat(v, 'f', -1, 64)
	case "score":
		v := float64(r.IntN(100))
		return v, strconv.FormatFloat(v, 'f', -1, 64)
	case "active":
		v := r.IntN(2) == 0
		return v, strconv.FormatBool(v)
	}
	panic("unknown field " + f)
}

// hotID is one of the few records every node keeps editing.
func hotID(r *rand.Rand, n int) string { return fmt.Sprintf("c%02d", r.IntN(n)) }

// pickID picks a record to edit: mostly a hot one, sometimes an imported one.
func (c *cluster) pickID(r *rand.Rand) string {
	x := r.IntN(100)
	k := r.IntN(1 << 30)
	if x < 20 && len(c.importedIDs) > 0 {
		return c.importedIDs[k%len(c.importedIDs)]
	}
	return hotID(r, 10)
}
