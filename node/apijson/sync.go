package apijson

// SyncState answers GET /v1/sync: this node's digest and, per connected
// Ferry peer, whether it shows the same state.
type SyncState struct {
	Digest string     `json:"digest"`
	Online bool       `json:"online"`
	Peers  []PeerSync `json:"peers"`
}

// PeerSync is a connected peer's sync state.
type PeerSync struct {
	Peer   string `json:"peer_id"`
	Name   string `json:"name,omitempty"`
	InSync bool   `json:"in_sync"`
	Digest string `json:"digest,omitempty"`
	Error  string `json:"error,omitempty"`
	// Channels compares each channel both nodes hold: in sync or not. The
	// peer is in sync when the everyone store and every one of them are.
	Channels map[string]bool `json:"channels,omitempty"`
}

// DiffRecord is a record that differs between this node and a peer.
type DiffRecord struct {
	// Channel is the record's channel (absent: the everyone store).
	Channel    string `json:"channel,omitempty"`
	Collection string `json:"collection"`
	ID         string `json:"id"`
	Here       bool   `json:"here"`  // this node has it
	There      bool   `json:"there"` // the peer has it
}

// DiffResult compares this node's visible state with a peer's.
type DiffResult struct {
	Peer       string       `json:"peer_id"`
	PeerName   string       `json:"peer_name,omitempty"`
	Identical  bool         `json:"identical"`
	Digest     string       `json:"digest"`
	PeerDigest string       `json:"peer_digest"`
	Records    []DiffRecord `json:"records"`
	// Channels are the channels compared (both nodes hold them).
	Channels []string `json:"channels,omitempty"`
	// Epoch and PeerEpoch: the epochs of history of both nodes (the
	// digests compare what they show, whatever their epochs).
	Epoch     string `json:"epoch"`
	PeerEpoch string `json:"peer_epoch,omitempty"`
}
