package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Op is one write of one field of one record, as replicated. Each op is
// stored under its own key and written once; it stops being visible when a
// later writer that saw it tombstones it (see docs/merge-rules.md).
type Op struct {
	ID    OpID
	Field string
	// Value is the field's new value (string, float64, bool), nil when the
	// write clears the field, true for a record delete.
	Value any
	// Supersedes lists the ops ("field/opid") this write tombstoned: what its
	// writer saw and replaced.
	Supersedes []string
	// Seen lists, for a record delete, the field ops ("field/opid") that were
	// visible to the deleter. Edits not in this list were concurrent.
	Seen []string
}

// envelope is the stored form of an op: never empty, self-describing, and
// cross-checked against its key on decode.
type envelope struct {
	Value      any      `json:"v"`
	Time       string   `json:"t"`
	Writer     string   `json:"w"`
	Supersedes []string `json:"s,omitempty"`
	Seen       []string `json:"r,omitempty"`
	// Sig is the writer's signature of its write: every op of it, keys and
	// envelopes without the signature (see writeMessage); absent in an
	// open network.
	Sig []byte `json:"g,omitempty"`
}

// maxEnvelopeSize bounds what a peer can make us decode.
const maxEnvelopeSize = 1 << 20

func marshalEnvelope(env envelope) ([]byte, error) { return json.Marshal(env) }

func envelopeOf(op Op) envelope {
	return envelope{
		Value:      op.Value,
		Time:       op.ID.Time.String(),
		Writer:     op.ID.Writer,
		Supersedes: op.Supersedes,
		Seen:       op.Seen,
	}
}

// encodeOp encodes an op without a signature.
func encodeOp(op Op) ([]byte, error) {
	b, err := marshalEnvelope(envelopeOf(op))
	if err != nil {
		return nil, fmt.Errorf("encode op %s: %w", op.ID, err)
	}
	return b, nil
}

// decodeOp decodes the value stored under an op key. Anything that does not
// decode, or whose time and writer disagree with the key, is refused: it did
// not come from a Ferry node.
func decodeOp(k keyParts, data []byte) (Op, error) {
	env, err := decodeEnvelope(k, data)
	if err != nil {
		return Op{}, err
	}
	return Op{ID: k.Op, Field: k.Field, Value: env.Value, Supersedes: env.Supersedes, Seen: env.Seen}, nil
}

// decodeEnvelope decodes and checks the stored form of an op.
func decodeEnvelope(k keyParts, data []byte) (envelope, error) {
	if len(data) == 0 || len(data) > maxEnvelopeSize {
		return envelope{}, fmt.Errorf("decode op %s: bad size %d", k.Op, len(data))
	}
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&env); err != nil {
		return envelope{}, fmt.Errorf("decode op %s: %w", k.Op, err)
	}
	if env.Time != k.Op.Time.String() || env.Writer != k.Op.Writer {
		return envelope{}, fmt.Errorf("decode op %s: envelope says %s-%s", k.Op, env.Time, env.Writer)
	}
	switch v := env.Value.(type) {
	case nil, string, float64, bool:
	default:
		return envelope{}, fmt.Errorf("decode op %s: value of type %T", k.Op, v)
	}
	if k.Field == DeleteField && env.Value != true {
		return envelope{}, errors.New("decode op: delete op without true value")
	}
	return env, nil
}
