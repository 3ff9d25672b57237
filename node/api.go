package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/schema"
)

// The local API: HTTP over a Unix socket inside the data dir. Whoever can
// open the data dir (mode 0700) can use it; nobody else can. The JSON shapes
// are documented in docs/json.md.

// SocketFile is the API socket inside the data dir.
const SocketFile = "api.sock"

// maxImportLine bounds one JSON Lines record.
const maxImportLine = 1 << 20

// RecordJSON is a record as the API and the CLI print it.
type RecordJSON struct {
	Collection string         `json:"collection"`
	ID         string         `json:"id"`
	Fields     map[string]any `json:"fields"`
	UpdatedAt  time.Time      `json:"updated_at"`
	UpdatedBy  string         `json:"updated_by"`
	// UpdatedByName is the writer's node name, when known.
	UpdatedByName string                   `json:"updated_by_name,omitempty"`
	Conflicts     map[string]FieldConflict `json:"conflicts,omitempty"`
}

// FieldConflict is the conflict of one field of a record (or of the record
// itself, under "_record").
type FieldConflict struct {
	Policy     string          `json:"policy"`
	Open       bool            `json:"open"`
	Candidates []CandidateJSON `json:"candidates"`
}

// ToJSON converts a record to its JSON form; nodes (may be nil) names the
// writers.
func ToJSON(r *crdt.Record, nodes map[string]crdt.NodeInfo) RecordJSON {
	out := RecordJSON{Collection: r.Collection, ID: r.ID, Fields: r.Values(), UpdatedAt: r.UpdatedAt(),
		UpdatedBy: r.Updated.Writer, UpdatedByName: nodes[r.Updated.Writer].Name}
	for _, c := range crdt.ConflictsOf(r) {
		if out.Conflicts == nil {
			out.Conflicts = map[string]FieldConflict{}
		}
		cj := ConflictToJSON(c, nodes)
		out.Conflicts[c.Field] = FieldConflict{Policy: cj.Policy, Open: cj.Open, Candidates: cj.Candidates}
	}
	return out
}

// PutRequest is the body of PUT /v1/records/{collection}/{id}. Values in
// Fields are typed JSON values (null clears a field); values in Text are
// command-line strings, parsed by the field's type.
type PutRequest struct {
	Fields map[string]any    `json:"fields,omitempty"`
	Text   map[string]string `json:"text,omitempty"`
}

// PutResponse answers a put.
type PutResponse struct {
	Op      string   `json:"op,omitempty"`
	Created bool     `json:"created"`
	Fields  []string `json:"fields"`
}

// ErrorResponse is the body of every failed request.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Handler returns the API of n.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status(r.Context()))
	})
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) {
		peers, err := n.Peers(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, peers)
	})
	mux.HandleFunc("POST /v1/offline", func(w http.ResponseWriter, r *http.Request) {
		n.setOnlineHandler(w, true)
	})
	mux.HandleFunc("POST /v1/online", func(w http.ResponseWriter, r *http.Request) {
		n.setOnlineHandler(w, false)
	})
	mux.HandleFunc("GET /v1/schema", func(w http.ResponseWriter, r *http.Request) {
		sc, err := n.store.Schema(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, sc)
	})
	mux.HandleFunc("POST /v1/schema", func(w http.ResponseWriter, r *http.Request) {
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
		changed, err := n.store.ApplySchema(r.Context(), sc)
		if err != nil {
			writeError(w, err)
			return
		}
		if changed == nil {
			changed = []string{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"changed": changed})
	})
	mux.HandleFunc("GET /v1/records/{collection}/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := n.store.Get(r.Context(), r.PathValue("collection"), r.PathValue("id"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ToJSON(rec, n.names(r)))
	})
	mux.HandleFunc("PUT /v1/records/{collection}/{id}", n.handlePut)
	mux.HandleFunc("DELETE /v1/records/{collection}/{id}", func(w http.ResponseWriter, r *http.Request) {
		op, err := n.store.Delete(r.Context(), r.PathValue("collection"), r.PathValue("id"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"op": op.String()})
	})
	mux.HandleFunc("GET /v1/records/{collection}", n.handleList)
	mux.HandleFunc("GET /v1/conflicts", n.handleConflicts)
	mux.HandleFunc("POST /v1/resolve/{collection}/{id}/{field}", n.handleResolve)
	mux.HandleFunc("GET /v1/history/{collection}/{id}", n.handleHistory)
	mux.HandleFunc("GET /v1/sync", n.handleSyncState)
	mux.Handle("GET /metrics", n.metricsHandler())
	mux.HandleFunc("POST /v1/sync", n.handleSyncNow)
	mux.HandleFunc("GET /v1/diff/{peer}", n.handleDiff)
	mux.HandleFunc("POST /v1/import/{collection}", n.handleImport)
	mux.HandleFunc("POST /v1/check", n.handleCheck)
	n.registerMemberRoutes(mux)
	return mux
}

