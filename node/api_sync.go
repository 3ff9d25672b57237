package node

import (
	"net/http"
)

// SyncStateJSON answers GET /v1/sync: this node's digest and, per connected
// Ferry peer, whether it shows the same state.
type SyncStateJSON struct {
	Digest string     `json:"digest"`
	Online bool       `json:"online"`
	Peers  []PeerSync `json:"peers"`
}

func (n *Node) handleSyncState(w http.ResponseWriter, r *http.Request) {
	digest, peers, err := n.SyncState(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	if peers == nil {
		peers = []PeerSync{}
	}
	writeJSON(w, http.StatusOK, SyncStateJSON{Digest: digest, Online: n.host != nil && !n.Offline(), Peers: peers})
}

func (n *Node) handleSyncNow(w http.ResponseWriter, r *http.Request) {
	if n.host == nil {
		writeError(w, badRequest(errNoNode))
		return
	}
	if n.Offline() {
		writeError(w, badRequest(errOffline))
		return
	}
	peers := n.SyncNow(r.Context())
	if peers == nil {
		peers = []PeerSync{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"peers": peers})
}

func (n *Node) handleDiff(w http.ResponseWriter, r *http.Request) {
	if n.host == nil {
		writeError(w, badRequest(errNoNode))
		return
	}
	p, err := n.ResolvePeer(r.Context(), r.PathValue("peer"))
	if err != nil {
		writeError(w, badRequest(err))
		return
	}
	res, err := n.Diff(r.Context(), p)
	if err != nil {
		writeError(w, err)
		return
	}
	if nodes, err := n.store.Nodes(r.Context()); err == nil {
		res.PeerName = nodes[p.String()].Name
	}
	writeJSON(w, http.StatusOK, res)
}
