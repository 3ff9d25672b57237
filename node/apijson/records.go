package apijson

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/schema"
)

// MaxLine bounds one JSON Lines record of an import, and a request body.
const MaxLine = 1 << 20

// MaxImportBody bounds the body of an import request (the node spools it
// to a file before reading it): 1 GiB, millions of typical contacts.
const MaxImportBody = 1 << 30

// Record is a record as the API and the CLI print it.
type Record struct {
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
	Policy     string      `json:"policy"`
	Open       bool        `json:"open"`
	Candidates []Candidate `json:"candidates"`
}

// FromRecord converts a record to its JSON form; nodes (may be nil) names the
// writers.
func FromRecord(r *crdt.Record, nodes map[string]crdt.NodeInfo) Record {
	out := Record{Collection: r.Collection, ID: r.ID, Fields: r.Values(), UpdatedAt: r.UpdatedAt(),
		UpdatedBy: r.Updated.Writer, UpdatedByName: nodes[r.Updated.Writer].Name}
	for _, c := range crdt.ConflictsOf(r) {
		if out.Conflicts == nil {
			out.Conflicts = map[string]FieldConflict{}
		}
		cj := FromConflict(c, nodes)
		out.Conflicts[c.Field] = FieldConflict{Policy: cj.Policy, Open: cj.Open, Candidates: cj.Candidates}
	}
	return out
}

// Conflict is one conflict as `ferry conflicts --json` prints it.
type Conflict struct {
	Collection string      `json:"collection"`
	ID         string      `json:"id"`
	Field      string      `json:"field"`
	Policy     string      `json:"policy"`
	Open       bool        `json:"open"`
	Candidates []Candidate `json:"candidates"`
}

// Candidate is one of several concurrent operations of a conflict; the
// first one of a list is the one shown.
type Candidate struct {
	N          int       `json:"n"`
	Value      any       `json:"value"`
	Field      string    `json:"field,omitempty"`   // record conflicts: the edited field
	Deleted    bool      `json:"deleted,omitempty"` // record conflicts: a delete
	Writer     string    `json:"writer"`
	WriterName string    `json:"writer_name,omitempty"`
	At         time.Time `json:"at"`
	Op         string    `json:"op"`
}

// FromConflict converts a conflict for output.
func FromConflict(c crdt.Conflict, nodes map[string]crdt.NodeInfo) Conflict {
	out := Conflict{Collection: c.Collection, ID: c.ID, Field: c.Field, Policy: c.Policy, Open: c.Open}
	for i, cand := range c.Candidates {
		cj := Candidate{N: i + 1, Value: cand.Value, Deleted: cand.Deleted, Writer: cand.Op.Writer,
			WriterName: nodes[cand.Op.Writer].Name, At: cand.Op.Time.Wall(), Op: cand.Op.String()}
		if c.Field == crdt.RecordField && !cand.Deleted {
			cj.Field = cand.Field
		}
		out.Candidates = append(out.Candidates, cj)
	}
	return out
}

// History is one operation of `ferry history --json`.
type History struct {
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
	// Compacted: from before a compaction, kept in the node's history
	// archive (value, writer and time only; see history_keep).
	Compacted bool `json:"compacted,omitempty"`
}

// PutRequest is the body of PUT /v1/records/{collection}/{id}. Values in
// Fields are typed JSON values (null clears a field); values in Text are
// command-line strings, parsed by the field's type.
type PutRequest struct {
	Fields map[string]any    `json:"fields,omitempty"`
	Text   map[string]string `json:"text,omitempty"`
	// AllowDuplicate writes a likely duplicate (docs/duplicates.md) that
	// the node would otherwise refuse (409).
	AllowDuplicate bool `json:"allow_duplicate,omitempty"`
}

// PutResponse answers a put.
type PutResponse struct {
	Op      string   `json:"op,omitempty"`
	Created bool     `json:"created"`
	Fields  []string `json:"fields"`
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

// ImportProgress is a line of the import response stream: progress lines
// (Done of Total records written) and one final line with Result or Error.
type ImportProgress struct {
	Done   int                `json:"done"`
	Total  int                `json:"total"`
	Result *crdt.ImportResult `json:"result,omitempty"`
	Error  string             `json:"error,omitempty"`
}

// ReadLines parses import input: one JSON object per line with a string
// "id"; blank lines are skipped. Errors name the line.
func ReadLines(r io.Reader) ([]crdt.ImportRecord, error) {
	var out []crdt.ImportRecord
	err := EachLine(r, func(rec crdt.ImportRecord) error {
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// EachLine is ReadLines one record at a time: it calls fn with each record
// as it is read, holding none, and stops at the first malformed line (an
// error naming it) or at fn's error, which it returns as it is.
func EachLine(r io.Reader, fn func(crdt.ImportRecord) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			return fmt.Errorf("line %d: not a JSON object: %w", line, err)
		}
		if dec.More() {
			return fmt.Errorf("line %d: more than one JSON value", line)
		}
		id, ok := obj[schema.ReservedIDField].(string)
		if !ok || id == "" {
			return fmt.Errorf("line %d: missing string \"id\"", line)
		}
		delete(obj, schema.ReservedIDField)
		if err := fn(crdt.ImportRecord{Line: line, ID: id, Fields: obj}); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("line %d: %w", line+1, err)
	}
	return nil
}

// FromHistory converts a record's history for output: record deletes,
// stored under crdt.DeleteField, are shown under crdt.RecordField.
func FromHistory(h []crdt.HistoryEntry, nodes map[string]crdt.NodeInfo) []History {
	out := make([]History, 0, len(h))
	for _, e := range h {
		hj := History{Field: e.Field, Op: e.Op.String(), Value: e.Value, Writer: e.Op.Writer, WriterName: nodes[e.Op.Writer].Name,
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
		hj.Compacted = e.Compacted
		out = append(out, hj)
	}
	return out
}
