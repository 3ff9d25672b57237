package heads

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/wire"
)

func subOpt(topic string, subscribe bool) *pb.RPC_SubOpts {
	return &pb.RPC_SubOpts{Topicid: &topic, Subscribe: &subscribe}
}

func TestTopicGateFilter(t *testing.T) {
	west, east := wire.ChannelTopic("ferry", "west"), wire.ChannelTopic("ferry", "east")
	b, o := testnet.Host(t).ID(), testnet.Host(t).ID()
	g := NewTopicGate(func(p peer.ID, topic string) bool { return p != b || topic != west },
		func(topic string) bool { return topic != east })

	in := []*pb.RPC_SubOpts{subOpt(wire.Topic("ferry"), true), subOpt(west, true), subOpt(east, true), subOpt(west, false)}
	got, err := g.FilterIncomingSubscriptions(b, in)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, s := range got {
		kept = append(kept, fmt.Sprintf("%s:%t", s.GetTopicid(), s.GetSubscribe()))
	}
	// A topic this node cannot join is still tracked: allow decides alone.
	want := []string{wire.Topic("ferry") + ":true", east + ":true", west + ":false"}
	if !slices.Equal(kept, want) {
		t.Errorf("kept %v, want %v", kept, want)
	}
	if len(in) != 4 || !in[1].GetSubscribe() {
		t.Error("the input was modified")
	}
	if g.Refused() != 1 {
		t.Errorf("Refused() = %d, want 1", g.Refused())
	}
	if got, _ := g.FilterIncomingSubscriptions(o, in); len(got) != len(in) {
		t.Errorf("another peer: kept %d of %d", len(got), len(in))
	}
	if !g.CanSubscribe(west) || g.CanSubscribe(east) {
		t.Error("CanSubscribe does not follow canSubscribe")
	}

	open := NewTopicGate(nil, nil)
	if got, _ := open.FilterIncomingSubscriptions(b, in); len(got) != len(in) || !open.CanSubscribe(east) {
		t.Error("a gate without predicates refuses something")
	}

	// Joining a topic the gate refuses fails.
	h := testnet.Host(t)
	ps := newTestPubSub(t, h, g.Options()...)
	if _, err := ps.Join(east); err == nil {
		t.Error("joined a topic CanSubscribe refuses")
	}
	if tp, err := ps.Join(west); err != nil {
		t.Errorf("join %s: %v", west, err)
	} else {
		_ = tp.Close()
	}
}

// counter counts the messages a subscription receives.
type counter struct {
	mu  sync.Mutex
	got []string
}

func (c *counter) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// subscribe joins topic on ps and counts what arrives until the test ends.
func subscribe(t *testing.T, ps *pubsub.PubSub, topic string) (*pubsub.Topic, *counter) {
	t.Helper()
	tp, err := ps.Join(topic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tp.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		sub.Cancel()
	})
	c := &counter{}
	go func() {
		defer close(done)
		for {
			msg, err := sub.Next(ctx)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.got = append(c.got, string(msg.GetData()))
			c.mu.Unlock()
		}
	}()
	return tp, c
}

func hasPeer(tp *pubsub.Topic, p peer.ID) bool { return slices.Contains(tp.ListPeers(), p) }

// A publisher P whose gate rejects B on topic T never sends B a message of
// T (flood publish included), while A, allowed, gets them all; B still
// gets the messages of a topic it is allowed (E), which proves it was
// listening.
func TestTopicGateWithholdsTopic(t *testing.T) {
	const T, E = "ferry/format-2/ch/west", "ferry/format-2"
	hP, hA, hB := testnet.Host(t), testnet.Host(t), testnet.Host(t)
	gateP := NewTopicGate(func(p peer.ID, topic string) bool { return p != hB.ID() || topic != T }, nil)
	everyone := func() *TopicGate { return NewTopicGate(nil, nil) }
	psP := newTestPubSub(t, hP, gateP.Options()...)
	psA := newTestPubSub(t, hA, everyone().Options()...)
	psB := newTestPubSub(t, hB, everyone().Options()...)

	tP, _ := subscribe(t, psP, T)
	eP, _ := subscribe(t, psP, E)
	_, onA := subscribe(t, psA, T)
	_, onB := subscribe(t, psB, T)
	_, onBE := subscribe(t, psB, E)
	// A and B are connected to P only: nobody relays to B but P.
	testnet.Connect(t, hA, hP)
	testnet.Connect(t, hB, hP)

	testnet.WaitFor(t, 10*time.Second, func() bool {
		return hasPeer(tP, hA.ID()) && hasPeer(eP, hB.ID()) && gateP.Refused() >= 1
	})
	if hasPeer(tP, hB.ID()) {
		t.Fatal("P tracks B's subscription to T")
	}

	publishAll(t, tP, T, 5)
	testnet.WaitFor(t, 10*time.Second, func() bool { return onA.n() == 5 })
	// P sends to B in order on one stream: once B has E's message, any
	// message of T sent before it would have arrived.
	publishAll(t, eP, E, 1)
	testnet.WaitFor(t, 10*time.Second, func() bool { return onBE.n() == 1 })
	if n := onB.n(); n != 0 {
		t.Fatalf("B, refused on T, received %d messages of T", n)
	}
}

// With the gate on every node, a third node that relays T does not relay
// it to B either: A and P both reject B on T, B is connected to both, and
// P's messages reach A but never B.
func TestTopicGateOnEveryNode(t *testing.T) {
	const T, E = "ferry/format-2/ch/west", "ferry/format-2"
	hP, hA, hB := testnet.Host(t), testnet.Host(t), testnet.Host(t)
	rejectB := func() *TopicGate {
		return NewTopicGate(func(p peer.ID, topic string) bool { return p != hB.ID() || topic != T }, nil)
	}
	gateP, gateA := rejectB(), rejectB()
	psP := newTestPubSub(t, hP, gateP.Options()...)
	psA := newTestPubSub(t, hA, gateA.Options()...)
	psB := newTestPubSub(t, hB, NewTopicGate(nil, nil).Options()...)

	tP, _ := subscribe(t, psP, T)
	eP, _ := subscribe(t, psP, E)
	tA, onA := subscribe(t, psA, T)
	eA, _ := subscribe(t, psA, E)
	_, onB := subscribe(t, psB, T)
	_, onBE := subscribe(t, psB, E)
	for _, pair := range [][2]host.Host{{hA, hP}, {hB, hP}, {hB, hA}} {
		testnet.Connect(t, pair[0], pair[1])
	}
	testnet.WaitFor(t, 10*time.Second, func() bool {
		return hasPeer(tP, hA.ID()) && hasPeer(tA, hP.ID()) && hasPeer(eP, hB.ID()) && hasPeer(eA, hB.ID()) &&
			gateP.Refused() >= 1 && gateA.Refused() >= 1
	})

	publishAll(t, tP, T, 5)
	testnet.WaitFor(t, 10*time.Second, func() bool { return onA.n() == 5 })
	// A relays what it receives (mesh, gossip); a message A publishes on
	// E after relaying travels behind anything it sent B.
	publishAll(t, eP, E, 1)
	publishAll(t, eA, E, 1)
	testnet.WaitFor(t, 10*time.Second, func() bool { return onBE.n() == 2 })
	if n := onB.n(); n != 0 {
		t.Fatalf("B, refused on T everywhere, received %d messages of T", n)
	}
}

func publishAll(t *testing.T, tp *pubsub.Topic, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range n {
		if err := tp.Publish(ctx, fmt.Appendf(nil, "%s #%d", topic, i)); err != nil {
			t.Fatal(err)
		}
	}
}
