package crdt

import (
	"errors"
	"fmt"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/ipld/merkledag"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	pb "github.com/ipfs/go-ds-crdt/pb"
	ipld "github.com/ipfs/go-ipld-format"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// This file is the one place that knows go-ds-crdt v0.6.8's storage layout
// and block format (see ../shared/notes/go-ds-crdt.md); everything else in
// the package goes through it. Under the namespace given to go-ds-crdt:
//
//	h/<block>              a head, its height (uvarint)
//	b/<block>              the block was processed (merged)
//	d                      the dirty bit
//	s/s/<op key>/<block>   an element: the op, merged from that block
//	s/t/<op key>/<block>   a tombstone of that element
//	s/k/<op key>/v, /p     the visible op's value and priority
//	x/badsig/<op key>      Ferry's own: ops whose signature failed (inside
//	                       the namespace so that a snapshot carries them)
//
// <block> is the block's multihash in datastore-key form (dshelp). A block
// is a dag-pb node whose data is a pb.Delta and whose links are the heads
// its writer had.
type layout struct{ ns ds.Key }

func (l layout) heads() ds.Key     { return l.ns.ChildString("h") }
func (l layout) processed() ds.Key { return l.ns.ChildString("b") }
func (l layout) dirty() ds.Key     { return l.ns.ChildString("d") }
func (l layout) elems() ds.Key     { return l.ns.ChildString("s").ChildString("s") }
func (l layout) tombs() ds.Key     { return l.ns.ChildString("s").ChildString("t") }
func (l layout) values() ds.Key    { return l.ns.ChildString("s").ChildString("k") }
func (l layout) badSigs() ds.Key   { return l.ns.ChildString("x").ChildString("badsig") }

// prefix is k as a key prefix ("/a/b/").
func prefix(k ds.Key) string { return k.String() + "/" }

// layout returns the store's go-ds-crdt layout.
func (s *Store) layout() layout { return layout{ns: s.namespace()} }

// blockKey is a block's id in go-ds-crdt's keys.
func blockKey(c cid.Cid) string { return dshelp.MultihashToDsKey(c.Hash()).String()[1:] }

// blockCid turns a block id of go-ds-crdt's keys back into its CID.
func blockCid(key string) (cid.Cid, error) {
	mh, err := dshelp.DsKeyToMultihash(ds.NewKey(key))
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.DagProtobuf, mh), nil
}

// decodeDelta reads the delta a block carries.
func decodeDelta(nd ipld.Node) (*pb.Delta, error) {
	pn, ok := nd.(*merkledag.ProtoNode)
	if !ok {
		return nil, fmt.Errorf("block %s is not dag-pb", nd.Cid())
	}
	var d pb.Delta
	if err := proto.Unmarshal(pn.Data(), &d); err != nil {
		return nil, fmt.Errorf("block %s: decode delta: %w", nd.Cid(), err)
	}
	return &d, nil
}

// deltaPriority reads only the priority (the DAG height) of the delta a
// block carries, without decoding its elements: walks of the whole DAG
// (check, recovery) read every block. pb.Delta: fields 1 and 2 repeated
// elements and tombstones, 3 the priority.
func deltaPriority(nd ipld.Node) (uint64, error) {
	pn, ok := nd.(*merkledag.ProtoNode)
	if !ok {
		return 0, fmt.Errorf("block %s is not dag-pb", nd.Cid())
	}
	data := pn.Data()
	var prio uint64
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0, fmt.Errorf("block %s: bad delta", nd.Cid())
		}
		data = data[n:]
		if num == 3 && typ == protowire.VarintType {
			prio, n = protowire.ConsumeVarint(data)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, data)
		}
		if n < 0 {
			return 0, fmt.Errorf("block %s: bad delta", nd.Cid())
		}
		data = data[n:]
	}
	return prio, nil
}

// Block is what the node's protocols need of a DAG block without decoding
// its operations: the blocks it links to (the heads its writer had) and its
// priority (its height in the DAG).
type Block struct {
	Links    []cid.Cid
	Priority uint64 // 0 when the block carries no go-ds-crdt delta
}

