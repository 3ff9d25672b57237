package crdt

import (
	"context"
	"fmt"
	"sort"
	"strings"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pb "github.com/ipfs/go-ds-crdt/pb"
	"google.golang.org/protobuf/proto"
)

// History is built from what the store already keeps. go-ds-crdt v0.6.8
// records every element it ever merged under <ns>/s/s/<key>/<block> (the key
// with the id of the DAG block that carried it) and every tombstone under
// <ns>/s/t/<key>/<block>; the value itself lives only in the block. So the
// history of a record is: list its element keys (every operation ever
// written, superseded or not), read each op's value from its block, and
// check for a tombstone. This reads go-ds-crdt's storage layout (see
// ../shared/notes/go-ds-crdt.md); TestHistory fails if it changes.
const (
	engineElemsNs = "s/s"
	engineTombsNs = "s/t"
)

// HistoryEntry is one operation ever written to a record.
type HistoryEntry struct {
	Field string // a field, or DeleteField for a record delete
	Op    OpID
	Value any
	// Supersedes: the operations ("field/opid") this one replaced.
	Supersedes []string
	// Seen: for a delete, the field operations visible to the deleter.
	Seen []string
	// Visible is false once a later operation superseded this one.
	Visible bool
	// Local is true when this node wrote the operation; false when it
	// arrived from a peer.
	Local bool
	// Block is the DAG block that carried it.
	Block cid.Cid
}

// History returns every operation of a record (of one field when field is
// not empty), oldest first. Operations whose block is not (yet) on this node
// are returned without a value and with Block undefined.
func (s *Store) History(ctx context.Context, collection, id, field string) ([]HistoryEntry, error) {
	eid, err := EscapeID(id)
	if err != nil {
		return nil, err
	}
	prefix := s.opts.Namespace.Child(ds.NewKey(engineElemsNs)).String() + recordPrefix(collection, eid).String()
	if field != "" {
		prefix += "/" + field
	}
	res, err := s.base.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return nil, fmt.Errorf("history of %s/%s: %w", collection, id, err)
	}
	defer res.Close()
	elemsRoot := s.opts.Namespace.Child(ds.NewKey(engineElemsNs)).String()
	tombsRoot := s.opts.Namespace.Child(ds.NewKey(engineTombsNs)).String()
	deltas := map[string]*pb.Delta{}
	var out []HistoryEntry
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("history of %s/%s: %w", collection, id, r.Error)
		}
		// <elemsRoot>/<collection>/<eid>/<field>/<opid>/<block key>
		rest := strings.TrimPrefix(r.Key, elemsRoot)
		i := strings.LastIndex(rest, "/")
		if i <= 0 {
			continue
		}
		opKeyStr, blockKey := rest[:i], rest[i+1:]
		kp, err := parseOpKey(opKeyStr)
		if err != nil {
			continue
		}
		e := HistoryEntry{Field: kp.Field, Op: kp.Op, Local: kp.Op.Writer == s.opts.Writer}
		tomb, err := s.base.Has(ctx, ds.NewKey(tombsRoot+rest))
		if err != nil {
			return nil, fmt.Errorf("history of %s/%s: %w", collection, id, err)
		}
		e.Visible = !tomb
		if delta, c, err := s.blockDelta(ctx, blockKey, deltas); err == nil {
			e.Block = c
			for _, el := range delta.GetElements() {
				if el.GetKey() != opKeyStr {
					continue
				}
				if op, err := decodeOp(kp, el.GetValue()); err == nil {
					e.Value, e.Supersedes, e.Seen = op.Value, op.Supersedes, op.Seen
				}
				break
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[j].Op.Newer(out[i].Op) })
	return out, nil
}

// blockDelta reads the delta of the block whose go-ds-crdt id is blockKey
// (a multihash in datastore-key form), caching deltas by id.
func (s *Store) blockDelta(ctx context.Context, blockKey string, cache map[string]*pb.Delta) (*pb.Delta, cid.Cid, error) {
	mh, err := dshelp.DsKeyToMultihash(ds.NewKey(blockKey))
	if err != nil {
		return nil, cid.Undef, err
	}
	c := cid.NewCidV1(cid.DagProtobuf, mh)
	if d, ok := cache[blockKey]; ok {
		return d, c, nil
	}
	nd, err := s.dag.Get(ctx, c)
	if err != nil {
		return nil, cid.Undef, err
	}
	pn, ok := nd.(*merkledag.ProtoNode)
	if !ok {
		return nil, cid.Undef, fmt.Errorf("block %s is not dag-pb", c)
	}
	var d pb.Delta
	if err := proto.Unmarshal(pn.Data(), &d); err != nil {
		return nil, cid.Undef, err
	}
	cache[blockKey] = &d
	return &d, c, nil
}
