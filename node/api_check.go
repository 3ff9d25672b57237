package node

import (
	"fmt"
	"net/http"
	"strconv"
)

// handleCheck answers POST /v1/check: whether the store is whole (every
// block reachable from the heads held and merged, no merged block out of
// reach of the heads, every visible value carried by the history), as a
// crdt.CheckReport. ?repair=1 repairs what can be repaired first and the
// report tells what was done (Repaired) and what remains. A query the
// handler does not understand is a 400 and nothing is checked.
func (n *Node) handleCheck(w http.ResponseWriter, r *http.Request) {
	repair, err := checkQuery(r)
	if err != nil {
		writeError(w, badRequest(err))
		return
	}
	rep, err := n.Check(r.Context(), repair)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// checkQuery reads the query of POST /v1/check: only "repair", once, with
// a boolean value (1, true, 0, false, ...).
func checkQuery(r *http.Request) (repair bool, err error) {
	q := r.URL.Query()
	for k, vs := range q {
		if k != "repair" {
			return false, fmt.Errorf("check: unknown query parameter %q (want repair=1 or nothing)", k)
		}
		if len(vs) != 1 {
			return false, fmt.Errorf("check: repair given %d times", len(vs))
		}
	}
	if !q.Has("repair") {
		return false, nil
	}
	repair, err = strconv.ParseBool(q.Get("repair"))
	if err != nil {
		return false, fmt.Errorf("check: repair=%q: want 1 or 0 (true or false)", q.Get("repair"))
	}
	return repair, nil
}