// ReadBlock reads the links and priority of a block's raw bytes. It never
// fails: a block that is not dag-pb, or does not decode, has no links; one
// whose data is not a delta has priority 0.
func ReadBlock(c cid.Cid, raw []byte) Block {
	var b Block
	if c.Type() != cid.DagProtobuf {
		return b
	}
	nd, err := merkledag.DecodeProtobuf(raw)
	if err != nil {
		return b
	}
	for _, l := range nd.Links() {
		if l.Cid.Defined() {
			b.Links = append(b.Links, l.Cid)
		}
	}
	b.Priority = strictPriority(nd.Data())
	return b
}

// strictPriority is the priority of a delta's bytes, or 0 if they are not
// a delta (fields 1 and 2 repeated bytes, 3 the priority, nothing else).
func strictPriority(data []byte) uint64 {
	var prio uint64
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0
		}
		data = data[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.BytesType:
			n = protowire.ConsumeFieldValue(num, typ, data)
		case num == 3 && typ == protowire.VarintType:
			prio, n = protowire.ConsumeVarint(data)
		default:
			return 0
		}
		if n < 0 {
			return 0
		}
		data = data[n:]
	}
	return prio
}

// BlockOp is one write a block adds.
type BlockOp struct {
	Collection string
	EscapedID  string
	Op         OpID
}

// BlockOps lists the writes a block's delta adds (its elements; the keys it
// deletes are not listed). Elements whose key is not a write key are
// skipped.
func BlockOps(raw []byte) ([]BlockOp, error) {
	nd, err := merkledag.DecodeProtobuf(raw)
	if err != nil {
		return nil, fmt.Errorf("decode block: %w", err)
	}
	d, err := decodeDelta(nd)
	if err != nil {
		return nil, err
	}
	out := make([]BlockOp, 0, len(d.GetElements()))
	for _, e := range d.GetElements() {
		kp, err := parseOpKey(e.GetKey())
		if err != nil {
			continue
		}
		out = append(out, BlockOp(kp))
	}
	return out, nil
}

// EncodeHeads builds a heads payload in go-ds-crdt's broadcast format
// (pb.CRDTBroadcast), the payload its Broadcaster carries, tagged with the
// epoch the heads belong to.
func EncodeHeads(heads []cid.Cid, e Epoch) ([]byte, error) {
	msg := pb.CRDTBroadcast{Heads: make([]*pb.Head, 0, len(heads))}
	for _, c := range heads {
		if !c.Defined() {
			return nil, errors.New("encode heads: undefined CID")
		}
		msg.Heads = append(msg.Heads, &pb.Head{Cid: c.Bytes()})
	}
	b, err := proto.Marshal(&msg)
	if err != nil {
		return nil, err
	}
	return appendEpochTag(b, e), nil
}

// DecodeHeads decodes a heads payload strictly: unknown fields (including
// the legacy bare-CID format, which Ferry never sends) and invalid CIDs are
// errors. A payload without heads is valid. It returns the epoch the
// payload is tagged with (Epoch{} when untagged). Callers bound its size.
func DecodeHeads(data []byte) ([]cid.Cid, Epoch, error) {
	ep, data, err := splitEpochTag(data)
	if err != nil {
		return nil, ep, err
	}
	heads, err := decodeHeads(data)
	return heads, ep, err
}

func decodeHeads(data []byte) ([]cid.Cid, error) {
	var msg pb.CRDTBroadcast
	if err := proto.Unmarshal(data, &msg); err != nil {
		return nil, fmt.Errorf("decode heads payload: %w", err)
	}
	if len(msg.ProtoReflect().GetUnknown()) > 0 {
		return nil, errors.New("decode heads payload: unknown fields")
	}
	heads := make([]cid.Cid, 0, len(msg.Heads))
	for i, h := range msg.Heads {
		if h == nil {
			return nil, fmt.Errorf("head %d: empty", i)
		}
		if len(h.ProtoReflect().GetUnknown()) > 0 {
			return nil, fmt.Errorf("head %d: unknown fields", i)
		}
		c, err := cid.Cast(h.Cid)
		if err != nil {
			return nil, fmt.Errorf("head %d: invalid CID: %w", i, err)
		}
		heads = append(heads, c)
	}
	return heads, nil
}
