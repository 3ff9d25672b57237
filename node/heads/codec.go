package heads

import (
	"fmt"

	cid "github.com/ipfs/go-cid"

	"github.com/ferry-crm/ferry/crdt"
)

// Limits on a heads payload (pubsub broadcast or heads exchange).
const (
	// MaxHeads is the largest number of heads accepted in one payload.
	MaxHeads = 1024
	// MaxPayload is the largest heads payload accepted, in bytes.
	MaxPayload = 256 << 10
)

// Encode builds a heads payload in go-ds-crdt's broadcast format, without
// an epoch (a list of blocks, as block sync sends). It does not apply the
// limits: Broadcaster.Broadcast splits a payload with more than MaxHeads
// heads, the exchange sends at most MaxHeads.
func Encode(heads []cid.Cid) ([]byte, error) {
	return crdt.EncodeHeads(heads, crdt.Epoch{})
}

// EncodeEpoch is Encode for the heads of epoch ep (see crdt.Epoch): a node
// merges only heads of its own epoch, and moves to a later one.
func EncodeEpoch(heads []cid.Cid, ep crdt.Epoch) ([]byte, error) {
	return crdt.EncodeHeads(heads, ep)
}

// Decode validates a heads payload (go-ds-crdt's broadcast format) and
// returns its heads. It fails if the payload is larger than MaxPayload,
// does not decode strictly (see crdt.DecodeHeads: unknown fields, including
// the legacy bare-CID format, and invalid CIDs are errors) or has more than
// MaxHeads heads. A payload without heads is valid.
func Decode(payload []byte) ([]cid.Cid, error) {
	heads, _, err := DecodeEpoch(payload)
	return heads, err
}

// DecodeEpoch is Decode, also returning the epoch the heads belong to.
func DecodeEpoch(payload []byte) ([]cid.Cid, crdt.Epoch, error) {
	if len(payload) > MaxPayload {
		return nil, crdt.Epoch{}, fmt.Errorf("heads payload too large: %d bytes (max %d)", len(payload), MaxPayload)
	}
	heads, ep, err := crdt.DecodeHeads(payload)
	if err != nil {
		return nil, ep, err
	}
	if len(heads) > MaxHeads {
		return nil, ep, fmt.Errorf("too many heads: %d (max %d)", len(heads), MaxHeads)
	}
	return heads, ep, nil
}
