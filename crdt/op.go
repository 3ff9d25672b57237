package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// Op is one field of one write, as the merge rules see it: a write (a put of
// several fields of a record, a delete, a resolution) is stored as one
// element under one key, and decodes into one Op per field it wrote, all
// sharing its id. A field's op stops counting when a later write that saw
// it lists it in its Supersedes (see docs/merge-rules.md).
type Op struct {
	ID    OpID
	Field string
	// Value is the field's new value (string, float64, bool), nil when the
	// write clears the field, true for a record delete.
	Value any
	// Supersedes lists the ops ("field/opid") this write replaced: what its
	// writer saw.
	Supersedes []string
	// Seen lists, for a record delete, the field ops ("field/opid") that were
	// visible to the deleter. Edits not in this list were concurrent.
	Seen []string
}

// Ref is how other ops name this one: "field/opid".
func (o Op) Ref() string { return o.Field + "/" + o.ID.String() }

// write is one stored element: every field one write changed.
type write struct {
	ID  OpID
	Ops []Op // one per field, sorted by field, each with ID
	// Legacy: the write was migrated from store format 1, and Sig is the
	// format-1 signature over its per-field ops (see legacyMessage).
	Legacy bool
	// Batch: Sig is the signature of the whole import batch the write was
	// part of (see batchMessage).
	Batch bool
	// Voucher: the write was signed by its writer as part of an import
	// batch, and a compaction seeded it apart from its batch: Sig is then
	// the signature of Voucher, the office that compacted (it verified the
	// batch), over the write as for a lone write (see vouch).
	Voucher string
	// Copied: a move copied the write into this channel in an open
	// network (flagCopied).
	Copied bool
	Sig    []byte
	// signed is the part of the stored value the signature covers (set by
	// decodeWrite).
	signed []byte
}

// Store format. Format 1 (before this release) stored one element per
// field with a JSON envelope; format 2 stores one element per write:
//
//	byte 0      Format (2)
//	byte 1      flags: bit 0 set = migrated from format 1 (legacy signature),
//	            bit 1 set = signed as part of an import batch (batchMessage),
//	            bit 2 set = vouched for by an office (signature, then the
//	            voucher's id), bit 3 set = copied by a move in an open
//	            network (no signature); at most one is set
//	uvarint     length of the body
//	body        CBOR, see wireBody
//	rest        the writer's signature (absent in an open network)
//
// The signature covers "ferry-write/2\n" + key + "\n" + everything before
// it. docs/storage.md describes it for people.
const (
	// Format is the store format this release reads and writes.
	Format = 2
	// LegacyFormat is the format of the release before, migrated on start.
	LegacyFormat = 1

	flagLegacy  = 1
	flagBatch   = 2
	flagVouched = 4
	// flagCopied: a copy of another node's write that a move brought into
	// this channel in an open network (nobody signs there). Like a vouched
	// copy, it came out of its writer's order: a cut does not count it.
	flagCopied = 8
)

// wireBody is the CBOR body of a write. Nothing the key holds (collection,
// record, time, writer) is repeated; refs to other ops name their writer
// by index: 0 is this write's writer, i > 0 is Writers[i-1].
type wireBody struct {
	_       struct{} `cbor:",toarray"`
	Fields  []wireField
	Seen    []wireRef
	Writers []string
}

type wireField struct {
	_     struct{} `cbor:",toarray"`
	Name  string
	Value any
	Sup   []wireRef
}

type wireRef struct {
	_      struct{} `cbor:",toarray"`
	Field  string
	Time   uint64
	Writer uint64
}

// maxWriteSize bounds what a peer can make us decode.
const maxWriteSize = 1 << 20

var (
	cborEnc cbor.EncMode
	cborDec cbor.DecMode
)

func init() {
	var err error
	eo := cbor.CoreDetEncOptions() // shortest floats, definite lengths
	if cborEnc, err = eo.EncMode(); err != nil {
		panic(err)
	}
	dopt := cbor.DecOptions{
		MaxNestedLevels:   8,
		MaxArrayElements:  1 << 16,
		MaxMapPairs:       16,
		IndefLength:       cbor.IndefLengthForbidden,
		DefaultMapType:    nil,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}
	if cborDec, err = dopt.DecMode(); err != nil {
		panic(err)
	}
}

