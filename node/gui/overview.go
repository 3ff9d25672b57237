package gui

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

// overviewData is the overview page: this computer, its peers, what the
// office does not hold yet, a sync under way, and warnings.
type overviewData struct {
	Status   apijson.Status
	Peers    []peerRow
	Unacked  *apijson.Unacked
	CatchUp  *apijson.CatchUp
	Warnings []string
	Open     int // open conflicts
}

// peerRow is one peer of the overview.
type peerRow struct {
	ID, Name, Role string
	Connected      bool
	LastSync       time.Time
	// InSync: the peer's digest equals ours (nil: not known).
	InSync *bool
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "Overview", "overview")
	if p.Err != "" {
		s.render(w, r, http.StatusBadGateway, "overview", p)
		return
	}
	ctx := r.Context()
	d := overviewData{}
	st, err := s.api.Status(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d.Status, d.Unacked, d.CatchUp = st, st.Unacked, st.CatchUp
	peers, err := s.api.Peers(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	inSync := map[string]bool{}
	if st.Online {
		// Without an answer the column stays empty.
		// Peers answer with their digests; a slow one does not hold up the
		// page.
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ss, err := s.api.SyncState(sctx)
		cancel()
		if err == nil {
			for _, ps := range ss.Peers {
				if ps.Error == "" {
					inSync[ps.Peer] = ps.InSync
				}
			}
		}
	}
	for _, pi := range peers {
		row := peerRow{ID: pi.ID, Name: pi.Name, Role: pi.Role, Connected: pi.Connected, LastSync: pi.LastSync}
		if v, ok := inSync[pi.ID]; ok {
			row.InSync = &v
		}
		d.Peers = append(d.Peers, row)
		if pi.Incompatible != "" {
			d.Warnings = append(d.Warnings, fmt.Sprintf("%s cannot sync with this computer: %s", who(pi.Name, pi.ID), pi.Incompatible))
		}
	}
	// Offices first, then by name.
	sort.SliceStable(d.Peers, func(i, j int) bool {
		a, b := d.Peers[i], d.Peers[j]
		if (a.Role == "office") != (b.Role == "office") {
			return a.Role == "office"
		}
		return who(a.Name, a.ID) < who(b.Name, b.ID)
	})
	if cs, err := s.api.Conflicts(ctx, "", true); err == nil {
		d.Open = len(cs)
	}
	members, _ := s.api.Members(ctx)
	d.Warnings = append(warnings(st, members), d.Warnings...)
	p.Data = d
	s.render(w, r, http.StatusOK, "overview", p)
}

// warnings are what the overview points out about the node's state, in
// words.
func warnings(st apijson.Status, members []apijson.Member) []string {
	var out []string
	if st.Member != nil && !*st.Member {
		out = append(out, "This computer is not a member of the network (any more): the others ignore its edits. Ask the office for a new invitation.")
	}
	if st.Dirty {
		msg := "The store needs repair; the node repairs it by itself."
		if st.RepairReason != "" {
			msg += " Reason: " + st.RepairReason + "."
		}
		out = append(out, msg)
	}
	if st.FailedWrites > 0 {
		out = append(out, plural(int(st.FailedWrites), "write", "writes")+" to the disk failed.")
	}
	if st.Disk != nil && st.Disk.Full {
		out = append(out, "The disk is full: new edits are refused until space is freed.")
	} else if st.Disk != nil && st.Disk.Low {
		out = append(out, "The disk is almost full.")
	}
	if st.IgnoredOps > 0 {
		msg := plural(st.IgnoredOps, "operation is", "operations are") + " ignored"
		if len(st.Ignored) > 0 {
			ig := st.Ignored[0]
			msg += fmt.Sprintf(", for example on %s/%s: %s", ig.Collection, ig.ID, ig.Reason)
		}
		out = append(out, msg+".")
	}
	for _, m := range members {
		if m.Revoked {
			at := ""
			if m.RevokedAt != nil {
				at = " on " + when(*m.RevokedAt)
			}
			out = append(out, fmt.Sprintf("Member %s (%s) was revoked%s: its later edits are ignored.", who(m.Name, m.PeerID), m.Role, at))
		}
	}
	if st.Epoch != nil && st.Epoch.LastError != "" {
		out = append(out, "Moving to the office's compacted history failed: "+st.Epoch.LastError)
	}
	if st.MalformedOps > 0 {
		out = append(out, plural(int(st.MalformedOps), "malformed operation was", "malformed operations were")+" received and skipped.")
	}
	return out
}

// setOnline switches the node off the network, or back on.
func (s *Server) setOnline(online bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.api.SetOffline(r.Context(), !online); err != nil {
			s.fail(w, r, err)
			return
		}
		done := "offline"
		if online {
			done = "online"
		}
		back(w, r, "/", done)
	}
}

// syncNow asks every connected peer for its news; the overview then shows
// a catch-up's progress live.
func (s *Server) syncNow(w http.ResponseWriter, r *http.Request) {
	if _, err := s.api.SyncNow(r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	back(w, r, "/", "sync")
}
