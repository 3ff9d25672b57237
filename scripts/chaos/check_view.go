package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ferry-crm/ferry/node/apijson"
)

// recordField is the field name of deletes and record conflicts in the
// JSON output.
const recordField = "_record"

// histEntry is one entry of `ferry history COLLECTION ID --json`.
type histEntry struct {
	Field      string   `json:"field"`
	Op         string   `json:"op"`
	Value      any      `json:"value"`
	Deleted    bool     `json:"deleted"`
	Writer     string   `json:"writer"`
	Supersedes []string `json:"supersedes"`
	Seen       []string `json:"seen"`
	Visible    bool     `json:"visible"`
	Origin     string   `json:"origin"`
	Block      string   `json:"block"`
	Compacted  bool     `json:"compacted"`
}

func (e histEntry) ref() string { return e.Field + "/" + e.Op }

// history runs `ferry history contacts ID --json` on n.
func (c *cluster) history(ctx context.Context, n *node, id string) ([]histEntry, error) {
	res := c.ferry(ctx, n, "history", collection, id, "--json")
	if !res.ok() {
		return nil, fmt.Errorf("history %s/%s on %s: %s", collection, id, n.name, res.brief())
	}
	var h []histEntry
	if err := json.Unmarshal([]byte(res.stdout), &h); err != nil {
		return nil, fmt.Errorf("history --json on %s: %w", n.name, err)
	}
	return h, nil
}

// recordJSON is one line of `ferry list contacts --json`.
type recordJSON struct {
	ID        string         `json:"id"`
	Fields    map[string]any `json:"fields"`
	Conflicts map[string]struct {
		Candidates []candJSON `json:"candidates"`
	} `json:"conflicts"`
}

// nodeView is what the checks read from one node.
type nodeView struct {
	n         *node
	records   map[string]*recordJSON // visible records by id
	conflicts []conflictJSON
	hist      map[string][]histEntry
	// Channels (channels_check.go): what `ferry channels --json` says,
	// the channels held, each record's normalised line, the normalised
	// conflicts one by one, and the ids listed more than once.
	chans     apijson.Channels
	held      map[string]bool
	lines     map[string]string
	confLines []string
	dups      map[string]int
}

// normalise re-encodes JSON with sorted keys and no spacing.
func normalise(data []byte) (string, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v)
	return string(out), err
}

// readView reads a node's records and conflicts.
func (c *cluster) readView(ctx context.Context, n *node) (*nodeView, error) {
	v := &nodeView{n: n, records: map[string]*recordJSON{}, hist: map[string][]histEntry{}, lines: map[string]string{}, dups: map[string]int{}}
	res := c.ferry(ctx, n, "list", collection, "--json")
	if !res.ok() {
		return nil, fmt.Errorf("list on %s: %s", n.name, res.brief())
	}
	for _, line := range strings.Split(res.stdout, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var rec recordJSON
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("list --json on %s: %w", n.name, err)
		}
		s, err := normalise([]byte(line))
		if err != nil {
			return nil, err
		}
		if v.records[rec.ID] != nil {
			v.dups[rec.ID] = max(2, v.dups[rec.ID]+1)
		}
		v.records[rec.ID] = &rec
		v.lines[rec.ID] = s
	}
	res = c.ferry(ctx, n, "conflicts", "--json")
	if !res.ok() {
		return nil, fmt.Errorf("conflicts on %s: %s", n.name, res.brief())
	}
	if err := json.Unmarshal([]byte(res.stdout), &v.conflicts); err != nil {
		return nil, fmt.Errorf("conflicts --json on %s: %w", n.name, err)
	}
	if err := c.readChannels(ctx, v, res.stdout); err != nil {
		return nil, err
	}
	return v, nil
}