func (n *Node) setOnlineHandler(w http.ResponseWriter, offline bool) {
	if err := n.SetOffline(offline); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"online": !offline})
}

func (n *Node) handlePut(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	collection, id := r.PathValue("collection"), r.PathValue("id")
	var req PutRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxImportLine))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		writeError(w, badRequest(fmt.Errorf("decode request: %w", err)))
		return
	}
	fields := make(map[string]any, len(req.Fields)+len(req.Text))
	for k, v := range req.Fields {
		fields[k] = v
	}
	if len(req.Text) > 0 {
		c, err := n.store.Collection(ctx, collection)
		if err != nil {
			writeError(w, err)
			return
		}
		for k, text := range req.Text {
			v, err := c.ParseText(k, text)
			if err != nil {
				var fe *schema.FieldError
				if errors.As(err, &fe) {
					fe.ID = id
				}
				writeError(w, err)
				return
			}
			fields[k] = v
		}
	}
	if len(fields) == 0 {
		writeError(w, badRequest(errors.New("no fields to write")))
		return
	}
	res, err := n.store.Put(ctx, collection, id, fields)
	if err != nil {
		writeError(w, err)
		return
	}
	out := PutResponse{Created: res.Created, Fields: res.Fields}
	if out.Fields == nil {
		out.Fields = []string{}
	} else {
		out.Op = res.Op.String()
	}
	writeJSON(w, http.StatusOK, out)
}

