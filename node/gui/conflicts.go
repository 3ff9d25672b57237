package gui

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

// conflictView is a conflict as the pages show it.
type conflictView struct {
	Collection, ID, Field string
	Policy                string
	Open                  bool
	Candidates            []candidateView
	// Record: a delete concurrent with edits (field _record), resolved
	// by picking only.
	Record bool
}

// candidateView is one candidate value of a conflict.
type candidateView struct {
	N       int
	Value   any
	Field   string // a record conflict's edited field
	Deleted bool
	Writer  string
	At      time.Time
	Op      string
	// Shown: the value the record shows meanwhile (the first candidate).
	Shown bool
}

func newConflictView(c apijson.Conflict) conflictView {
	cv := conflictView{Collection: c.Collection, ID: c.ID, Field: c.Field, Policy: c.Policy, Open: c.Open, Record: c.Field == "_record"}
	for i, cand := range c.Candidates {
		cv.Candidates = append(cv.Candidates, candidateView{N: cand.N, Value: cand.Value, Field: cand.Field, Deleted: cand.Deleted,
			Writer: who(cand.WriterName, cand.Writer), At: cand.At, Op: cand.Op, Shown: i == 0})
	}
	return cv
}

// conflictsData is the conflicts page: open ones first (to decide), then
// those a policy decided.
type conflictsData struct {
	Open, Decided []conflictView
}

func (s *Server) conflicts(w http.ResponseWriter, r *http.Request) {
	cs, err := s.api.Conflicts(r.Context(), "", false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var d conflictsData
	for _, c := range cs {
		if c.Open {
			d.Open = append(d.Open, newConflictView(c))
		} else {
			d.Decided = append(d.Decided, newConflictView(c))
		}
	}
	p := s.newPage(r, "Conflicts", "conflicts")
	p.Data = d
	s.render(w, r, http.StatusOK, "conflicts", p)
}

// resolve decides a conflict: a candidate picked (button pick=N) or a
// value entered (text). The candidates the page showed are expected: a
// conflict that changed meanwhile is not decided blindly.
func (s *Server) resolve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.fail(w, r, badInput("the form could not be read: "+err.Error()))
		return
	}
	f := r.PostForm
	coll, id, field := f.Get("collection"), f.Get("id"), f.Get("field")
	var req apijson.ResolveRequest
	if pick := f.Get("pick"); pick != "" {
		n, err := strconv.Atoi(pick)
		if err != nil || n < 1 {
			s.fail(w, r, badInput("pick a candidate by its number"))
			return
		}
		req.Pick = n
	} else {
		text := f.Get("text")
		if strings.TrimSpace(text) == "" {
			s.fail(w, r, badInput("enter a value, or pick one of the candidates"))
			return
		}
		req.Text = &text
	}
	if coll == "" || id == "" || field == "" {
		s.fail(w, r, badInput("which conflict? (collection, id and field are needed)"))
		return
	}
	if exp := f.Get("expect"); exp != "" {
		req.Expect = strings.Split(exp, ",")
	}
	if _, err := s.api.Resolve(r.Context(), coll, id, field, req); err != nil {
		s.fail(w, r, err)
		return
	}
	back(w, r, localPath(f.Get("back"), "/conflicts"), "resolved")
}

// localPath is p if it is a path of this page, else def.
func localPath(p, def string) string {
	if p == "" || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\?#") {
		return def
	}
	return p
}
