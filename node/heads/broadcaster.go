package heads

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	dscrdt "github.com/ipfs/go-ds-crdt"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/lifecycle"
)

// queueSize bounds the queue between the receive paths (pubsub and Inject)
// and Next.
const queueSize = 128

var _ dscrdt.Broadcaster = (*Broadcaster)(nil)

// errClosed is returned by Broadcast and Inject after Close.
var errClosed = errors.New("broadcaster closed")

// NewPubSub creates a GossipSub router on h with strict message signing
// (every message signed, unsigned messages rejected) and flood publishing.
// opts are applied after those (e.g. a TopicGate's Options).
func NewPubSub(ctx context.Context, h host.Host, opts ...pubsub.Option) (*pubsub.PubSub, error) {
	all := append([]pubsub.Option{
		pubsub.WithMessageSigning(true),
		pubsub.WithStrictSignatureVerification(true),
		pubsub.WithFloodPublish(true),
	}, opts...)
	ps, err := pubsub.NewGossipSub(ctx, h, all...)
	if err != nil {
		return nil, fmt.Errorf("pubsub: %w", err)
	}
	return ps, nil
}

// Broadcaster is a go-ds-crdt Broadcaster over a GossipSub topic, plus an
// injection path (Inject) through which heads learned by other means (the
// heads exchange) reach go-ds-crdt exactly like pubsub messages.
type Broadcaster struct {
	ps        *pubsub.PubSub
	topicName string
	topic     *pubsub.Topic
	sub       *pubsub.Subscription
	self      peer.ID
	log       *slog.Logger

	queue chan []byte
	// admit, if set, refuses messages written or relayed by peers that are
	// not members (see SetAdmit).
	admit *atomic.Pointer[func(peer.ID) bool]
	// observe, if set, sees every payload received, as it arrives (see
	// SetObserve).
	observe atomic.Pointer[func([]byte)]

	group    *lifecycle.Group
	closeErr error // set by the first Close
}

// NewBroadcaster joins topic on ps, registers a topic validator that
// rejects payloads that are not valid heads payloads (see Decode; payloads
// without heads are rejected too), subscribes, and starts receiving.
// Messages we published ourselves are dropped on receive. ctx only bounds
// setup; use Close to stop.
func NewBroadcaster(ctx context.Context, ps *pubsub.PubSub, self peer.ID, topic string, log *slog.Logger) (*Broadcaster, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log = log.With("topic", topic)

	admit := new(atomic.Pointer[func(peer.ID) bool])
	validator := func(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		if ok := admit.Load(); ok != nil {
			if !(*ok)(from) || !(*ok)(msg.GetFrom()) {
				log.Debug("rejecting a broadcast from a peer that is not a member", "peer", from)
				return pubsub.ValidationReject
			}
		}
		heads, err := Decode(msg.GetData())
		if err != nil {
			log.Debug("rejecting invalid broadcast", "peer", from, "err", err)
			return pubsub.ValidationReject
		}
		if len(heads) == 0 {
			log.Debug("rejecting broadcast without heads", "peer", from)
			return pubsub.ValidationReject
		}
		return pubsub.ValidationAccept
	}
	if err := ps.RegisterTopicValidator(topic, pubsub.ValidatorEx(validator)); err != nil {
		return nil, fmt.Errorf("broadcaster: register validator for %q: %w", topic, err)
	}
	t, err := ps.Join(topic)
	if err != nil {
		_ = ps.UnregisterTopicValidator(topic)
		return nil, fmt.Errorf("broadcaster: join %q: %w", topic, err)
	}
	sub, err := t.Subscribe()
	if err != nil {
		_ = t.Close()
		_ = ps.UnregisterTopicValidator(topic)
		return nil, fmt.Errorf("broadcaster: subscribe %q: %w", topic, err)
	}

	b := &Broadcaster{
		ps:        ps,
		topicName: topic,
		topic:     t,
		sub:       sub,
		self:      self,
		log:       log,
		queue:     make(chan []byte, queueSize),
		admit:     admit,
		group:     lifecycle.New(),
	}
	b.group.Go(b.receive)
	return b, nil
}

