package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

// HookConfig configures the office's conflict hook: an executable (Command,
// given the conflict as JSON on stdin) or an HTTP endpoint (URL, given it as
// a POST body) that answers {"pick": N} or {"value": V}. The office writes
// the answer as an ordinary resolution, so every node converges on it. It is
// offered every open conflict (policy manual). A hook that fails, hangs past
// Timeout or answers garbage leaves the conflict open for a person; the
// reason is logged, and the hook is not asked again until the conflict
// changes.
type HookConfig struct {
	Command []string
	URL     string
	Timeout time.Duration // default 10s
}

// HookRequest is what the hook receives.
type HookRequest struct {
	Conflict apijson.Conflict `json:"conflict"`
	Record   map[string]any   `json:"record,omitempty"` // the record's visible values
}

// HookAnswer is what the hook answers: Pick (1-based, as in
// Conflict.Candidates) or Value.
type HookAnswer struct {
	Pick  int `json:"pick,omitempty"`
	Value any `json:"value,omitempty"`
}

const hookMaxAnswer = 1 << 20

// hookRunner offers open conflicts to the hook, one record at a time.
type hookRunner struct {
	n   *Node
	cfg HookConfig

	mu      sync.Mutex
	pending map[[2]string]bool // collection, escaped id
	tried   map[string]bool    // conflicts (with their candidates) already offered
	wake    chan struct{}
}

func newHookRunner(n *Node, cfg HookConfig) *hookRunner {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &hookRunner{n: n, cfg: cfg, pending: map[[2]string]bool{}, tried: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// changed is called from go-ds-crdt's merge hooks: it must not block.
func (h *hookRunner) changed(collection, escapedID string) {
	if strings.HasPrefix(collection, "_") {
		return
	}
	h.mu.Lock()
	h.pending[[2]string{collection, escapedID}] = true
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// run offers conflicts until ctx is done.
func (h *hookRunner) run(ctx context.Context) {
	// Conflicts that arrived while no hook ran.
	err := h.n.router.Conflicts(ctx, nil, func(c crdt.Conflict) error {
		if c.Open {
			eid, err := crdt.EscapeID(c.ID)
			if err == nil {
				h.changed(c.Collection, eid)
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		h.n.log.Warn("conflict hook: initial scan", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		h.mu.Lock()
		batch := h.pending
		h.pending = map[[2]string]bool{}
		h.mu.Unlock()
		for key := range batch {
			if ctx.Err() != nil {
				return
			}
			h.offer(ctx, key[0], key[1])
		}
	}
}

// offer asks the hook about every open conflict of one record.
func (h *hookRunner) offer(ctx context.Context, collection, escapedID string) {
	id, err := crdt.UnescapeID(escapedID)
	if err != nil {
		return
	}
	conflicts, err := h.n.router.RecordConflicts(ctx, collection, id)
	if err != nil {
		h.n.log.Warn("conflict hook: read conflicts", "collection", collection, "id", id, "err", err)
		return
	}
	var nodes map[string]crdt.NodeInfo
	for _, c := range conflicts {
		if !c.Open {
			continue
		}
		sig := collection + "/" + escapedID + "/" + c.Field
		var expect []crdt.OpID
		for _, cand := range c.Candidates {
			sig += "/" + cand.Op.String()
			expect = append(expect, cand.Op)
		}
		h.mu.Lock()
		seen := h.tried[sig]
		h.tried[sig] = true
		h.mu.Unlock()
		if seen {
			continue
		}
		if nodes == nil {
			nodes = h.n.Names(ctx)
		}
		req := HookRequest{Conflict: apijson.FromConflict(c, nodes)}
		if rec, err := h.n.router.Get(ctx, collection, id); err == nil {
			req.Record = rec.Values()
		}
		log := h.n.log.With("collection", collection, "id", id, "field", c.Field)
		ans, err := h.ask(ctx, req)
		if err != nil {
			log.Warn("conflict hook failed: the conflict stays open", "err", err)
			continue
		}
		res := crdt.Resolution{Pick: ans.Pick, Value: ans.Value, Expect: expect}
		if _, err := h.n.router.Resolve(ctx, collection, id, c.Field, res); err != nil {
			log.Warn("conflict hook answer refused: the conflict stays open", "answer", ans, "err", err)
			continue
		}
		log.Info("conflict resolved by the hook", "answer", ans)
	}
}

// ask runs the hook once, bounded by the timeout.
func (h *hookRunner) ask(ctx context.Context, req HookRequest) (HookAnswer, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return HookAnswer{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	var out []byte
	switch {
	case len(h.cfg.Command) > 0:
		cmd := exec.CommandContext(ctx, h.cfg.Command[0], h.cfg.Command[1:]...)
		cmd.Stdin = bytes.NewReader(body)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &limitedBuffer{b: &stdout}, &limitedBuffer{b: &stderr}
		cmd.WaitDelay = time.Second
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return HookAnswer{}, fmt.Errorf("no answer within %s", h.cfg.Timeout)
			}
			return HookAnswer{}, fmt.Errorf("%s: %w: %s", h.cfg.Command[0], err, strings.TrimSpace(stderr.String()))
		}
		out = stdout.Bytes()
	case h.cfg.URL != "":
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
		if err != nil {
			return HookAnswer{}, err
		}
		hreq.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			if ctx.Err() != nil {
				return HookAnswer{}, fmt.Errorf("no answer within %s", h.cfg.Timeout)
			}
			return HookAnswer{}, err
		}
		defer resp.Body.Close()
		out, err = io.ReadAll(io.LimitReader(resp.Body, hookMaxAnswer))
		if err != nil {
			return HookAnswer{}, err
		}
		if resp.StatusCode/100 != 2 {
			return HookAnswer{}, fmt.Errorf("%s answered %s", h.cfg.URL, resp.Status)
		}
	default:
		return HookAnswer{}, errors.New("no command or URL configured")
	}
	var ans HookAnswer
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ans); err != nil {
		return HookAnswer{}, fmt.Errorf("answer %q is not {\"pick\": N} or {\"value\": V}: %w", truncate(out, 200), err)
	}
	if (ans.Pick != 0) == (ans.Value != nil) {
		return HookAnswer{}, fmt.Errorf("answer %q: want exactly one of pick and value", truncate(out, 200))
	}
	return ans, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// limitedBuffer keeps at most hookMaxAnswer bytes of a hook's output.
type limitedBuffer struct{ b *bytes.Buffer }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := hookMaxAnswer - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
