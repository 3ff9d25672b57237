package enrol

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
)

// NewTrust is the crdt trust model of a node in the network of founder:
// operations are signed with its identity key and verified against the
// writer's peer id, which embeds its Ed25519 public key.
func NewTrust(key crypto.PrivKey, founder string) *crdt.Trust {
	var pubs sync.Map // writer -> crypto.PubKey
	return &crdt.Trust{
		Founder: founder,
		Sign:    key.Sign,
		Verify: func(writer string, msg, sig []byte) bool {
			var pub crypto.PubKey
			if v, ok := pubs.Load(writer); ok {
				pub = v.(crypto.PubKey)
			} else {
				id, err := peer.Decode(writer)
				if err != nil {
					return false
				}
				if pub, err = id.ExtractPublicKey(); err != nil {
					return false
				}
				pubs.Store(writer, pub)
			}
			ok, err := pub.Verify(msg, sig)
			return err == nil && ok
		},
	}
}
