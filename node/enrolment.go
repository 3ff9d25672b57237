package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/node/enrol"
)

// Invite issues an invitation on an office node: a token carrying the
// swarm key, this office's addresses and a one-time secret. Redeeming it
// enrols the new node with the given name and role.
func (n *Node) Invite(ctx context.Context, name, role string, ttl time.Duration) (enrol.Token, error) {
	switch {
	case !n.cfg.secured() || n.cfg.SwarmKey == nil:
		return enrol.Token{}, errors.New("this node's network has no swarm key and no founder (it was created before enrolment existed; create a new one with ferry init --office)")
	case n.cfg.Role != RoleOffice:
		return enrol.Token{}, errors.New("only an office node issues invitations")
	case n.net == nil:
		return enrol.Token{}, errNoNetwork
	}
	if m, ok, err := n.store.Member(ctx, n.self.String()); err != nil {
		return enrol.Token{}, err
	} else if !ok || m.Revoked || m.Role != RoleOffice {
		return enrol.Token{}, errors.New("this node is not an office member of its network")
	}
	netw := enrol.Network{SwarmKey: n.cfg.SwarmKey, Founder: n.cfg.Founder, Topic: n.cfg.Topic, Office: n.self, Addrs: n.Addrs()}
	return n.net.book.Issue(ctx, netw, name, role, ttl)
}

// Join redeems an invitation with the office that issued it, then waits
// until this node's store shows it as a member (its first writes would be
// refused before that) and holds everything the office announced. It
// returns the name and role the office recorded.
func (n *Node) Join(ctx context.Context, t enrol.Token, name string) (string, string, error) {
	if n.net == nil {
		return "", "", errNoNetwork
	}
	name, role, err := enrol.Redeem(ctx, n.net.raw, t, name)
	if err != nil {
		return "", "", err
	}
	office, _ := peer.Decode(t.Office) // Redeem checked it
	// The office recorded the membership; fetch it, and everything the
	// office holds (a node closed in the middle of go-ds-crdt's walk would
	// have to repair it at its next start).
	synced := 0
	for {
		if n.store.IsCurrentMember(ctx, n.self.String()) && n.holdsHeadsOf(ctx, office) {
			if synced++; synced >= 2 {
				return name, role, nil
			}
		} else {
			synced = 0
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n.SyncNow(sctx)
		cancel()
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("enrolled, but the membership did not arrive: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// holdsHeadsOf reports whether every head peer p last sent is merged here
// and no merge is queued.
func (n *Node) holdsHeadsOf(ctx context.Context, p peer.ID) bool {
	theirs := n.net.heads.PeerHeads(p)
	if theirs == nil {
		return false
	}
	if st := n.store.Stats(ctx); st.QueuedJobs > 0 || st.Dirty {
		return false
	}
	for _, h := range theirs {
		if done, err := n.store.Processed(ctx, h); err != nil || !done {
			return false
		}
	}
	return true
}
