package crdt

import ds "github.com/ipfs/go-datastore"

// DefaultRoot is the root of a node's store: go-ds-crdt's namespaces and
// the store's own keys (epochs, history archive, cut blocks) live under
// it. A store opened with another Options.Root keeps all of them apart
// in the same datastore (channels, docs/design/channels.md).
var DefaultRoot = ds.NewKey("/ferry")

// Prefixes of the default root that a snapshot copies.
const (
	// EpochRoot holds the epoch keys (current manifest, builds, drops).
	EpochRoot = "/ferry/epoch/"
	// HistoryRoot is where each node keeps, per record, the recent
	// values an epoch change dropped (see Options.HistoryKeep).
	HistoryRoot = "/ferry/history/"
)

// roots are a store's own keys outside go-ds-crdt's namespaces, all under
// its Options.Root.
type roots struct {
	// epoch holds the manifest of the epoch the store is in (absent:
	// epoch 0).
	epoch ds.Key
	// build holds one key per epoch being built here (the value is its
	// namespace): a build cut short (a kill) is cleared at the next start.
	build ds.Key
	// drop holds one key per epoch whose keys and blocks are being
	// dropped (the value is its namespace).
	drop ds.Key
	// history: the history archive, "<history>/<collection>/<eid>".
	history string
	// cut marks, locally, the blocks cutLostBranches cut: merged, out of
	// reach of the heads on purpose (they lead to lost blocks), so they are
	// neither reported as orphans nor made heads again by recovery.
	cut ds.Key
}

func rootsOf(root ds.Key) roots {
	return roots{
		epoch:   root.ChildString("epoch").ChildString("current"),
		build:   root.ChildString("epoch").ChildString("build"),
		drop:    root.ChildString("epoch").ChildString("drop"),
		history: root.ChildString("history").String() + "/",
		cut:     root.ChildString("local").ChildString("cut"),
	}
}
