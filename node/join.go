package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/multiformats/go-multiaddr"
)

// JoinProtocol is how a new node redeems an invitation with the office
// that issued it. It is the only protocol served to a peer that is not a
// member (and only by an office with open invitations).
const JoinProtocol = "/ferry/join/1.0.0"

// Invitation tokens.
const (
	tokenPrefix   = "ferry-invite-1."
	maxJoinFrame  = 4 << 10
	joinTimeout   = 20 * time.Second
	inviteKeyRoot = "/ferry/local/invites"
)

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
	if err != nil || len(raw) > maxJoinFrame {
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
	if t.Role != RoleOffice && t.Role != RoleLaptop {
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

// invitation is what an office keeps of a token it issued: the hash of its
// secret, the name and role it grants, until when.
type invitation struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
}

// inviteBook holds an office's open invitations in its local (not
// replicated) keyspace.
type inviteBook struct {
	mu    sync.Mutex
	ds    ds.Datastore
	open  map[string]invitation // secret hash -> invitation
	clock func() time.Time
}

func loadInvites(ctx context.Context, d ds.Datastore) (*inviteBook, error) {
	b := &inviteBook{ds: d, open: map[string]invitation{}, clock: time.Now}
	res, err := d.Query(ctx, query.Query{Prefix: inviteKeyRoot})
	if err != nil {
		return nil, fmt.Errorf("load invitations: %w", err)
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("load invitations: %w", r.Error)
		}
		var inv invitation
		if json.Unmarshal(r.Value, &inv) == nil {
			b.open[strings.TrimPrefix(r.Key, inviteKeyRoot+"/")] = inv
		}
	}
	return b, nil
}

// pending reports whether an unexpired invitation exists.
func (b *inviteBook) pending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock()
	for _, inv := range b.open {
		if now.Before(inv.Expires) {
			return true
		}
	}
	return false
}

func secretHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func (b *inviteBook) add(ctx context.Context, secret string, inv invitation) error {
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	h := secretHash(secret)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.ds.Put(ctx, ds.NewKey(inviteKeyRoot+"/"+h), data); err != nil {
		return fmt.Errorf("store invitation: %w", err)
	}
	if err := b.ds.Sync(ctx, ds.NewKey(inviteKeyRoot)); err != nil {
		return fmt.Errorf("store invitation: %w", err)
	}
	b.open[h] = inv
	return nil
}

// take redeems an invitation: it is removed whatever happens next, so a
// secret works once.
func (b *inviteBook) take(ctx context.Context, secret string) (invitation, error) {
	h := secretHash(secret)
	b.mu.Lock()
	defer b.mu.Unlock()
	inv, ok := b.open[h]
	if !ok {
		return inv, fmt.Errorf("%w: unknown or already used invitation", ErrInviteRefused)
	}
	delete(b.open, h)
	if err := b.ds.Delete(ctx, ds.NewKey(inviteKeyRoot+"/"+h)); err != nil {
		return inv, fmt.Errorf("redeem invitation: %w", err)
	}
	if !b.clock().Before(inv.Expires) {
		return inv, fmt.Errorf("%w: the invitation expired at %s", ErrInviteRefused, inv.Expires.Format(time.RFC3339))
	}
	return inv, nil
}

// Invite issues an invitation on an office node: a token carrying the
// swarm key, this office's addresses and a one-time secret. Redeeming it
// enrols the new node with the given name and role.
func (n *Node) Invite(ctx context.Context, name, role string, ttl time.Duration) (Token, error) {
	switch {
	case !n.secured() || n.cfg.SwarmKey == nil:
		return Token{}, errors.New("this node's network has no swarm key and no founder (it was created before enrolment existed; create a new one with ferry init --office)")
	case n.cfg.Role != RoleOffice:
		return Token{}, errors.New("only an office node issues invitations")
	case role != RoleOffice && role != RoleLaptop:
		return Token{}, fmt.Errorf("role %q: want %s or %s", role, RoleLaptop, RoleOffice)
	case ttl <= 0:
		return Token{}, errors.New("the invitation must expire in the future")
	case n.raw == nil:
		return Token{}, errNoNode
	}
	if m, ok, err := n.store.Member(ctx, n.self.String()); err != nil {
		return Token{}, err
	} else if !ok || m.Revoked || m.Role != RoleOffice {
		return Token{}, errors.New("this node is not an office member of its network")
	}
	sec := make([]byte, 32)
	if _, err := rand.Read(sec); err != nil {
		return Token{}, err
	}
	t := Token{
		SwarmKey: hex.EncodeToString(n.cfg.SwarmKey),
		Founder:  n.cfg.Founder,
		Topic:    n.cfg.Topic,
		Office:   n.self.String(),
		Secret:   hex.EncodeToString(sec),
		Name:     name,
		Role:     role,
		Expires:  time.Now().Add(ttl).UTC().Truncate(time.Second),
	}
	for _, a := range n.Addrs() {
		t.Addrs = append(t.Addrs, a.String())
	}
	if len(t.Addrs) == 0 {
		return Token{}, errors.New("this node listens on no address: nobody could reach it to join")
	}
	if err := n.invites.add(ctx, t.Secret, invitation{Name: name, Role: role, Expires: t.Expires}); err != nil {
		return Token{}, err
	}
	return t, nil
}

