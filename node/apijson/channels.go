package apijson

import "time"

// Channels is the body of GET /v1/channels (`ferry channels --json`).
type Channels struct {
	// Held are the channels this node holds or is leaving, by name.
	Held []Channel `json:"held"`
	// Granted are this node's grants ("*" for an office, which holds every
	// channel; null in an open network, where every node may hold every
	// channel).
	Granted []string `json:"granted"`
	// Subscribed narrows what a laptop takes offline within its grants
	// (`ferry subscribe`); null: every channel granted.
	Subscribed []string `json:"subscribed"`
	// Known are every channel of the network (routing values of the
	// schema, grants, and channels written into).
	Known []string `json:"known"`
}

// Channel is one channel a node holds.
type Channel struct {
	Name string `json:"name"`
	// State: "held", or "leaving" while its edits are handed over and it
	// is purged.
	State string `json:"state"`
	// Records shown (absent while the count is being computed).
	Records *int `json:"records,omitempty"`
	// Keys and Bytes are what the channel takes in the store (blocks
	// included).
	Keys  int   `json:"keys"`
	Bytes int64 `json:"bytes"`
	// Epoch is the channel's epoch of history.
	Epoch uint64 `json:"epoch"`
	// Unacked: this node's edits of the channel no office holds yet.
	Unacked *Unacked `json:"unacked,omitempty"`
	// Peers are the members granted the channel (an office's view:
	// names, or peer ids).
	Peers []string `json:"peers,omitempty"`
	// LeavingSince and Waiting say, for a channel being left, since when
	// and what it waits for.
	LeavingSince *time.Time `json:"leaving_since,omitempty"`
	Waiting      string     `json:"waiting,omitempty"`
}

// GrantRequest is the body of POST /v1/grants and POST /v1/ungrants.
type GrantRequest struct {
	// Member is a peer id or a member's name.
	Member   string   `json:"member"`
	Channels []string `json:"channels"`
}

// GrantResult answers a grant or ungrant: the member's grants after it.
type GrantResult struct {
	Member   string   `json:"member"`
	Channels []string `json:"channels"`
}

// SubscribeRequest is the body of POST /v1/subscribe and
// POST /v1/unsubscribe.
type SubscribeRequest struct {
	Channels []string `json:"channels"`
}
