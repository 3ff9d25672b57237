package apijson

import "time"

// Epoch is the node's epoch of history (docs/merge-rules.md,
// "Compaction"): the first is "0"; each compaction by an office starts the
// next, "<number>-<id>".
type Epoch struct {
	Epoch  string `json:"epoch"`
	Number uint64 `json:"number"`
	// StartedAt and StartedBy: when and by which office (absent for 0).
	StartedAt time.Time `json:"started_at,omitzero"`
	StartedBy string    `json:"started_by,omitempty"`
	// Later: a peer announced a later epoch this node has not moved to yet.
	Later string `json:"later,omitempty"`
	// Adopting: the node is moving to a later epoch now.
	Adopting bool `json:"adopting,omitempty"`
	// LastError: why the last move to a later epoch failed.
	LastError string `json:"last_error,omitempty"`
}

// CompactResult answers POST /v1/compact.
type CompactResult struct {
	Epoch string `json:"epoch"`
	Prev  string `json:"prev"`
	// Seeded: writes (of Records records) the new epoch starts with;
	// Carried: writes made meanwhile, carried over.
	Seeded  int `json:"seeded_writes"`
	Records int `json:"records"`
	Carried int `json:"carried_writes"`
	// Archived: records whose recent superseded values were kept.
	Archived int `json:"archived_records"`
	// DroppedKeys and DroppedBlocks: of the old epoch.
	DroppedKeys   int `json:"dropped_keys"`
	DroppedBlocks int `json:"dropped_blocks"`
	// StoreBefore and StoreAfter: the store's size on disk, in bytes
	// (after value-log GC).
	StoreBefore int64 `json:"store_bytes_before"`
	StoreAfter  int64 `json:"store_bytes_after"`
	TookMS      int64 `json:"took_ms"`
	// Channels: each channel's own compaction (every channel store has its
	// epochs), by channel.
	Channels map[string]ChannelCompact `json:"channels,omitempty"`
}

// ChannelCompact is one channel's part of a compaction.
type ChannelCompact struct {
	Epoch   string `json:"epoch"`
	Seeded  int    `json:"seeded_writes"`
	Records int    `json:"records"`
	Error   string `json:"error,omitempty"`
}
