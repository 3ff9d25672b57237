package datadir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/libp2p/go-libp2p/core/pnet"
)

// SwarmKeyFile is the network's private-network key inside the data dir,
// in the format go-libp2p and IPFS use (/key/swarm/psk/1.0.0/, base16).
const SwarmKeyFile = "swarm.key"

// NewSwarmKey returns a random 32-byte private-network key.
func NewSwarmKey() (pnet.PSK, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("swarm key: %w", err)
	}
	return pnet.PSK(k), nil
}

// SaveSwarmKey writes a swarm key readable by its owner only.
func SaveSwarmKey(path string, psk pnet.PSK) error {
	data := "/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(psk) + "\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return fmt.Errorf("write swarm key: %w", err)
	}
	return nil
}

// LoadSwarmKey reads a swarm key; nil (and no error) when the file does not
// exist: the node is not in a private network.
func LoadSwarmKey(path string) (pnet.PSK, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read swarm key: %w", err)
	}
	defer f.Close()
	psk, err := pnet.DecodeV1PSK(f)
	if err != nil {
		return nil, fmt.Errorf("read swarm key %s: %w", path, err)
	}
	return psk, nil
}