// writerTable assigns writer indexes for a write's refs.
type writerTable struct {
	self  string
	names []string
}

func (t *writerTable) index(w string) uint64 {
	if w == t.self {
		return 0
	}
	if i := slices.Index(t.names, w); i >= 0 {
		return uint64(i + 1)
	}
	t.names = append(t.names, w)
	return uint64(len(t.names))
}

func (t *writerTable) refs(refs []string) ([]wireRef, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	out := make([]wireRef, len(refs))
	for i, r := range refs {
		field, id, err := splitRef(r)
		if err != nil {
			return nil, err
		}
		out[i] = wireRef{Field: field, Time: uint64(id.Time), Writer: t.index(id.Writer)}
	}
	return out, nil
}

// splitRef parses "field/opid".
func splitRef(r string) (string, OpID, error) {
	i := strings.IndexByte(r, '/')
	if i <= 0 {
		return "", OpID{}, fmt.Errorf("bad op reference %q", r)
	}
	id, err := ParseOpID(r[i+1:])
	if err != nil {
		return "", OpID{}, fmt.Errorf("bad op reference %q: %w", r, err)
	}
	return r[:i], id, nil
}

// encodeWrite encodes a write without its signature: the signed part of
// the stored value (append the signature to get the stored value).
func encodeWrite(w *write) ([]byte, error) {
	t := writerTable{self: w.ID.Writer}
	body := wireBody{Fields: make([]wireField, len(w.Ops))}
	for i, op := range w.Ops {
		if op.ID != w.ID {
			return nil, fmt.Errorf("encode write %s: op of another write %s", w.ID, op.ID)
		}
		if i > 0 && op.Field <= w.Ops[i-1].Field {
			return nil, fmt.Errorf("encode write %s: fields not sorted", w.ID)
		}
		sup, err := t.refs(op.Supersedes)
		if err != nil {
			return nil, fmt.Errorf("encode write %s: %w", w.ID, err)
		}
		body.Fields[i] = wireField{Name: op.Field, Value: op.Value, Sup: sup}
		if len(op.Seen) > 0 {
			if body.Seen, err = t.refs(op.Seen); err != nil {
				return nil, fmt.Errorf("encode write %s: %w", w.ID, err)
			}
		}
	}
	body.Writers = t.names
	b, err := cborEnc.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode write %s: %w", w.ID, err)
	}
	out := make([]byte, 0, 2+binary.MaxVarintLen32+len(b)+64)
	var flags byte
	if w.Legacy {
		flags |= flagLegacy
	}
	if w.Batch {
		flags |= flagBatch
	}
	out = append(out, Format, flags)
	out = binary.AppendUvarint(out, uint64(len(b)))
	return append(out, b...), nil
}

