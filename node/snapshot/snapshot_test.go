package snapshot

import (
	"errors"
	"strings"
	"testing"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	blocks "github.com/ipfs/go-block-format"
)

// What a peer's snapshot may write into this node's store.
func TestEntriesAreChecked(t *testing.T) {
	layout := Layout{Prefixes: []string{"/ferry/crdt/", "/ferry/blocks/"}, Blocks: "/ferry/blocks/blocks/"}
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
		err := layout.Check(c.key, c.val)
		if (err == nil) != c.good {
			t.Errorf("%s: err %v, want good=%t", c.key, err, c.good)
		}
		if err != nil && !errors.Is(err, ErrViolation) {
			t.Errorf("%s: %v does not wrap ErrViolation", c.key, err)
		}
	}
}

func FuzzSnapshotEntry(f *testing.F) {
	layout := Layout{Prefixes: []string{"/ferry/crdt/", "/ferry/blocks/"}, Blocks: "/ferry/blocks/blocks/"}
	f.Add("/ferry/crdt/s/k/c/1/f/0000000000000001-A/v", []byte("x"))
	f.Add("/ferry/blocks/blocks/CIQA", []byte("x"))
	f.Add("/ferry/local/hlc", []byte("x"))
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		if err := layout.Check(key, val); err == nil &&
			!strings.HasPrefix(key, "/ferry/crdt/") && !strings.HasPrefix(key, "/ferry/blocks/") {
			t.Fatalf("accepted key %q", key)
		}
	})
}