// SetAdmit makes the broadcaster reject messages whose author or relaying
// peer is not admitted.
func (b *Broadcaster) SetAdmit(admit func(peer.ID) bool) { b.admit.Store(&admit) }

// SetObserve makes fn see every heads payload received (pubsub or
// Inject) as it arrives, before it waits in the queue for go-ds-crdt: a
// node learns of a later epoch even while go-ds-crdt is stuck on a block
// nobody serves any more. fn must not block.
func (b *Broadcaster) SetObserve(fn func(data []byte)) { b.observe.Store(&fn) }

func (b *Broadcaster) observed(data []byte) {
	if fn := b.observe.Load(); fn != nil {
		(*fn)(data)
	}
}

// receive moves pubsub messages into the queue until Close.
func (b *Broadcaster) receive(ctx context.Context) {
	for {
		msg, err := b.sub.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("pubsub subscription ended", "err", err)
			}
			return
		}
		if msg.ReceivedFrom == b.self {
			continue
		}
		b.observed(msg.GetData())
		select {
		case b.queue <- msg.GetData():
		case <-ctx.Done():
			return
		}
	}
}

// done is closed when Close begins.
func (b *Broadcaster) done() <-chan struct{} { return b.group.Context().Done() }

// Broadcast publishes a heads payload on the topic. A valid payload with
// more than MaxHeads heads is split into several messages so that peers
// accept it.
func (b *Broadcaster) Broadcast(ctx context.Context, data []byte) error {
	if b.group.Closed() {
		return errClosed
	}
	heads, ep, err := crdt.DecodeHeads(data) // without the limits: go-ds-crdt's own payload
	if err == nil && len(heads) > MaxHeads {
		for start := 0; start < len(heads); start += MaxHeads {
			chunk, err := EncodeEpoch(heads[start:min(start+MaxHeads, len(heads))], ep)
			if err != nil {
				return err
			}
			if err := b.topic.Publish(ctx, chunk); err != nil {
				return fmt.Errorf("broadcast: %w", err)
			}
		}
		return nil
	}
	if err := b.topic.Publish(ctx, data); err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	return nil
}

// Next returns the next received heads payload (from pubsub or Inject). It
// returns dscrdt.ErrNoMoreBroadcast once the Broadcaster is closed, and
// ctx.Err() if ctx is done first.
func (b *Broadcaster) Next(ctx context.Context) ([]byte, error) {
	if b.group.Closed() {
		return nil, dscrdt.ErrNoMoreBroadcast
	}
	select {
	case data := <-b.queue:
		if b.group.Closed() {
			return nil, dscrdt.ErrNoMoreBroadcast
		}
		return data, nil
	case <-b.done():
		return nil, dscrdt.ErrNoMoreBroadcast
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Inject queues a heads payload received from peer from by other means
// than pubsub, so that Next yields it. The payload is validated like pubsub
// payloads (an invalid one is an error); a payload without heads is
// accepted and dropped. Inject blocks until the payload is queued, ctx is
// done or the Broadcaster is closed.
func (b *Broadcaster) Inject(ctx context.Context, from peer.ID, data []byte) error {
	heads, err := Decode(data)
	if err != nil {
		return fmt.Errorf("inject heads from %s: %w", from, err)
	}
	if len(heads) == 0 {
		return nil
	}
	if b.group.Closed() {
		return errClosed
	}
	b.observed(data)
	select {
	case b.queue <- data:
		return nil
	case <-b.done():
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops receiving, leaves the topic and removes the validator. After
// Close, Next returns dscrdt.ErrNoMoreBroadcast. Safe to call more than
// once; every call returns the first one's error.
func (b *Broadcaster) Close() error {
	b.group.Close(func() {
		var errs []error
		// Cancel is processed by the pubsub event loop before the topic
		// removal below, so Topic.Close sees no subscription left.
		b.sub.Cancel()
		if err := b.topic.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("close topic: %w", err))
		}
		if err := b.ps.UnregisterTopicValidator(b.topicName); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("unregister validator: %w", err))
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}
