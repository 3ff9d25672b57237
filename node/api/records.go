package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
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
	if !req.AllowDuplicate && !s.allowDuplicates() {
		if err := s.b.Store().CheckDuplicate(r.Context(), collection, id, req.Fields, req.Text); err != nil {
			writeError(w, err)
			return
		}
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
	// Likely duplicates are refused unless the request or the node allows
	// them (docs/duplicates.md).
	opts := crdt.ImportOptions{RefuseDuplicates: true}
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
		case "allow_duplicate":
			opts.RefuseDuplicates = !v
		default:
			return opts, fmt.Errorf("import: unknown query parameter %q (want dry_run, skip_invalid, allow_duplicate)", k)
		}
	}
	return opts, nil
}

// maxImportBody bounds an import's request body (a variable for tests).
var maxImportBody int64 = apijson.MaxImportBody

// SpoolDirer is implemented by a Backend that has a directory of its own
// for the import's spooled request bodies (the node: its data dir's tmp/);
// without one they go to os.TempDir().
type SpoolDirer interface {
	SpoolDir() string
}

// importLines reads JSON Lines (one object with an "id" member per line)
// into a temporary file, up to maxImportBody bytes, then imports them from
// it in two passes (crdt.Store.ImportStream), streaming progress as JSON
// Lines: the first pass validates every line, the second writes them in
// batched deltas. A malformed line or a record that fails validation is a
// plain 400 naming its line, and nothing was written; a body over the
// limit is a 413.
func (s *Server) importLines(w http.ResponseWriter, r *http.Request) {
	collection := r.PathValue("collection")
	opts, err := importQuery(r)
	if err != nil {
		writeError(w, BadRequest(err))
		return
	}
	if s.allowDuplicates() {
		opts.RefuseDuplicates = false
	}
	f, err := s.spool(w, r)
	if err != nil {
		if errors.Is(err, ErrImportTooLarge) {
			writeJSON(w, http.StatusRequestEntityTooLarge, apijson.ErrorBody{Error: err.Error()})
			return
		}
		writeError(w, err)
		return
	}
	defer func() {
		_ = f.Close()
		if err := os.Remove(f.Name()); err != nil {
			s.log.Warn("import: remove the spooled request", "file", f.Name(), "err", err)
		}
	}()
	src := func(yield func(crdt.ImportRecord) error) error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("read the spooled request: %w", err)
		}
		var stop error
		err := apijson.EachLine(bufio.NewReaderSize(f, 64<<10), func(rec crdt.ImportRecord) error {
			stop = yield(rec)
			return stop
		})
		if err != nil && stop == nil {
			return BadRequest(err) // a malformed line
		}
		return err
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
	res, err := s.b.Store().ImportStream(r.Context(), collection, src, opts, func(done, total int) {
		emit(apijson.ImportProgress{Done: done, Total: total})
	})
	switch {
	case err != nil && !started:
		writeError(w, err)
	case err != nil:
		emit(apijson.ImportProgress{Done: res.Written + res.Unchanged, Total: res.Records, Error: err.Error()})
	default:
		emit(apijson.ImportProgress{Done: res.Records, Total: res.Records, Result: &res})
	}
}

// spool copies the request body to a new temporary file, which the caller
// closes and removes. A body over maxImportBody is ErrImportTooLarge; a
// body that cannot be read is the caller's mistake.
func (s *Server) spool(w http.ResponseWriter, r *http.Request) (*os.File, error) {
	dir := os.TempDir()
	if sd, ok := s.b.(SpoolDirer); ok && sd.SpoolDir() != "" {
		dir = sd.SpoolDir()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("import: spool the request: %w", err)
		}
	}
	f, err := os.CreateTemp(dir, "import-*.jsonl")
	if err != nil {
		return nil, fmt.Errorf("import: spool the request: %w", err)
	}
	sw := &spoolWriter{f: f}
	_, err = io.Copy(sw, http.MaxBytesReader(w, r.Body, maxImportBody))
	if err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			return nil, fmt.Errorf("import: %w of %s (split it into smaller files)", ErrImportTooLarge, byteSize(tooLarge.Limit))
		case sw.err != nil:
			return nil, fmt.Errorf("import: spool the request: %w", err)
		}
		return nil, BadRequest(fmt.Errorf("import: read the request: %w", err))
	}
	return f, nil
}

// spoolWriter is the spool file, telling its write errors from the
// body's read errors.
type spoolWriter struct {
	f   *os.File
	err error
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// byteSize renders a size limit: "1 GiB", "64 KiB", "100 bytes".
func byteSize(n int64) string {
	for _, u := range []struct {
		unit string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.unit)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
