package enrol

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/lifecycle"
)

// Protocol is how a new node redeems an invitation with the office that
// issued it. It is the only protocol served to a peer that is not a member
// (and only by an office with open invitations).
const Protocol = "/ferry/join/1.0.0"

const (
	maxFrame = 4 << 10
	timeout  = 20 * time.Second
)

// Network is what a token carries of the network it invites into.
type Network struct {
	SwarmKey pnet.PSK
	Founder  string
	Topic    string
	Office   peer.ID
	Addrs    []multiaddr.Multiaddr // the office's, each ending in /p2p/<office>
}

// Issue creates an invitation into net, granting name and role for ttl: a
// token carrying the swarm key, the office's addresses and a one-time
// secret, recorded in the book.
func (b *Book) Issue(ctx context.Context, net Network, name, role string, ttl time.Duration) (Token, error) {
	switch {
	case role != crdt.RoleOffice && role != crdt.RoleLaptop:
		return Token{}, fmt.Errorf("role %q: want %s or %s", role, crdt.RoleLaptop, crdt.RoleOffice)
	case ttl <= 0:
		return Token{}, errors.New("the invitation must expire in the future")
	case len(net.Addrs) == 0:
		return Token{}, errors.New("this node listens on no address: nobody could reach it to join")
	}
	sec := make([]byte, 32)
	if _, err := rand.Read(sec); err != nil {
		return Token{}, err
	}
	t := Token{
		SwarmKey: hex.EncodeToString(net.SwarmKey),
		Founder:  net.Founder,
		Topic:    net.Topic,
		Office:   net.Office.String(),
		Secret:   hex.EncodeToString(sec),
		Name:     name,
		Role:     role,
		Expires:  time.Now().Add(ttl).UTC().Truncate(time.Second),
	}
	for _, a := range net.Addrs {
		t.Addrs = append(t.Addrs, a.String())
	}
	if err := b.Add(ctx, t.Secret, Invitation{Name: name, Role: role, Expires: t.Expires}); err != nil {
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

// EnrolFunc records a new member: the office's crdt.Store.AddMember.
type EnrolFunc func(ctx context.Context, id, name, role string) error

// Office redeems invitations for peers that connect with a token's secret.
type Office struct {
	h     host.Host
	book  *Book
	enrol EnrolFunc
	log   *slog.Logger
	life  *lifecycle.Group
}

// NewOffice serves the join protocol on h (the raw host: the peer is not a
// member yet).
func NewOffice(h host.Host, book *Book, enrol EnrolFunc, log *slog.Logger) *Office {
	o := &Office{h: h, book: book, enrol: enrol, log: log, life: lifecycle.New()}
	h.SetStreamHandler(Protocol, o.handle)
	return o
}

// Close stops serving and waits for the joins in progress. Safe to call
// twice.
func (o *Office) Close() error {
	o.life.Close(func() { o.h.RemoveStreamHandler(Protocol) })
	return nil
}

// handle redeems an invitation for the peer at the other end.
func (o *Office) handle(s network.Stream) {
	if !o.life.Enter() {
		_ = s.Reset()
		return
	}
	defer o.life.Leave()
	defer s.Close()
	ctx := o.life.Context()
	_ = s.SetDeadline(time.Now().Add(timeout))
	p := s.Conn().RemotePeer()
	reply := func(r joinReply) {
		b, _ := json.Marshal(r)
		_, _ = s.Write(append(b, '\n'))
	}
	var req joinRequest
	line, err := bufio.NewReader(io.LimitReader(s, maxFrame)).ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &req) != nil || req.Secret == "" {
		o.log.Warn("malformed join request", "peer", p)
		_ = s.Reset()
		return
	}
	inv, err := o.book.Take(ctx, req.Secret)
	if err != nil {
		o.log.Warn("join refused", "peer", p, "err", err)
		reply(joinReply{Error: err.Error()})
		return
	}
	name := inv.Name
	if name == "" {
		name = req.Name
	}
	if err := o.enrol(ctx, p.String(), name, inv.Role); err != nil {
		o.log.Error("enrol", "peer", p, "err", err)
		reply(joinReply{Error: "the office could not record the membership: " + err.Error()})
		return
	}
	o.log.Info("enrolled a new member", "peer", p, "name", name, "role", inv.Role)
	reply(joinReply{Name: name, Role: inv.Role})
}

// Redeem redeems invitation t with the office that issued it, over h (the
// raw host), and returns the name and role the office recorded. name is
// used when the invitation names none.
func Redeem(ctx context.Context, h host.Host, t Token, name string) (string, string, error) {
	office, err := peer.Decode(t.Office)
	if err != nil {
		return "", "", fmt.Errorf("%w: bad office id", ErrBadToken)
	}
	info := peer.AddrInfo{ID: office, Addrs: t.OfficeAddrs()}
	for i := range info.Addrs {
		info.Addrs[i], _ = peer.SplitAddr(info.Addrs[i])
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := h.Connect(cctx, info); err != nil {
		return "", "", fmt.Errorf("%w: could not connect to the office %s (%v): its node is not running or not reachable at %v, or it refused the connection because it has no open invitation (this one was already used or has expired)", ErrInviteRefused, office, err, info.Addrs)
	}
	s, err := h.NewStream(cctx, office, Protocol)
	if err != nil {
		return "", "", fmt.Errorf("%w: the office %s closed the connection (%v): it has no open invitation (this one was already used or has expired; ask for a new one)", ErrInviteRefused, office, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(joinRequest{Secret: t.Secret, Name: name})
	if _, err := s.Write(append(b, '\n')); err != nil {
		return "", "", fmt.Errorf("join: %w", err)
	}
	line, err := bufio.NewReader(io.LimitReader(s, maxFrame)).ReadBytes('\n')
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
	return r.Name, r.Role, nil
}
