package heads

import (
	"sync/atomic"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TopicGate decides, per peer and topic, which peers this node's GossipSub
// router sends a topic's messages to: a channel's heads go only to the
// peers granted the channel.
//
// go-libp2p-pubsub (v0.15.0) sends a topic's messages only to peers it
// tracks as subscribed to it, and it tracks a peer's subscription only if
// the subscription filter keeps it (handleIncomingRPC). That covers every
// path a message leaves by: flood publishing of our own messages (which
// Ferry uses, see NewPubSub, and which the peer filter does not see), the
// mesh, fanout, floodsub peers and gossip. The peer filter is added as well
// (mesh, GRAFT, IHAVE, IWANT), so a refused peer is never grafted.
//
// The filter runs only when a subscription arrives: when allow's answer
// for a subscribed or refused peer changes, the node must make the peer
// resubscribe (close its connection) for the change to apply. Incoming
// messages are not filtered here: a topic's validator must reject those
// written or relayed by peers that are not allowed (Broadcaster.SetAdmit).
type TopicGate struct {
	allow        func(peer.ID, string) bool
	canSubscribe func(string) bool
	refused      atomic.Int64
}

var _ pubsub.SubscriptionFilter = (*TopicGate)(nil)

// NewTopicGate returns a gate that keeps a peer's subscription to a topic
// only if allow(peer, topic), and lets this node join a topic only if
// canSubscribe(topic). Both are called from pubsub's event loop: they must
// be quick and must not call into pubsub. A nil allow allows every peer;
// a nil canSubscribe, every topic.
func NewTopicGate(allow func(p peer.ID, topic string) bool, canSubscribe func(topic string) bool) *TopicGate {
	return &TopicGate{allow: allow, canSubscribe: canSubscribe}
}

// Options returns the pubsub options that install the gate: its
// subscription filter and its peer filter. Give them to NewPubSub.
func (g *TopicGate) Options() []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithSubscriptionFilter(g),
		pubsub.WithPeerFilter(g.allowed),
	}
}

// Refused counts the subscriptions refused so far.
func (g *TopicGate) Refused() int64 { return g.refused.Load() }

// CanSubscribe reports whether this node may join topic (pubsub.Join
// fails otherwise).
func (g *TopicGate) CanSubscribe(topic string) bool {
	return g.canSubscribe == nil || g.canSubscribe(topic)
}

// FilterIncomingSubscriptions drops the subscriptions of from to topics
// allow rejects for it, and keeps every unsubscription (a peer admitted
// before always leaves). It never fails.
func (g *TopicGate) FilterIncomingSubscriptions(from peer.ID, subs []*pb.RPC_SubOpts) ([]*pb.RPC_SubOpts, error) {
	var out []*pb.RPC_SubOpts
	for _, sub := range subs {
		if sub.GetSubscribe() && !g.allowed(from, sub.GetTopicid()) {
			g.refused.Add(1)
			continue
		}
		out = append(out, sub)
	}
	return out, nil
}

func (g *TopicGate) allowed(p peer.ID, topic string) bool {
	return g.allow == nil || g.allow(p, topic)
}
