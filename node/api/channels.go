package api

import (
	"errors"
	"net/http"

	"github.com/ferry-crm/ferry/node/apijson"
)

func (s *Server) channels(w http.ResponseWriter, r *http.Request) {
	cs, err := s.b.Channels(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, cs)
}

func (s *Server) grant(grant bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req apijson.GrantRequest
		if err := decodeBody(r, &req); err != nil {
			writeError(w, err)
			return
		}
		if req.Member == "" || len(req.Channels) == 0 {
			writeError(w, BadRequest(errors.New("give a member and at least one channel")))
			return
		}
		res, err := s.b.Grant(r.Context(), req.Member, req.Channels, grant)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

func (s *Server) subscribe(subscribe bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req apijson.SubscribeRequest
		if err := decodeBody(r, &req); err != nil {
			writeError(w, err)
			return
		}
		if len(req.Channels) == 0 {
			writeError(w, BadRequest(errors.New("give at least one channel")))
			return
		}
		sub, err := s.b.Subscribe(r.Context(), req.Channels, subscribe)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, apijson.SubscribeRequest{Channels: sub})
	}
}
