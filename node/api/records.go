package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/schema"
)

func (s *Server) schema(w http.ResponseWriter, r *http.Request) {
	sc, err := s.b.Store().Schema(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sc)
}

func (s *Server) applySchema(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		writeError(w, err)
		return
	}
	sc, err := schema.Parse(data)
	if err != nil {
		writeError(w, err)
		return
	}
	changed, err := s.b.Store().ApplySchema(r.Context(), sc)
	if err != nil {
		writeError(w, err)
		return
	}
	if changed == nil {
		changed = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"changed": changed})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	rec, err := s.b.Store().Get(r.Context(), r.PathValue("collection"), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apijson.FromRecord(rec, s.b.Names(r.Context())))
}

// put writes typed values (Fields) and command-line text (Text, parsed by
// the fields' types) of one record in one write.
func (s *Server) put(w http.ResponseWriter, r *http.Request) {
	collection, id := r.PathValue("collection"), r.PathValue("id")
	var req apijson.PutRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	res, err := s.b.Store().PutText(r.Context(), collection, id, req.Fields, req.Text)
	if err != nil {
		writeError(w, err)
		return
	}
	out := apijson.PutResponse{Created: res.Created, Fields: res.Fields}
	if out.Fields == nil {
		out.Fields = []string{}
	} else {
		out.Op = res.Op.String()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	op, err := s.b.Store().Delete(r.Context(), r.PathValue("collection"), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"op": op.String()})
}

// list streams the records of a collection as JSON Lines. ?where=FIELD=VALUE
// keeps the records whose field equals VALUE (parsed by the field's type).
// ?format=export writes import-compatible lines instead.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	collection := r.PathValue("collection")
	store := s.b.Store()
	c, err := store.Collection(ctx, collection)
	if err != nil {
		writeError(w, err)
		return
	}
	match := func(*crdt.Record) bool { return true }
	if where := r.URL.Query().Get("where"); where != "" {
		field, text, ok := strings.Cut(where, "=")
		if !ok {
			writeError(w, BadRequest(fmt.Errorf("--where %q: want FIELD=VALUE", where)))
			return
		}
		want, err := c.ParseText(field, text)
		if err != nil {
			writeError(w, err)
			return
		}
		match = func(rec *crdt.Record) bool { return rec.Fields[field].Value == want }
	}
	export := r.URL.Query().Get("format") == "export"
	nodes := s.b.Names(ctx)
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	err = store.List(ctx, collection, func(rec *crdt.Record) error {
		if !match(rec) {
			return nil
		}
		if export {
			line := rec.Values()
			line[schema.ReservedIDField] = rec.ID
			return enc.Encode(line)
		}
		return enc.Encode(apijson.FromRecord(rec, nodes))
	})
	if err != nil {
		// Headers are gone: end the stream with an error line the client
		// recognises.
		_ = enc.Encode(apijson.ErrorBody{Error: err.Error()})
	}
	_ = bw.Flush()
}

// importQuery reads the options of POST /v1/import: dry_run (plan and
// count, write nothing) and skip_invalid (leave out the records that fail
// validation, listed in the result), each a boolean.
func importQuery(r *http.Request) (crdt.ImportOptions, error) {
	var opts crdt.ImportOptions
	for k, vs := range r.URL.Query() {
		if len(vs) != 1 {
			return opts, fmt.Errorf("import: %s given %d times", k, len(vs))
		}
		v, err := strconv.ParseBool(vs[0])
		if err != nil {
			return opts, fmt.Errorf("import: %s=%q: want 1 or 0 (true or false)", k, vs[0])
		}
		switch k {
		case "dry_run":
			opts.DryRun = v
		case "skip_invalid":
			opts.SkipInvalid = v
		default:
			return opts, fmt.Errorf("import: unknown query parameter %q (want dry_run, skip_invalid)", k)
		}
	}
	return opts, nil
}

// importLines reads JSON Lines (one object with an "id" member per line),
// validates every line, then writes them in batched deltas, streaming
// progress as JSON Lines. A validation error is a plain 400: nothing was
// written.
func (s *Server) importLines(w http.ResponseWriter, r *http.Request) {
	collection := r.PathValue("collection")
	opts, err := importQuery(r)
	if err != nil {
		writeError(w, BadRequest(err))
		return
	}
	recs, err := apijson.ReadLines(r.Body)
	if err != nil {
		writeError(w, BadRequest(err))
		return
	}
	started := false
	var enc *json.Encoder
	emit := func(p apijson.ImportProgress) {
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			enc = json.NewEncoder(w)
		}
		_ = enc.Encode(p)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	res, err := s.b.Store().ImportWith(r.Context(), collection, recs, opts, func(done int) {
		emit(apijson.ImportProgress{Done: done, Total: len(recs)})
	})
	switch {
	case err != nil && !started:
		writeError(w, err)
	case err != nil:
		emit(apijson.ImportProgress{Done: res.Written + res.Unchanged, Total: len(recs), Error: err.Error()})
	default:
		emit(apijson.ImportProgress{Done: len(recs), Total: len(recs), Result: &res})
	}
}
