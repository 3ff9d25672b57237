package crdt

import (
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
func (s *Store) layout() layout { return layout{ns: s.opts.Namespace} }

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
