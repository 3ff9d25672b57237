package apijson

import "time"

// Workflows is GET /v1/workflows: the office's workflow rules, the runs
// waiting (pending), given up (failed) and the latest done.
type Workflows struct {
	Rules   []WorkflowRule `json:"rules"`
	Pending []WorkflowRun  `json:"pending"`
	Failed  []WorkflowRun  `json:"failed"`
	// Recent are the latest successful runs, newest first (at most 20).
	Recent []WorkflowRun `json:"recent"`
	// Journal counts merged changes not yet looked at.
	Journal int `json:"journal"`
	// Unreadable counts merged changes skipped since the node started:
	// their write was compacted away before they could be read
	// (docs/workflows.md).
	Unreadable int64 `json:"unreadable,omitempty"`
}

// WorkflowRule is one configured rule.
type WorkflowRule struct {
	Name       string   `json:"name"`
	Collection string   `json:"collection"`
	When       []string `json:"when,omitempty"`
	Events     []string `json:"events,omitempty"`
	// Action is the command (joined) or the URL.
	Action string `json:"action"`
	// Office is the office node the rule runs on ("" : the office with
	// the smallest peer id); Here says whether that is this node.
	Office  string `json:"office,omitempty"`
	Here    bool   `json:"here"`
	Done    int    `json:"done"`
	Pending int    `json:"pending"`
	Failed  int    `json:"failed"`
	// LastRun is when a change last ran successfully.
	LastRun *time.Time `json:"last_run,omitempty"`
}

// WorkflowRun is one change given to one rule, and the payload it gets.
type WorkflowRun struct {
	Rule string `json:"rule"`
	// Key is the idempotency key: the change's op id.
	Key        string     `json:"key"`
	Collection string     `json:"collection"`
	ID         string     `json:"id"`
	Event      string     `json:"event"`
	Writer     string     `json:"writer"`
	WriterName string     `json:"writer_name,omitempty"`
	State      string     `json:"state"` // pending, done, failed
	Attempts   int        `json:"attempts"`
	LastError  string     `json:"last_error,omitempty"`
	NextTry    *time.Time `json:"next_try,omitempty"`
	Queued     time.Time  `json:"queued"`
	Finished   *time.Time `json:"finished,omitempty"`
}

// WorkflowPayload is what an action receives (JSON on a command's stdin,
// or the body of the POST).
type WorkflowPayload struct {
	Rule string `json:"rule"`
	// IdempotencyKey is the change's op id: the same on every attempt of
	// one change (also in $FERRY_IDEMPOTENCY_KEY and the Idempotency-Key
	// header).
	IdempotencyKey string         `json:"idempotency_key"`
	Attempt        int            `json:"attempt"`
	Collection     string         `json:"collection"`
	ID             string         `json:"id"`
	Event          string         `json:"event"`
	Writer         string         `json:"writer"`
	WriterName     string         `json:"writer_name,omitempty"`
	Time           time.Time      `json:"time"`
	Before         map[string]any `json:"before"`
	After          map[string]any `json:"after"`
	Changed        []string       `json:"changed"`
}

// WorkflowRetryRequest is POST /v1/workflows/retry: failed runs to try
// again (every failed run of Rule, or the one with Key; both empty: all).
type WorkflowRetryRequest struct {
	Rule string `json:"rule,omitempty"`
	Key  string `json:"key,omitempty"`
}

// Duplicate is one group of likely duplicate records (GET /v1/duplicates).
type Duplicate struct {
	Collection string `json:"collection"`
	// Rule is the fields that match, joined by "+"; Normalize how they
	// were compared.
	Rule      string    `json:"rule"`
	Normalize string    `json:"normalize,omitempty"`
	Since     time.Time `json:"since"`
	Records   []Record  `json:"records"`
}

// MergeRequest is POST /v1/merge/{collection}.
type MergeRequest struct {
	Keep       string `json:"keep"`
	Other      string `json:"other"`
	PreferKeep bool   `json:"prefer_keep,omitempty"`
}

// MergeResponse answers a merge.
type MergeResponse struct {
	Fields  []string `json:"fields"`
	Refs    []string `json:"refs"`
	Deleted string   `json:"deleted,omitempty"`
}
