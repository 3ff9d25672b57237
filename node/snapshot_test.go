package node

import (
	"errors"
	"testing"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	blocks "github.com/ipfs/go-block-format"
)

// What a peer's snapshot may write into this node's store.
func TestSnapshotEntriesAreChecked(t *testing.T) {
	blk := blocks.NewBlock([]byte("a block"))
	blockKey := "/ferry/blocks/blocks" + dshelp.MultihashToDsKey(blk.Cid().Hash()).String()
	cases := []struct {
		key  string
		val  []byte
		good bool
	}{
		{"/ferry/crdt/s/k/contacts/c1/last_name/0000000000000001-A/v", []byte("x"), true},
		{blockKey, blk.RawData(), true},
		{blockKey, []byte("other data"), false},                    // does not hash to its key
		{"/ferry/blocks/blocks/NOTAMULTIHASH", []byte("x"), false}, // not a block key
		{"/ferry/local/hlc", []byte("12345678"), false},            // this node's own state
		{"/ferry/crdtX/s", []byte("x"), false},                     // a lookalike prefix
		{"/etc/passwd", []byte("x"), false},                        // anything else
	}
	for _, c := range cases {
		err := checkSnapshotEntry(c.key, c.val)
		if (err == nil) != c.good {
			t.Errorf("%s: err %v, want good=%t", c.key, err, c.good)
		}
		if err != nil && !errors.Is(err, ErrBlockSyncViolation) {
			t.Errorf("%s: %v does not wrap ErrBlockSyncViolation", c.key, err)
		}
	}
}
