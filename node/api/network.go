package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Status(r.Context()))
}

func (s *Server) peers(w http.ResponseWriter, r *http.Request) {
	peers, err := s.b.Peers(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, peers)
}

func (s *Server) setOnline(online bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.b.SetOffline(!online); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"online": online})
	}
}

func (s *Server) syncState(w http.ResponseWriter, r *http.Request) {
	st, err := s.b.SyncState(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	if st.Peers == nil {
		st.Peers = []apijson.PeerSync{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) syncNow(w http.ResponseWriter, r *http.Request) {
	peers, err := s.b.SyncNow(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	if peers == nil {
		peers = []apijson.PeerSync{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"peers": peers})
}

func (s *Server) diff(w http.ResponseWriter, r *http.Request) {
	res, err := s.b.Diff(r.Context(), r.PathValue("peer"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// check answers POST /v1/check: whether the store is whole, as a
// crdt.CheckReport; ?repair=1 repairs what can be repaired first. A query
// the handler does not understand is a 400 and nothing is checked.
func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	repair, err := checkQuery(r)
	if err != nil {
		writeError(w, BadRequest(err))
		return
	}
	rep, err := s.b.Check(r.Context(), repair)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// compact starts a new epoch of history: POST /v1/compact, no query, no
// body. 409 while the store is still syncing, 400 on a node that is not
// an office.
func (s *Server) compact(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		writeError(w, BadRequest(errors.New("compact: takes no query parameters")))
		return
	}
	res, err := s.b.Compact(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// checkQuery reads the query of POST /v1/check: only "repair", once, with
// a boolean value (1, true, 0, false, ...).
func checkQuery(r *http.Request) (repair bool, err error) {
	q := r.URL.Query()
	for k, vs := range q {
		if k != "repair" {
			return false, fmt.Errorf("check: unknown query parameter %q (want repair=1 or nothing)", k)
		}
		if len(vs) != 1 {
			return false, fmt.Errorf("check: repair given %d times", len(vs))
		}
	}
	if !q.Has("repair") {
		return false, nil
	}
	repair, err = strconv.ParseBool(q.Get("repair"))
	if err != nil {
		return false, fmt.Errorf("check: repair=%q: want 1 or 0 (true or false)", q.Get("repair"))
	}
	return repair, nil
}

func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	ms, err := s.b.Members(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

func (s *Server) ignored(w http.ResponseWriter, r *http.Request) {
	ig, err := s.b.Store().Ignored(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apijson.FromIgnored(ig))
}

// DefaultInviteTTL is how long an invitation is valid unless the request
// says otherwise.
const DefaultInviteTTL = 24 * time.Hour

func (s *Server) invite(w http.ResponseWriter, r *http.Request) {
	var req apijson.InviteRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, BadRequest(fmt.Errorf("bad invite request: %w", err)))
		return
	}
	ttl := DefaultInviteTTL
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil || d <= 0 {
			writeError(w, BadRequest(fmt.Errorf("expires %q: want a positive duration like 24h", req.Expires)))
			return
		}
		ttl = d
	}
	resp, err := s.b.Invite(r.Context(), req.Name, req.Role, ttl)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	id, err := s.b.Revoke(r.Context(), r.PathValue("member"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"revoked": id})
}

// decodeBody decodes a JSON request body of at most apijson.MaxLine bytes,
// numbers kept as json.Number (typed by the schema later).
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, apijson.MaxLine))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return BadRequest(fmt.Errorf("decode request: %w", err))
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// statusOf maps an error to its HTTP status: 404 for a missing record, 409
// for a conflict that changed, 403 for a write this node may not make, 507
// for a write refused or failed for want of disk space (nothing of it was
// kept), 400 for anything the caller got wrong, 500 otherwise.
func statusOf(err error) int {
	switch {
	case errors.Is(err, crdt.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, crdt.ErrNoConflict), errors.Is(err, crdt.ErrConflictChanged), errors.Is(err, crdt.ErrBusy),
		errors.Is(err, crdt.ErrLikelyDuplicate), errors.Is(err, crdt.ErrConflictOpen):
		return http.StatusConflict
	case errors.Is(err, crdt.ErrForbidden), errors.Is(err, crdt.ErrNotMember):
		return http.StatusForbidden
	case isNoSpace(err):
		return http.StatusInsufficientStorage
	case isBadRequest(err):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, statusOf(err), apijson.ErrorBody{Error: err.Error()})
}
