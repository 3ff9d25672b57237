package gui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/schema"
)

// pageSize is how many records a page of a list shows.
const pageSize = 50

// listColumns is how many fields a list shows besides the id.
const listColumns = 5

// collectionsData lists the collections of the schema.
type collectionsData struct {
	Collections []string
}

// loadSchema reads the replicated schema.
func (s *Server) loadSchema(r *http.Request) (*schema.Schema, error) {
	raw, err := s.api.Schema(r.Context())
	if err != nil {
		return nil, err
	}
	var sc schema.Schema
	if err := json.Unmarshal(raw, &sc); err != nil {
		return nil, fmt.Errorf("read schema: %w", err)
	}
	return &sc, nil
}

func (s *Server) collections(w http.ResponseWriter, r *http.Request) {
	sc, err := s.loadSchema(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var d collectionsData
	for name := range sc.Collections {
		d.Collections = append(d.Collections, name)
	}
	sort.Strings(d.Collections)
	p := s.newPage(r, "Records", "records")
	p.Data = d
	s.render(w, r, http.StatusOK, "collections", p)
}

// recordsData is one page of a collection's list.
type recordsData struct {
	Collection  string
	Collections []string
	Columns     []string
	Query       string
	Rows        []apijson.Record
	Total       int // records matching the query
	Page, Pages int
	From, To    int // 1-based positions shown
}

func (s *Server) records(w http.ResponseWriter, r *http.Request) {
	coll := r.PathValue("collection")
	sc, err := s.loadSchema(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, ok := sc.Collections[coll]
	if !ok {
		s.fail(w, r, &api.Error{Status: http.StatusNotFound, Msg: fmt.Sprintf("there is no collection %q", coll)})
		return
	}
	d := recordsData{Collection: coll, Query: strings.TrimSpace(r.URL.Query().Get("q")), Columns: fieldOrder(c)}
	for name := range sc.Collections {
		d.Collections = append(d.Collections, name)
	}
	sort.Strings(d.Collections)
	if len(d.Columns) > listColumns {
		d.Columns = d.Columns[:listColumns]
	}
	q := strings.ToLower(d.Query)
	var all []apijson.Record
	err = s.api.List(r.Context(), coll, api.ListOptions{}, func(line []byte) error {
		var rec apijson.Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("list %s: %w", coll, err)
		}
		if q == "" || matches(rec, q) {
			all = append(all, rec)
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	d.Total = len(all)
	d.Pages = max(1, (d.Total+pageSize-1)/pageSize)
	d.Page, _ = strconv.Atoi(r.URL.Query().Get("page"))
	d.Page = min(max(d.Page, 1), d.Pages)
	lo, hi := (d.Page-1)*pageSize, min(d.Page*pageSize, d.Total)
	d.Rows = all[lo:hi]
	d.From, d.To = lo+1, hi
	p := s.newPage(r, coll, "records")
	p.Data = d
	s.render(w, r, http.StatusOK, "records", p)
}

// matches: the record's id or a field's value contains q (lower case).
func matches(rec apijson.Record, q string) bool {
	if strings.Contains(strings.ToLower(rec.ID), q) {
		return true
	}
	for _, v := range rec.Fields {
		if strings.Contains(strings.ToLower(value(v)), q) {
			return true
		}
	}
	return false
}

// fieldOrder is the order fields are shown in: required ones first, then
// by name.
func fieldOrder(c *schema.Collection) []string {
	var names []string
	for name := range c.Fields {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := c.Fields[names[i]], c.Fields[names[j]]
		if a.Required != b.Required {
			return a.Required
		}
		return names[i] < names[j]
	})
	return names
}

// recordData is a record's page.
type recordData struct {
	Record  apijson.Record
	Fields  []fieldView
	Deleted bool // the record conflicts with its delete
	// RecordConflict: a delete concurrent with edits (field _record).
	RecordConflict *conflictView
}

// fieldView is one field of a record: its value, who wrote it when, its
// conflict if any, and the values it had.
type fieldView struct {
	Name     string
	Value    any
	Set      bool
	Writer   string
	At       time.Time
	Conflict *conflictView
	History  []apijson.History
}

func (s *Server) record(w http.ResponseWriter, r *http.Request) {
	coll, id := r.PathValue("collection"), r.PathValue("id")
	rec, err := s.api.Get(r.Context(), coll, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	hist, err := s.api.History(r.Context(), coll, id, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The schema's fields in its order, then any other field the record
	// has, by name.
	var order []string
	seen := map[string]bool{}
	if sc, err := s.loadSchema(r); err == nil {
		if c, ok := sc.Collections[coll]; ok {
			order = fieldOrder(c)
		}
	}
	for _, f := range order {
		seen[f] = true
	}
	extra := map[string]bool{}
	for f := range rec.Fields {
		if !seen[f] {
			extra[f] = true
		}
	}
	order = append(order, sortedSet(extra)...)
	byField := map[string][]apijson.History{}
	for _, h := range hist {
		byField[h.Field] = append(byField[h.Field], h)
	}
	d := recordData{Record: rec}
	if c, ok := rec.Conflicts["_record"]; ok {
		cv := newConflictView(apijson.Conflict{Collection: coll, ID: id, Field: "_record", Policy: c.Policy, Open: c.Open, Candidates: c.Candidates})
		d.RecordConflict = &cv
	}
	for _, name := range order {
		v, set := rec.Fields[name]
		fv := fieldView{Name: name, Value: v, Set: set}
		hs := byField[name]
		sort.SliceStable(hs, func(i, j int) bool { return hs[i].At.After(hs[j].At) })
		fv.History = hs
		for _, h := range hs {
			if h.Visible {
				fv.Writer, fv.At = who(h.WriterName, h.Writer), h.At
				break
			}
		}
		if c, ok := rec.Conflicts[name]; ok {
			cv := newConflictView(apijson.Conflict{Collection: coll, ID: id, Field: name, Policy: c.Policy, Open: c.Open, Candidates: c.Candidates})
			fv.Conflict = &cv
		}
		d.Fields = append(d.Fields, fv)
	}
	p := s.newPage(r, coll+" "+id, "records")
	p.Data = d
	s.render(w, r, http.StatusOK, "record", p)
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