// decodeWrite decodes the value stored under a write key. Anything that
// does not decode, or breaks a rule of the format, is refused: it did not
// come from a Ferry node of this format.
func decodeWrite(k keyParts, data []byte) (*write, error) {
	if len(data) < 3 || len(data) > maxWriteSize {
		return nil, fmt.Errorf("decode write %s: bad size %d", k.Op, len(data))
	}
	if data[0] != Format {
		if data[0] == '{' {
			return nil, fmt.Errorf("decode write %s: store format %d (JSON, a release before this one), want format %d", k.Op, LegacyFormat, Format)
		}
		return nil, fmt.Errorf("decode write %s: store format %d, want %d", k.Op, data[0], Format)
	}
	flags := data[1]
	if flags&^(flagLegacy|flagBatch|flagVouched|flagCopied) != 0 || bits.OnesCount8(flags) > 1 {
		return nil, fmt.Errorf("decode write %s: unknown flags %#x", k.Op, flags)
	}
	n, m := binary.Uvarint(data[2:])
	if m <= 0 || n > uint64(len(data)-2-m) {
		return nil, fmt.Errorf("decode write %s: bad body length", k.Op)
	}
	end := 2 + m + int(n)
	var body wireBody
	if err := cborDec.Unmarshal(data[2+m:end], &body); err != nil {
		return nil, fmt.Errorf("decode write %s: %w", k.Op, err)
	}
	w := &write{ID: k.Op, Legacy: flags&flagLegacy != 0, Batch: flags&flagBatch != 0, Copied: flags&flagCopied != 0, signed: data[:end]}
	if end < len(data) {
		w.Sig = data[end:]
	}
	if w.Copied && len(w.Sig) > 0 {
		return nil, fmt.Errorf("decode write %s: copied in an open network, yet signed", k.Op)
	}
	if flags&flagVouched != 0 {
		// The signature, then the voucher's id.
		if len(w.Sig) <= sigOverhead {
			return nil, fmt.Errorf("decode write %s: vouched without a voucher", k.Op)
		}
		w.Voucher, w.Sig = string(w.Sig[sigOverhead:]), w.Sig[:sigOverhead]
		if strings.ContainsAny(w.Voucher, "/\n") || len(w.Voucher) > 128 {
			return nil, fmt.Errorf("decode write %s: bad voucher", k.Op)
		}
	}
	writer := func(i uint64) (string, error) {
		if i == 0 {
			return k.Op.Writer, nil
		}
		if i > uint64(len(body.Writers)) || body.Writers[i-1] == "" || strings.Contains(body.Writers[i-1], "/") {
			return "", fmt.Errorf("decode write %s: bad writer reference %d", k.Op, i)
		}
		return body.Writers[i-1], nil
	}
	refs := func(rs []wireRef) ([]string, error) {
		if len(rs) == 0 {
			return nil, nil
		}
		out := make([]string, len(rs))
		for i, r := range rs {
			wr, err := writer(r.Writer)
			if err != nil {
				return nil, err
			}
			if !validName(r.Field) {
				return nil, fmt.Errorf("decode write %s: bad field name in reference", k.Op)
			}
			out[i] = r.Field + "/" + OpID{Time: Timestamp(r.Time), Writer: wr}.String()
		}
		return out, nil
	}
	if len(body.Fields) == 0 {
		return nil, fmt.Errorf("decode write %s: no field", k.Op)
	}
	seen, err := refs(body.Seen)
	if err != nil {
		return nil, err
	}
	w.Ops = make([]Op, len(body.Fields))
	for i, f := range body.Fields {
		if !validName(f.Name) || i > 0 && f.Name <= body.Fields[i-1].Name {
			return nil, fmt.Errorf("decode write %s: bad or unsorted field name %q", k.Op, f.Name)
		}
		switch v := f.Value.(type) {
		case nil, string, float64, bool:
		default:
			return nil, fmt.Errorf("decode write %s: field %s: value of type %T", k.Op, f.Name, v)
		}
		sup, err := refs(f.Sup)
		if err != nil {
			return nil, err
		}
		op := Op{ID: k.Op, Field: f.Name, Value: f.Value, Supersedes: sup}
		switch f.Name {
		case DeleteField:
			if f.Value != true || len(body.Fields) != 1 {
				return nil, fmt.Errorf("decode write %s: a delete must be a lone true value", k.Op)
			}
			op.Seen = seen
		case MovedField:
			if _, ok := f.Value.(string); !ok || len(body.Fields) != 1 {
				return nil, fmt.Errorf("decode write %s: a move must be a lone string value", k.Op)
			}
			op.Seen = seen
		}
		w.Ops[i] = op
	}
	if len(seen) > 0 && w.Ops[0].Field != DeleteField && w.Ops[0].Field != MovedField {
		return nil, fmt.Errorf("decode write %s: seen ops on a write that is neither a delete nor a move", k.Op)
	}
	return w, nil
}

// validName: a field name as a key segment may hold it.
func validName(s string) bool {
	return s != "" && len(s) <= 256 && !strings.ContainsAny(s, "/\n")
}

// EncodeOps encodes the ops of one write (one op id, fields in order) in
// store format 2, without a signature: the stored value is the result
// followed by the writer's signature of SigningMessage. For tools and tests
// that write straight into go-ds-crdt (a modified client, a forged write).
func EncodeOps(ops []Op) ([]byte, error) {
	if len(ops) == 0 {
		return nil, errors.New("encode ops: no op")
	}
	return encodeWrite(&write{ID: ops[0].ID, Ops: ops})
}

// WriteKey is the key under which go-ds-crdt holds one write of a record.
func WriteKey(collection, escapedID string, id OpID) string {
	return writeKey(collection, escapedID, id).String()
}

// SigningMessage is what the writer of a write signs: see Format.
func SigningMessage(key string, encoded []byte) []byte { return writeMessage(key, encoded) }
