package peering

import (
	"bytes"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// FuzzPeersResponse: a peer-exchange answer as a peer may send it. Decoding
// never panics; what it accepts is within the limits and names neither
// this node nor the peer that answered.
func FuzzPeersResponse(f *testing.F) {
	self, from := peer.ID("self"), peer.ID("from")
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Add(bytes.Repeat([]byte{0x0a, 0x02, 0x0a, 0x00}, 70))
	f.Fuzz(func(t *testing.T, data []byte) {
		infos, _, err := decodePeersResponse(data, self, from, true)
		if err != nil {
			return
		}
		if len(infos) > maxPeersPerResponse {
			t.Fatalf("%d peers accepted", len(infos))
		}
		for _, i := range infos {
			if i.ID == self || i.ID == from || len(i.Addrs) > maxAddrsPerPeer {
				t.Fatalf("accepted %v", i)
			}
		}
	})
}
