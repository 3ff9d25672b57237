package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/schema"
)

// ConflictJSON is one conflict as `ferry conflicts --json` prints it.
type ConflictJSON struct {
	Collection string          `json:"collection"`
	ID         string          `json:"id"`
	Field      string          `json:"field"`
	Policy     string          `json:"policy"`
	Open       bool            `json:"open"`
	Candidates []CandidateJSON `json:"candidates"`
}

// CandidateJSON is one of several concurrent operations of a conflict; the
// first one of a list is the one shown.
type CandidateJSON struct {
	N          int       `json:"n"`
	Value      any       `json:"value"`
	Field      string    `json:"field,omitempty"`   // record conflicts: the edited field
	Deleted    bool      `json:"deleted,omitempty"` // record conflicts: a delete
	Writer     string    `json:"writer"`
	WriterName string    `json:"writer_name,omitempty"`
	At         time.Time `json:"at"`
	Op         string    `json:"op"`
}

// ResolveRequest is the body of POST /v1/resolve/{collection}/{id}/{field}:
// Pick (1-based, as listed) or Value (typed JSON) or Text (parsed by the
// field's type). Expect, optional, lists the candidates' op ids as the
// caller saw them.
type ResolveRequest struct {
	Pick   int      `json:"pick,omitempty"`
	Value  any      `json:"value,omitempty"`
	Text   *string  `json:"text,omitempty"`
	Expect []string `json:"expect,omitempty"`
}

// HistoryJSON is one operation of `ferry history --json`.
type HistoryJSON struct {
	Field      string    `json:"field"`
	Op         string    `json:"op"`
	Value      any       `json:"value"`
	Deleted    bool      `json:"deleted,omitempty"`
	Writer     string    `json:"writer"`
	WriterName string    `json:"writer_name,omitempty"`
	At         time.Time `json:"at"`
	Supersedes []string  `json:"supersedes,omitempty"`
	Seen       []string  `json:"seen,omitempty"`
	Visible    bool      `json:"visible"`
	Origin     string    `json:"origin"` // "here" or "peer"
	Block      string    `json:"block,omitempty"`
}

// names maps writer ids to node names, for output.
func (n *Node) names(r *http.Request) map[string]crdt.NodeInfo {
	nodes, err := n.store.Nodes(r.Context())
	if err != nil {
		n.log.Warn("list node names", "err", err)
	}
	return nodes
}

// ConflictToJSON converts a conflict for output.
func ConflictToJSON(c crdt.Conflict, nodes map[string]crdt.NodeInfo) ConflictJSON {
	out := ConflictJSON{Collection: c.Collection, ID: c.ID, Field: c.Field, Policy: c.Policy, Open: c.Open}
	for i, cand := range c.Candidates {
		cj := CandidateJSON{N: i + 1, Value: cand.Value, Deleted: cand.Deleted, Writer: cand.Op.Writer,
			WriterName: nodes[cand.Op.Writer].Name, At: cand.Op.Time.Wall(), Op: cand.Op.String()}
		if c.Field == crdt.RecordField && !cand.Deleted {
			cj.Field = cand.Field
		}
		out.Candidates = append(out.Candidates, cj)
	}
	return out
}

func (n *Node) handleConflicts(w http.ResponseWriter, r *http.Request) {
	var colls []string
	if c := r.URL.Query().Get("collection"); c != "" {
		colls = []string{c}
	}
	onlyOpen := r.URL.Query().Get("open") == "true"
	nodes := n.names(r)
	out := []ConflictJSON{}
	err := n.store.Conflicts(r.Context(), colls, func(c crdt.Conflict) error {
		if !onlyOpen || c.Open {
			out = append(out, ConflictToJSON(c, nodes))
		}
		return nil
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) handleResolve(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	collection, id, field := r.PathValue("collection"), r.PathValue("id"), r.PathValue("field")
	var req ResolveRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxImportLine))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		writeError(w, badRequest(fmt.Errorf("decode request: %w", err)))
		return
	}
	res := crdt.Resolution{Pick: req.Pick, Value: req.Value}
	if (req.Pick != 0) == (req.Value != nil || req.Text != nil) {
		writeError(w, badRequest(errors.New("resolve: give either a pick or a value")))
		return
	}
	if field == crdt.RecordField && req.Pick == 0 {
		writeError(w, badRequest(fmt.Errorf("resolve %s/%s: a record conflict (%s) is resolved with --pick", collection, id, field)))
		return
	}
	if req.Text != nil {
		c, err := n.store.Collection(ctx, collection)
		if err != nil {
			writeError(w, err)
			return
		}
		if res.Value, err = c.ParseText(field, *req.Text); err != nil {
			var fe *schema.FieldError
			if errors.As(err, &fe) {
				fe.ID = id
			}
			writeError(w, err)
			return
		}
	}
	for _, s := range req.Expect {
		op, err := crdt.ParseOpID(s)
		if err != nil {
			writeError(w, badRequest(err))
			return
		}
		res.Expect = append(res.Expect, op)
	}
	op, err := n.store.Resolve(ctx, collection, id, field, res)
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

func (n *Node) handleHistory(w http.ResponseWriter, r *http.Request) {
	collection, id := r.PathValue("collection"), r.PathValue("id")
	c, err := n.store.Collection(r.Context(), collection)
	if err != nil {
		writeError(w, err)
		return
	}
	field := r.URL.Query().Get("field")
	switch {
	case field == crdt.RecordField:
		field = crdt.DeleteField // record deletes are stored under _del
	case field != "" && c.Fields[field] == nil:
		writeError(w, badRequest(fmt.Errorf("%s: unknown field %q", collection, field)))
		return
	}
	h, err := n.store.History(r.Context(), collection, id, field)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(h) == 0 {
		writeError(w, fmt.Errorf("%s/%s: %w", collection, id, crdt.ErrNotFound))
		return
	}
	nodes := n.names(r)
	out := make([]HistoryJSON, 0, len(h))
	for _, e := range h {
		hj := HistoryJSON{Field: e.Field, Op: e.Op.String(), Value: e.Value, Writer: e.Op.Writer, WriterName: nodes[e.Op.Writer].Name,
			At: e.Op.Time.Wall(), Supersedes: e.Supersedes, Seen: e.Seen, Visible: e.Visible, Origin: "peer"}
		if e.Field == crdt.DeleteField {
			hj.Field, hj.Value, hj.Deleted = crdt.RecordField, nil, true
		}
		for i, ref := range hj.Supersedes {
			if rest, ok := strings.CutPrefix(ref, crdt.DeleteField+"/"); ok {
				hj.Supersedes[i] = crdt.RecordField + "/" + rest
			}
		}
		if e.Local {
			hj.Origin = "here"
		}
		if e.Block.Defined() {
			hj.Block = e.Block.String()
		}
		out = append(out, hj)
	}
	writeJSON(w, http.StatusOK, out)
}
