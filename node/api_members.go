package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
)

// MemberJSON is one member as the API and `ferry members --json` show it.
type MemberJSON struct {
	PeerID    string     `json:"peer_id"`
	Name      string     `json:"name,omitempty"`
	Role      string     `json:"role"`
	Founder   bool       `json:"founder,omitempty"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	By        string     `json:"by,omitempty"`
	Connected bool       `json:"connected"`
	Self      bool       `json:"self,omitempty"`
}

// IgnoredJSON is one ignored operation in `ferry status --json`.
type IgnoredJSON struct {
	Collection string    `json:"collection"`
	ID         string    `json:"id"`
	Field      string    `json:"field"`
	Op         string    `json:"op"`
	Writer     string    `json:"writer"`
	Time       time.Time `json:"time"`
	Reason     string    `json:"reason"`
}

// InviteRequest is the body of POST /v1/invites.
type InviteRequest struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Expires string `json:"expires"` // a Go duration; default 24h
}

// InviteResponse answers it.
type InviteResponse struct {
	Token   string    `json:"token"`
	Name    string    `json:"name,omitempty"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
	Office  string    `json:"office"`
	Addrs   []string  `json:"addrs"`
}

// Members lists the network's members with what this node knows of them.
func (n *Node) Members(r *http.Request) ([]MemberJSON, error) {
	ms, err := n.store.Members(r.Context())
	if err != nil {
		return nil, err
	}
	names := n.names(r)
	out := make([]MemberJSON, 0, len(ms))
	for _, m := range ms {
		j := MemberJSON{PeerID: m.ID, Name: m.Name, Role: m.Role, Founder: m.Founder, Revoked: m.Revoked, By: m.By, Self: m.ID == n.self.String()}
		if j.Name == "" {
			j.Name = names[m.ID].Name
		}
		if m.Revoked {
			t := m.RevokedAt.Wall()
			j.RevokedAt = &t
		}
		if p, err := peer.Decode(m.ID); err == nil && n.raw != nil {
			j.Connected = len(n.raw.Network().ConnsToPeer(p)) > 0
		}
		out = append(out, j)
	}
	return out, nil
}

// ignoredJSON lists the operations this node ignores.
func (n *Node) ignoredJSON(r *http.Request) ([]IgnoredJSON, error) {
	ig, err := n.store.Ignored(r.Context())
	if err != nil {
		return nil, err
	}
	return toIgnoredJSON(ig), nil
}

func toIgnoredJSON(ig []crdt.IgnoredOp) []IgnoredJSON {
	out := make([]IgnoredJSON, 0, len(ig))
	for _, o := range ig {
		out = append(out, IgnoredJSON{Collection: o.Collection, ID: o.ID, Field: o.Field, Op: o.Op.String(),
			Writer: o.Op.Writer, Time: o.Op.Time.Wall(), Reason: o.Reason})
	}
	return out
}

func (n *Node) registerMemberRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		ms, err := n.Members(r)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ms)
	})
	mux.HandleFunc("GET /v1/ignored", func(w http.ResponseWriter, r *http.Request) {
		ig, err := n.ignoredJSON(r)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ig)
	})
	mux.HandleFunc("POST /v1/invites", func(w http.ResponseWriter, r *http.Request) {
		var req InviteRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			writeError(w, badRequestError{fmt.Errorf("bad invite request: %w", err)})
			return
		}
		ttl := 24 * time.Hour
		if req.Expires != "" {
			d, err := time.ParseDuration(req.Expires)
			if err != nil || d <= 0 {
				writeError(w, badRequestError{fmt.Errorf("expires %q: want a positive duration like 24h", req.Expires)})
				return
			}
			ttl = d
		}
		if req.Role == "" {
			req.Role = RoleLaptop
		}
		t, err := n.Invite(r.Context(), req.Name, req.Role, ttl)
		if err != nil {
			writeError(w, badRequestError{err})
			return
		}
		writeJSON(w, http.StatusOK, InviteResponse{Token: t.Encode(), Name: t.Name, Role: t.Role, Expires: t.Expires, Office: t.Office, Addrs: t.Addrs})
	})
	mux.HandleFunc("POST /v1/members/{member}/revoke", func(w http.ResponseWriter, r *http.Request) {
		id, err := n.resolveMember(r, r.PathValue("member"))
		if err != nil {
			writeError(w, err)
			return
		}
		if id == n.self.String() {
			writeError(w, badRequestError{errors.New("a node cannot revoke itself")})
			return
		}
		if err := n.store.RevokeMember(r.Context(), id); err != nil {
			writeError(w, err)
			return
		}
		n.membershipChanged()
		writeJSON(w, http.StatusOK, map[string]string{"revoked": id})
	})
}

// resolveMember finds a member by peer id or by name (which must be
// unambiguous).
func (n *Node) resolveMember(r *http.Request, s string) (string, error) {
	ms, err := n.Members(r)
	if err != nil {
		return "", err
	}
	var found []string
	for _, m := range ms {
		if m.PeerID == s {
			return s, nil
		}
		if m.Name == s {
			found = append(found, m.PeerID)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("member %q: %w (see ferry members)", s, crdt.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return "", badRequestError{fmt.Errorf("%d members are named %q: give the peer id", len(found), s)}
}
