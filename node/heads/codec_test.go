package heads

import (
	"testing"

	"github.com/ferry-crm/ferry/internal/testnet"
	cid "github.com/ipfs/go-cid"

	"google.golang.org/protobuf/encoding/protowire"
)

// badCidPayload is a well-formed broadcast payload whose one head is not a
// CID (pb.CRDTBroadcast{Heads: [{Cid: 1 2 3}]}, encoded by hand).
func badCidPayload() []byte {
	head := protowire.AppendTag(nil, 1, protowire.BytesType)
	head = protowire.AppendBytes(head, []byte{1, 2, 3})
	msg := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(msg, head)
}

func TestEncodeDecode(t *testing.T) {
	heads := testnet.CIDs(t, "x", 5)
	got, err := Decode(mustEncode(t, heads))
	if err != nil {
		t.Fatal(err)
	}
	if !sameCids(got, heads) {
		t.Fatalf("got %v, want %v", got, heads)
	}
	if got, err := Decode(nil); err != nil || len(got) != 0 {
		t.Errorf("empty payload: %v, %v", got, err)
	}
	if _, err := Encode([]cid.Cid{cid.Undef}); err == nil {
		t.Error("undefined CID encoded")
	}

	for name, data := range map[string][]byte{
		"garbage":    []byte("garbage"),
		"bad cid":    badCidPayload(),
		"bare cid":   heads[0].Bytes(), // legacy format, not produced by Ferry
		"many heads": mustEncode(t, testnet.CIDs(t, "many", MaxHeads+1)),
		"too large":  make([]byte, MaxPayload+1),
	} {
		if _, err := Decode(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Decode(mustEncode(t, testnet.CIDs(t, "max", MaxHeads))); err != nil {
		t.Errorf("%d heads: %v", MaxHeads, err)
	}
}
