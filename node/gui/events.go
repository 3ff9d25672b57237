package gui

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/ferry-crm/ferry/node"
)

// keepAlive is how often a quiet event stream sends a comment, so that a
// dead connection is noticed.
const keepAlive = 15 * time.Second

// events is the page's live feed (server-sent events): an event "change"
// whenever the node's state or a record changed; the page's script then
// fetches the page again and swaps the parts marked data-live.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "live updates are not supported here", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var changes <-chan node.Change
	if s.cfg.Watch != nil {
		changes = s.cfg.Watch(ctx)
	}
	n := 0
	send := func(event string) bool {
		n++
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %d\n\n", event, n); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	// The state the page is told of is the state before hello: a change
	// made once the page had hello is then always seen.
	last := s.fingerprint(ctx)
	if !send("hello") {
		return
	}
	poll := time.NewTicker(s.cfg.Poll)
	defer poll.Stop()
	idle := time.NewTicker(keepAlive)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			// Take what else came meanwhile: one event for the lot.
			for more := true; more; {
				select {
				case _, more = <-changes:
				default:
					more = false
				}
			}
			last = s.fingerprint(ctx)
			if !send("change") {
				return
			}
		case <-poll.C:
			fp := s.fingerprint(ctx)
			if fp == last {
				continue
			}
			last = fp
			if !send("change") {
				return
			}
		case <-idle.C:
			if _, err := fmt.Fprint(w, ": still here\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// fingerprint sums up what the pages show of the node's state, less what
// moves all the time (memory, free disk space): a different sum means the
// pages should be fetched again.
func (s *Server) fingerprint(ctx context.Context) [32]byte {
	var v struct {
		Status  any
		Peers   any
		Members any
	}
	if st, err := s.api.Status(ctx); err == nil {
		st.Memory = nil
		if st.Disk != nil {
			d := *st.Disk
			d.Free, d.Total = 0, 0
			st.Disk = &d
		}
		if st.Unacked != nil {
			u := *st.Unacked
			u.AsOf = time.Time{}
			st.Unacked = &u
		}
		v.Status = st
	}
	if ps, err := s.api.Peers(ctx); err == nil {
		v.Peers = ps
	}
	if ms, err := s.api.Members(ctx); err == nil {
		v.Members = ms
	}
	b, _ := json.Marshal(v)
	return sha256.Sum256(b)
}
