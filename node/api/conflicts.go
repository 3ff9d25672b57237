package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

func (s *Server) conflicts(w http.ResponseWriter, r *http.Request) {
	var colls []string
	if c := r.URL.Query().Get("collection"); c != "" {
		colls = []string{c}
	}
	onlyOpen := r.URL.Query().Get("open") == "true"
	nodes := s.b.Names(r.Context())
	out := []apijson.Conflict{}
	err := s.b.Store().Conflicts(r.Context(), colls, func(c crdt.Conflict) error {
		if !onlyOpen || c.Open {
			out = append(out, apijson.FromConflict(c, nodes))
		}
		return nil
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) resolve(w http.ResponseWriter, r *http.Request) {
	collection, id, field := r.PathValue("collection"), r.PathValue("id"), r.PathValue("field")
	var req apijson.ResolveRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if (req.Pick != 0) == (req.Value != nil || req.Text != nil) {
		writeError(w, BadRequest(errors.New("resolve: give either a pick or a value")))
		return
	}
	if field == crdt.RecordField && req.Pick == 0 {
		writeError(w, BadRequest(fmt.Errorf("resolve %s/%s: a record conflict (%s) is resolved with --pick", collection, id, field)))
		return
	}
	res := crdt.Resolution{Pick: req.Pick, Value: req.Value, Text: req.Text}
	for _, s := range req.Expect {
		op, err := crdt.ParseOpID(s)
		if err != nil {
			writeError(w, BadRequest(err))
			return
		}
		res.Expect = append(res.Expect, op)
	}
	op, err := s.b.Store().Resolve(r.Context(), collection, id, field, res)
	if err != nil {
		writeError(w, err)
		return
	}
	out := map[string]string{}
	if op != (crdt.OpID{}) {
		out["op"] = op.String()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	collection, id := r.PathValue("collection"), r.PathValue("id")
	c, err := s.b.Store().Collection(r.Context(), collection)
	if err != nil {
		writeError(w, err)
		return
	}
	field := r.URL.Query().Get("field")
	switch {
	case field == crdt.RecordField:
		field = crdt.DeleteField // record deletes are stored under _del
	case field != "" && c.Fields[field] == nil:
		writeError(w, BadRequest(fmt.Errorf("%s: unknown field %q", collection, field)))
		return
	}
	h, err := s.b.Store().History(r.Context(), collection, id, field)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(h) == 0 {
		writeError(w, fmt.Errorf("%s/%s: %w", collection, id, crdt.ErrNotFound))
		return
	}
	writeJSON(w, http.StatusOK, apijson.FromHistory(h, s.b.Names(r.Context())))
}
