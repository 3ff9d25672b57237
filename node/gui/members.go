package gui

import (
	"errors"
	"net/http"
	"strings"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
)

// membersData is the members page: every member, and after an invitation
// its token.
type membersData struct {
	Members []apijson.Member
	Invite  *apijson.InviteResponse
	Form    apijson.InviteRequest
}

func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	s.membersPage(w, r, http.StatusOK, membersData{}, "")
}

func (s *Server) membersPage(w http.ResponseWriter, r *http.Request, code int, d membersData, errMsg string) {
	ms, err := s.api.Members(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d.Members = ms
	if d.Form.Role == "" {
		d.Form.Role = "laptop"
	}
	p := s.newPage(r, "Members", "members")
	if errMsg != "" {
		p.Err = errMsg
	}
	p.Data = d
	s.render(w, r, code, "members", p)
}

// invite creates an invitation (office only) and shows its token once.
func (s *Server) invite(w http.ResponseWriter, r *http.Request) {
	req := apijson.InviteRequest{Name: strings.TrimSpace(r.PostFormValue("name")), Role: r.PostFormValue("role"),
		Expires: strings.TrimSpace(r.PostFormValue("expires"))}
	if req.Role != "laptop" && req.Role != "office" {
		s.membersPage(w, r, http.StatusBadRequest, membersData{Form: req}, "Choose the role laptop or office.")
		return
	}
	res, err := s.api.Invite(r.Context(), req)
	if err != nil {
		s.membersPage(w, r, apiStatus(err), membersData{Form: req}, errText(err))
		return
	}
	s.membersPage(w, r, http.StatusOK, membersData{Invite: &res}, "")
}

// revoke revokes a member (office only).
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	m := strings.TrimSpace(r.PostFormValue("member"))
	if m == "" {
		s.membersPage(w, r, http.StatusBadRequest, membersData{}, "Which member? None was given.")
		return
	}
	if _, err := s.api.Revoke(r.Context(), m); err != nil {
		s.membersPage(w, r, apiStatus(err), membersData{}, errText(err))
		return
	}
	back(w, r, "/members", "revoked")
}

// badInput is the user's mistake on a form (HTTP 400).
func badInput(msg string) error { return &api.Error{Status: http.StatusBadRequest, Msg: msg} }

// apiStatus is the HTTP status of an API error (500 for others).
func apiStatus(err error) int {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status >= 400 {
		return ae.Status
	}
	return http.StatusInternalServerError
}
