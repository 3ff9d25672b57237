package crdt

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Store format 1, the format of the release before this one, stored one
// element per field: key /<collection>/<escaped id>/<field>/<op id>, value a
// JSON envelope, and one signature per write over all its per-field ops.
// Migrate turns such a store into format 2; a migrated write keeps that
// signature, and legacyMessage rebuilds what it covered.

// legacyEnvelope is the format-1 stored form of one op (field order and
// names as format 1 encoded them).
type legacyEnvelope struct {
	Value      any      `json:"v"`
	Time       string   `json:"t"`
	Writer     string   `json:"w"`
	Supersedes []string `json:"s,omitempty"`
	Seen       []string `json:"r,omitempty"`
	Sig        []byte   `json:"g,omitempty"`
}

// legacyKey is the format-1 key of one op.
func legacyKey(collection, escapedID, field string, id OpID) string {
	return "/" + collection + "/" + escapedID + "/" + field + "/" + id.String()
}

// legacyMessage is what the format-1 signature of a migrated write covered:
// a domain tag, then each op's key and envelope without the signature, in
// key order, one per line.
func legacyMessage(kp keyParts, w *write) ([]byte, error) {
	type line struct{ key, env string }
	lines := make([]line, 0, len(w.Ops))
	for _, op := range w.Ops {
		env, err := json.Marshal(legacyEnvelope{Value: op.Value, Time: op.ID.Time.String(), Writer: op.ID.Writer, Supersedes: op.Supersedes, Seen: op.Seen})
		if err != nil {
			return nil, fmt.Errorf("legacy message of %s: %w", kp.Op, err)
		}
		lines = append(lines, line{legacyKey(kp.Collection, kp.EscapedID, op.Field, op.ID), string(env)})
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].key < lines[j].key })
	msg := []byte("ferry-write/1\n")
	for _, l := range lines {
		msg = append(msg, l.key...)
		msg = append(msg, '\n')
		msg = append(msg, l.env...)
		msg = append(msg, '\n')
	}
	return msg, nil
}
