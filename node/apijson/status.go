package apijson

import (
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/disk"
)

// Status is what `ferry status` shows.
type Status struct {
	PeerID         string   `json:"peer_id"`
	Name           string   `json:"name,omitempty"`
	Role           string   `json:"role"`
	Dir            string   `json:"dir"`
	Running        bool     `json:"running"`
	Online         bool     `json:"online"`
	ListenAddrs    []string `json:"listen_addrs"`
	ConnectedPeers int      `json:"connected_peers"`
	Heads          []string `json:"heads"`
	DAGHeight      uint64   `json:"dag_height"`
	Dirty          bool     `json:"dirty"`
	// Epoch is the epoch of history the node is in (see ferry compact).
	Epoch *Epoch `json:"epoch,omitempty"`
	// RepairReason says why the store needs repair (a failed merge or
	// write; empty when only go-ds-crdt's dirty bit says so). The node
	// repairs itself as soon as it can (see repairLoop).
	RepairReason string `json:"repair_reason,omitempty"`
	// FailedWrites counts writes to the store that failed since start.
	FailedWrites uint64 `json:"failed_writes"`
	// Disk is the free space of the data dir's filesystem and the reserve
	// under which local writes are refused.
	Disk         *disk.Space `json:"disk,omitempty"`
	QueuedJobs   int         `json:"queued_jobs"`
	MalformedOps uint64      `json:"malformed_ops"`
	// Digest is the hash of the visible state: equal on two nodes that show
	// the same records and conflicts.
	Digest string `json:"digest"`
	// DigestPending: the digest is being computed (a first build reads
	// the whole store); ask again.
	DigestPending bool `json:"digest_pending,omitempty"`
	// Unacked: local edits no office node holds yet (absent without
	// network), in every store; UnackedByChannel splits the channels' out.
	Unacked          *Unacked           `json:"unacked,omitempty"`
	UnackedByChannel map[string]Unacked `json:"unacked_by_channel,omitempty"`
	// Channels are the channels this node holds; ChannelsNotTaken the ones
	// granted but not taken offline (ferry unsubscribe); ChannelsLeaving
	// the ones being handed over and purged.
	Channels         []string `json:"channels,omitempty"`
	ChannelsNotTaken []string `json:"channels_not_taken,omitempty"`
	ChannelsLeaving  []string `json:"channels_leaving,omitempty"`
	// BlocksFetched counts DAG blocks received in bulk catch-ups since start.
	BlocksFetched int64 `json:"blocks_fetched"`
	// CatchUp is the bulk catch-up in progress, if any.
	CatchUp *CatchUp `json:"catch_up,omitempty"`
	// Secured: the network has a founder (signed operations, members only);
	// Private: it has a swarm key.
	Secured bool   `json:"secured"`
	Private bool   `json:"private_network"`
	Founder string `json:"founder,omitempty"`
	// Member: this node is a current member (absent in an open network).
	Member *bool `json:"member,omitempty"`
	// IgnoredOps counts operations not shown because they failed the trust
	// checks, in every store (channels too); Ignored details them
	// (computed with the digest: absent while it is pending or without a
	// running node).
	IgnoredOps int       `json:"ignored_ops"`
	Ignored    []Ignored `json:"ignored,omitempty"`
	// RefusedStreams counts protocol streams refused to non-members.
	RefusedStreams uint64 `json:"refused_streams"`
	// WorkflowsPending and WorkflowsFailed count the office's workflow
	// runs waiting or given up (absent without workflows); Duplicates
	// counts the groups of likely duplicate records (ferry duplicates).
	WorkflowsPending *int `json:"workflows_pending,omitempty"`
	WorkflowsFailed  *int `json:"workflows_failed,omitempty"`
	Duplicates       int  `json:"duplicates"`
	// Memory is the running node's process memory (absent when no node
	// runs: the command opened the store itself).
	Memory *Memory `json:"memory,omitempty"`
}

// Memory is a node process's memory, in bytes.
type Memory struct {
	// RSS is the memory resident in RAM (VmRSS of /proc/self/status),
	// pages of the store's memory-mapped tables included; PeakRSS is the
	// most it has been since the process started (VmHWM). Both are absent
	// where /proc is not (not Linux).
	RSS     uint64 `json:"rss_bytes,omitempty"`
	PeakRSS uint64 `json:"peak_rss_bytes,omitempty"`
	// Heap is the Go heap in use (runtime.MemStats.HeapInuse).
	Heap uint64 `json:"heap_bytes"`
	// Limit is the Go soft memory limit in force (memory_limit in
	// config.yaml, or GOMEMLIMIT); absent: none.
	Limit uint64 `json:"limit_bytes,omitempty"`
}

// CatchUp is a bulk fetch of missing blocks in progress.
type CatchUp struct {
	Peer      string `json:"peer_id"`
	Blocks    int    `json:"blocks"`
	Remaining int    `json:"remaining"`
	Bytes     int64  `json:"bytes"`
}

// PeerInfo describes a peer this node knows.
type PeerInfo struct {
	ID         string   `json:"peer_id"`
	Name       string   `json:"name,omitempty"`
	Role       string   `json:"role,omitempty"`
	Addrs      []string `json:"addrs,omitempty"`
	Connected  bool     `json:"connected"`
	Configured bool     `json:"configured"`
	// Learned: found through peer exchange or mDNS.
	Learned  bool      `json:"learned,omitempty"`
	LastSync time.Time `json:"last_sync,omitzero"`
	// Incompatible: the peer runs another store format, so nothing is
	// synced with it; the message names both formats and which node to
	// upgrade.
	Incompatible string `json:"incompatible,omitempty"`
	// Epoch is the epoch of the heads the peer last sent (absent before
	// an exchange).
	Epoch string `json:"epoch,omitempty"`
}

// Unacked is what `ferry status` says about local edits the office does not
// hold yet.
type Unacked struct {
	// Known is false when no office node ever announced its heads to this
	// node: then every local edit counts as unacknowledged.
	Known  bool      `json:"known"`
	Count  int       `json:"count"`
	Oldest time.Time `json:"oldest,omitzero"`
	// AsOf is when an office node last announced its heads.
	AsOf time.Time `json:"as_of,omitzero"`
}

// Ignored is one ignored operation in `ferry status --json`.
type Ignored struct {
	Collection string    `json:"collection"`
	ID         string    `json:"id"`
	Field      string    `json:"field"`
	Op         string    `json:"op"`
	Writer     string    `json:"writer"`
	Time       time.Time `json:"time"`
	Reason     string    `json:"reason"`
}

// FromIgnored converts the operations a node ignores for output.
func FromIgnored(ig []crdt.IgnoredOp) []Ignored {
	out := make([]Ignored, 0, len(ig))
	for _, o := range ig {
		out = append(out, Ignored{Collection: o.Collection, ID: o.ID, Field: o.Field, Op: o.Op.String(),
			Writer: o.Op.Writer, Time: o.Op.Time.Wall(), Reason: o.Reason})
	}
	return out
}
