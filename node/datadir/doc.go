// Package datadir is everything about a node's data dir on disk: the files
// it holds, their formats, and how they are opened. It knows nothing of the
// node that runs on top (it must not import node or crdt).
//
// A data dir (ferry --dir DIR, created by ferry init) holds:
//
//   - identity.key (IdentityFile): the node's libp2p Ed25519 private key,
//     mode 0600; its peer id is the node's writer id. Created by ferry init
//     (LoadOrCreateIdentity), read by node.Start and clean sync; Exists
//     tells a data dir by it.
//   - swarm.key (SwarmKeyFile): the network's private-network key (absent:
//     an open network), mode 0600. Written by ferry init (a new network, or
//     the key of an invitation), read by the CLI (LoadSwarmKey) into the
//     node's configuration.
//   - config.yaml (SettingsFile): the node's settings (Settings). Written
//     by ferry init, join, offline and online; read by every ferry command
//     that opens the data dir (ReadSettings), which turns it into the
//     node's configuration.
//   - store/ (StoreDir): the embedded badger store with the records, the
//     DAG blocks (under BlockNamespace) and go-ds-crdt's state. Opened by
//     node.Start, by the running node or by a CLI command when none runs
//     (OpenStore, OpenStoreWait; one process at a time, else ErrLocked),
//     every write through a Guard; removed and refilled by clean sync.
//   - store.open (OpenMarkerFile): present while a process has the store
//     open (MarkOpen, MarkClosed). Found at open, the last process died
//     without closing the store, and the node re-walks the DAG.
//   - api.sock (SocketFile): the running node's HTTP API, a Unix socket
//     (mode 0600) made by the node and dialled by the CLI.
package datadir

// SocketFile is the running node's API socket inside the data dir.
const SocketFile = "api.sock"