// handleList streams the records of a collection as JSON Lines.
// ?where=FIELD=VALUE keeps the records whose field equals VALUE (parsed by
// the field's type). ?format=export writes import-compatible lines instead.
func (n *Node) handleList(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	collection := r.PathValue("collection")
	c, err := n.store.Collection(ctx, collection)
	if err != nil {
		writeError(w, err)
		return
	}
	match := func(*crdt.Record) bool { return true }
	if where := r.URL.Query().Get("where"); where != "" {
		field, text, ok := strings.Cut(where, "=")
		if !ok {
			writeError(w, badRequest(fmt.Errorf("--where %q: want FIELD=VALUE", where)))
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
	nodes := n.names(r)
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	err = n.store.List(ctx, collection, func(rec *crdt.Record) error {
		if !match(rec) {
			return nil
		}
		if export {
			line := rec.Values()
			line[schema.ReservedIDField] = rec.ID
			return enc.Encode(line)
		}
		return enc.Encode(ToJSON(rec, nodes))
	})
	if err != nil {
		// Headers are gone: end the stream with an error line the client
		// recognises.
		_ = enc.Encode(ErrorResponse{Error: err.Error()})
	}
	_ = bw.Flush()
}

// ImportProgress is a line of the import response stream: progress lines
// (Done of Total records written) and one final line with Result or Error.
type ImportProgress struct {
	Done   int                `json:"done"`
	Total  int                `json:"total"`
	Result *crdt.ImportResult `json:"result,omitempty"`
	Error  string             `json:"error,omitempty"`
}

// handleImport reads JSON Lines (one object with an "id" member per line),
// validates every line, then writes them in batched deltas, streaming
// progress as JSON Lines. A validation error is a plain 400: nothing was
// written.
func (n *Node) handleImport(w http.ResponseWriter, r *http.Request) {
	collection := r.PathValue("collection")
	recs, err := ReadJSONLines(r.Body)
	if err != nil {
		writeError(w, badRequest(err))
		return
	}
	started := false
	var enc *json.Encoder
	emit := func(p ImportProgress) {
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
	res, err := n.store.Import(r.Context(), collection, recs, func(done int) {
		emit(ImportProgress{Done: done, Total: len(recs)})
	})
	switch {
	case err != nil && !started:
		writeError(w, err)
	case err != nil:
		emit(ImportProgress{Done: res.Written + res.Unchanged, Total: len(recs), Error: err.Error()})
	default:
		emit(ImportProgress{Done: len(recs), Total: len(recs), Result: &res})
	}
}

// ReadJSONLines parses import input: one JSON object per line with a string
// "id"; blank lines are skipped. Errors name the line.
func ReadJSONLines(r io.Reader) ([]crdt.ImportRecord, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxImportLine)
	var out []crdt.ImportRecord
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			return nil, fmt.Errorf("line %d: not a JSON object: %w", line, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("line %d: more than one JSON value", line)
		}
		id, ok := obj[schema.ReservedIDField].(string)
		if !ok || id == "" {
			return nil, fmt.Errorf("line %d: missing string \"id\"", line)
		}
		delete(obj, schema.ReservedIDField)
		out = append(out, crdt.ImportRecord{Line: line, ID: id, Fields: obj})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return out, nil
}

var (
	errNoNode  = errors.New("no node is running in this data dir: start it with 'ferry node'")
	errOffline = errors.New("the node is offline: 'ferry online' first")
)

type badRequestError struct{ error }

func (e badRequestError) Unwrap() error { return e.error }

func badRequest(err error) error { return badRequestError{err} }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError maps errors to status codes: 404 for a missing record, 400 for
// anything the caller got wrong, 507 for a write refused or failed for want
// of disk space (nothing of it was kept), 500 otherwise.
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var fe *schema.FieldError
	var br badRequestError
	switch {
	case errors.Is(err, crdt.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, crdt.ErrNoConflict), errors.Is(err, crdt.ErrConflictChanged):
		code = http.StatusConflict
	case errors.Is(err, crdt.ErrBadResolution):
		code = http.StatusBadRequest
	case errors.Is(err, crdt.ErrForbidden), errors.Is(err, crdt.ErrNotMember):
		code = http.StatusForbidden
	case errors.Is(err, ErrDiskLow), errors.Is(err, syscall.ENOSPC):
		code = http.StatusInsufficientStorage
	case errors.As(err, &fe), errors.As(err, &br),
		errors.Is(err, schema.ErrUnknownCollection), errors.Is(err, schema.ErrInvalidSchema),
		errors.Is(err, schema.ErrDestructiveChange), errors.Is(err, crdt.ErrTooLarge):
		code = http.StatusBadRequest
	}
	writeJSON(w, code, ErrorResponse{Error: err.Error()})
}

// Serve listens on the data dir's API socket until ctx is done. It refuses
// to start when another node answers on the socket; a stale socket left by a
// crash is replaced.
func (n *Node) Serve(ctx context.Context) error {
	path := filepath.Join(n.cfg.Dir, SocketFile)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("serve API: a node is already running in %s", n.cfg.Dir)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("serve API: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("serve API: %w", err)
	}
	srv := &http.Server{Handler: n.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		_ = os.Remove(path)
		return err
	case err := <-errc:
		_ = os.Remove(path)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve API: %w", err)
	}
}
