package enrol

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
)

const tokenPrefix = "ferry-invite-1."

// Errors of enrolment.
var (
	ErrBadToken      = errors.New("bad invitation token")
	ErrInviteRefused = errors.New("invitation refused")
)

// Token is what `ferry invite` prints and `ferry init --join` reads: all a
// new node needs to join the network once.
type Token struct {
	SwarmKey string    `json:"k"` // hex, 32 bytes
	Founder  string    `json:"f"`
	Topic    string    `json:"t"`
	Office   string    `json:"o"` // the issuing office's peer id
	Addrs    []string  `json:"a"` // its addresses, each ending in /p2p/<office>
	Secret   string    `json:"s"` // hex, 32 bytes, redeemable once
	Name     string    `json:"n"`
	Role     string    `json:"r"`
	Expires  time.Time `json:"e"`
}

// Encode renders the token as one line.
func (t Token) Encode() string {
	b, _ := json.Marshal(t)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken decodes and checks a token.
func ParseToken(s string) (Token, error) {
	var t Token
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, tokenPrefix) {
		return t, fmt.Errorf("%w: it does not start with %q (copy the whole line ferry invite printed)", ErrBadToken, tokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, tokenPrefix))
	if err != nil || len(raw) > maxFrame {
		return t, fmt.Errorf("%w: damaged (copy the whole line)", ErrBadToken)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return t, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if _, err := t.PSK(); err != nil {
		return t, err
	}
	if sec, err := hex.DecodeString(t.Secret); err != nil || len(sec) != 32 {
		return t, fmt.Errorf("%w: bad secret", ErrBadToken)
	}
	office, err := peer.Decode(t.Office)
	if err != nil {
		return t, fmt.Errorf("%w: bad office id", ErrBadToken)
	}
	if _, err := peer.Decode(t.Founder); err != nil {
		return t, fmt.Errorf("%w: bad founder id", ErrBadToken)
	}
	if t.Role != crdt.RoleOffice && t.Role != crdt.RoleLaptop {
		return t, fmt.Errorf("%w: role %q", ErrBadToken, t.Role)
	}
	if t.Topic == "" || len(t.Addrs) == 0 {
		return t, fmt.Errorf("%w: no topic or no office address", ErrBadToken)
	}
	for _, a := range t.Addrs {
		info, err := peer.AddrInfoFromString(a)
		if err != nil || info.ID != office {
			return t, fmt.Errorf("%w: office address %q", ErrBadToken, a)
		}
	}
	return t, nil
}

// PSK returns the swarm key the token carries.
func (t Token) PSK() (pnet.PSK, error) {
	k, err := hex.DecodeString(t.SwarmKey)
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("%w: bad swarm key", ErrBadToken)
	}
	return pnet.PSK(k), nil
}

// OfficeAddrs returns the issuing office's addresses.
func (t Token) OfficeAddrs() []multiaddr.Multiaddr {
	out := make([]multiaddr.Multiaddr, 0, len(t.Addrs))
	for _, a := range t.Addrs {
		if m, err := multiaddr.NewMultiaddr(a); err == nil {
			out = append(out, m)
		}
	}
	return out
}