type joinRequest struct {
	Secret string `json:"secret"`
	Name   string `json:"name"`
}

type joinReply struct {
	Name  string `json:"name,omitempty"`
	Role  string `json:"role,omitempty"`
	Error string `json:"error,omitempty"`
}

// handleJoin redeems an invitation for the peer at the other end.
func (n *Node) handleJoin(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(joinTimeout))
	p := s.Conn().RemotePeer()
	reply := func(r joinReply) {
		b, _ := json.Marshal(r)
		_, _ = s.Write(append(b, '\n'))
	}
	var req joinRequest
	line, err := bufio.NewReader(io.LimitReader(s, maxJoinFrame)).ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &req) != nil || req.Secret == "" {
		n.log.Warn("malformed join request", "peer", p)
		_ = s.Reset()
		return
	}
	inv, err := n.invites.take(n.ctx, req.Secret)
	if err != nil {
		n.log.Warn("join refused", "peer", p, "err", err)
		reply(joinReply{Error: err.Error()})
		return
	}
	name := inv.Name
	if name == "" {
		name = req.Name
	}
	if err := n.store.AddMember(n.ctx, p.String(), name, inv.Role); err != nil {
		n.log.Error("enrol", "peer", p, "err", err)
		reply(joinReply{Error: "the office could not record the membership: " + err.Error()})
		return
	}
	n.log.Info("enrolled a new member", "peer", p, "name", name, "role", inv.Role)
	reply(joinReply{Name: name, Role: inv.Role})
}

// Join redeems an invitation with the office that issued it, then waits
// until this node's store shows it as a member (its first writes would be
// refused before that). The office must be among the configured peers.
func (n *Node) Join(ctx context.Context, t Token, name string) (name2, role string, err error) {
	if n.raw == nil {
		return "", "", errNoNode
	}
	office, err := peer.Decode(t.Office)
	if err != nil {
		return "", "", fmt.Errorf("%w: bad office id", ErrBadToken)
	}
	info := peer.AddrInfo{ID: office, Addrs: t.OfficeAddrs()}
	for i := range info.Addrs {
		info.Addrs[i], _ = peer.SplitAddr(info.Addrs[i])
	}
	cctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	if err := n.raw.Connect(cctx, info); err != nil {
		return "", "", fmt.Errorf("%w: could not connect to the office %s (%v): its node is not running or not reachable at %v, or it refused the connection because it has no open invitation (this one was already used or has expired)", ErrInviteRefused, office, err, info.Addrs)
	}
	s, err := n.raw.NewStream(cctx, office, JoinProtocol)
	if err != nil {
		return "", "", fmt.Errorf("%w: the office %s closed the connection (%v): it has no open invitation (this one was already used or has expired; ask for a new one)", ErrInviteRefused, office, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(joinTimeout))
	b, _ := json.Marshal(joinRequest{Secret: t.Secret, Name: name})
	if _, err := s.Write(append(b, '\n')); err != nil {
		return "", "", fmt.Errorf("join: %w", err)
	}
	line, err := bufio.NewReader(io.LimitReader(s, maxJoinFrame)).ReadBytes('\n')
	if err != nil {
		return "", "", fmt.Errorf("join: no answer from the office: %w", err)
	}
	var r joinReply
	if err := json.Unmarshal(line, &r); err != nil {
		return "", "", fmt.Errorf("join: bad answer from the office: %w", err)
	}
	if r.Error != "" {
		return "", "", fmt.Errorf("%w: %s", ErrInviteRefused, r.Error)
	}
	// The office recorded the membership; fetch it, and everything the
	// office holds (a node closed in the middle of go-ds-crdt's walk would
	// have to repair it at its next start).
	synced := 0
	for {
		if n.store.IsCurrentMember(ctx, n.self.String()) && n.holdsHeadsOf(ctx, office) {
			if synced++; synced >= 2 {
				return r.Name, r.Role, nil
			}
		} else {
			synced = 0
		}
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		n.SyncNow(sctx)
		scancel()
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("enrolled, but the membership did not arrive: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// holdsHeadsOf reports whether every head peer p last announced is merged
// here and no merge is queued.
func (n *Node) holdsHeadsOf(ctx context.Context, p peer.ID) bool {
	v, ok := n.peerHeads.Load(p)
	if !ok {
		return false
	}
	if st := n.store.Stats(ctx); st.QueuedJobs > 0 || st.Dirty {
		return false
	}
	for _, h := range v.([]cid.Cid) {
		if done, err := n.store.Processed(ctx, h); err != nil || !done {
			return false
		}
	}
	return true
}
