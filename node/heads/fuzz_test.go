package heads

import (
	"testing"

	"github.com/ferry-crm/ferry/internal/testnet"
)

// FuzzHeadsPayload: a heads payload as a peer may send it (GossipSub or
// the heads exchange). Decode never panics; what it accepts is within the
// limits and encodes back to a payload it accepts.
func FuzzHeadsPayload(f *testing.F) {
	good, _ := Encode(testnet.CIDs(f, "fuzz", 3))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x01, 0x55})
	f.Fuzz(func(t *testing.T, data []byte) {
		heads, err := Decode(data)
		if err != nil {
			return
		}
		if len(heads) > MaxHeads {
			t.Fatalf("%d heads accepted", len(heads))
		}
		again, err := Encode(heads)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("re-encoded heads refused: %v", err)
		}
	})
}
