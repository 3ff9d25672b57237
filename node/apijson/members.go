package apijson

import "time"

// Member is one member as the API and `ferry members --json` show it.
type Member struct {
	PeerID    string     `json:"peer_id"`
	Name      string     `json:"name,omitempty"`
	Role      string     `json:"role"`
	Founder   bool       `json:"founder,omitempty"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	By        string     `json:"by,omitempty"`
	Connected bool       `json:"connected"`
	Self      bool       `json:"self,omitempty"`
	// Grants are the channels the member is granted (every one for an
	// office: "*").
	Grants []string `json:"grants,omitempty"`
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

// ErrorBody is the body of every failed request, and the last line of a
// stream cut short by an error.
type ErrorBody struct {
	Error string `json:"error"`
}
