package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	cid "github.com/ipfs/go-cid"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/ipfs/go-ds-crdt/pb"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// Limits on a heads payload (pubsub broadcast or heads exchange).
const (
	// MaxHeads is the largest number of heads accepted in one payload.
	MaxHeads = 1024
	// MaxHeadsPayload is the largest heads payload accepted, in bytes.
	MaxHeadsPayload = 256 << 10
)

// broadcastQueueSize bounds the queue between the receive paths (pubsub and
// Inject) and Next.
const broadcastQueueSize = 128

var _ dscrdt.Broadcaster = (*Broadcaster)(nil)

// errBroadcasterClosed is returned by Broadcast and Inject after Close.
var errBroadcasterClosed = errors.New("broadcaster closed")

// NewPubSub creates a GossipSub router on h with strict message signing
// (every message signed, unsigned messages rejected) and flood publishing.
func NewPubSub(ctx context.Context, h host.Host) (*pubsub.PubSub, error) {
	ps, err := pubsub.NewGossipSub(ctx, h,
		pubsub.WithMessageSigning(true),
		pubsub.WithStrictSignatureVerification(true),
		pubsub.WithFloodPublish(true),
	)
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

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// SetAdmit makes the broadcaster reject messages whose author or relaying
// peer is not admitted.
func (b *Broadcaster) SetAdmit(admit func(peer.ID) bool) { b.admit.Store(&admit) }

// NewBroadcaster joins topic on ps, registers a topic validator that rejects
// payloads that are not valid go-ds-crdt broadcasts (see
// ValidateHeadsPayload; payloads without heads are rejected too), subscribes,
// and starts receiving. Messages we published ourselves are dropped on
// receive. ctx only bounds setup; use Close to stop.
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
		heads, err := ValidateHeadsPayload(msg.GetData())
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

	bctx, cancel := context.WithCancel(context.Background())
	b := &Broadcaster{
		ps:        ps,
		topicName: topic,
		topic:     t,
		sub:       sub,
		self:      self,
		log:       log,
		queue:     make(chan []byte, broadcastQueueSize),
		admit:     admit,
		ctx:       bctx,
		cancel:    cancel,
	}
	b.wg.Add(1)
	go b.receive()
	return b, nil
}

// receive moves pubsub messages into the queue until Close.
func (b *Broadcaster) receive() {
	defer b.wg.Done()
	for {
		msg, err := b.sub.Next(b.ctx)
		if err != nil {
			if b.ctx.Err() == nil {
				b.log.Warn("pubsub subscription ended", "err", err)
			}
			return
		}
		if msg.ReceivedFrom == b.self {
			continue
		}
		select {
		case b.queue <- msg.GetData():
		case <-b.ctx.Done():
			return
		}
	}
}

// Broadcast publishes a heads payload on the topic. A valid payload with more
// than MaxHeads heads is split into several messages so that peers accept it.
func (b *Broadcaster) Broadcast(ctx context.Context, data []byte) error {
	if b.ctx.Err() != nil {
		return errBroadcasterClosed
	}
	heads, err := decodeHeads(data)
	if err == nil && len(heads) > MaxHeads {
		for start := 0; start < len(heads); start += MaxHeads {
			chunk, err := EncodeHeads(heads[start:min(start+MaxHeads, len(heads))])
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
	if b.ctx.Err() != nil {
		return nil, dscrdt.ErrNoMoreBroadcast
	}
	select {
	case data := <-b.queue:
		if b.ctx.Err() != nil {
			return nil, dscrdt.ErrNoMoreBroadcast
		}
		return data, nil
	case <-b.ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Inject queues a heads payload received from peer from by other means than
// pubsub, so that Next yields it. The payload is validated like pubsub
// payloads (an invalid one is an error); a payload without heads is accepted
// and dropped. Inject blocks until the payload is queued, ctx is done or the
// Broadcaster is closed.
func (b *Broadcaster) Inject(ctx context.Context, from peer.ID, data []byte) error {
	heads, err := ValidateHeadsPayload(data)
	if err != nil {
		return fmt.Errorf("inject heads from %s: %w", from, err)
	}
	if len(heads) == 0 {
		return nil
	}
	if b.ctx.Err() != nil {
		return errBroadcasterClosed
	}
	select {
	case b.queue <- data:
		return nil
	case <-b.ctx.Done():
		return errBroadcasterClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops receiving, leaves the topic and removes the validator. After
// Close, Next returns dscrdt.ErrNoMoreBroadcast. Safe to call more than once.
func (b *Broadcaster) Close() error {
	var errs []error
	b.closeOnce.Do(func() {
		b.cancel()
		b.wg.Wait()
		// Cancel is processed by the pubsub event loop before the topic
		// removal below, so Topic.Close sees no subscription left.
		b.sub.Cancel()
		if err := b.topic.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("close topic: %w", err))
		}
		if err := b.ps.UnregisterTopicValidator(b.topicName); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("unregister validator: %w", err))
		}
	})
	return errors.Join(errs...)
}

// ValidateHeadsPayload decodes a go-ds-crdt broadcast payload (pb.CRDTBroadcast)
// and returns its heads. It fails if the payload is larger than
// MaxHeadsPayload, does not decode, carries unknown fields (including the
// legacy bare-CID format, which Ferry never sends), has more than MaxHeads
// heads, or any head is not a valid CID. A payload without heads is valid.
func ValidateHeadsPayload(data []byte) ([]cid.Cid, error) {
	if len(data) > MaxHeadsPayload {
		return nil, fmt.Errorf("heads payload too large: %d bytes (max %d)", len(data), MaxHeadsPayload)
	}
	heads, err := decodeHeads(data)
	if err != nil {
		return nil, err
	}
	if len(heads) > MaxHeads {
		return nil, fmt.Errorf("too many heads: %d (max %d)", len(heads), MaxHeads)
	}
	return heads, nil
}

// decodeHeads decodes a payload without the size limits.
func decodeHeads(data []byte) ([]cid.Cid, error) {
	var msg pb.CRDTBroadcast
	if err := proto.Unmarshal(data, &msg); err != nil {
		return nil, fmt.Errorf("decode heads payload: %w", err)
	}
	if len(msg.ProtoReflect().GetUnknown()) > 0 {
		return nil, errors.New("decode heads payload: unknown fields")
	}
	heads := make([]cid.Cid, 0, len(msg.Heads))
	for i, h := range msg.Heads {
		if h == nil {
			return nil, fmt.Errorf("head %d: empty", i)
		}
		if len(h.ProtoReflect().GetUnknown()) > 0 {
			return nil, fmt.Errorf("head %d: unknown fields", i)
		}
		c, err := cid.Cast(h.Cid)
		if err != nil {
			return nil, fmt.Errorf("head %d: invalid CID: %w", i, err)
		}
		heads = append(heads, c)
	}
	return heads, nil
}

// EncodeHeads builds a heads payload in go-ds-crdt's broadcast format.
func EncodeHeads(heads []cid.Cid) ([]byte, error) {
	msg := pb.CRDTBroadcast{Heads: make([]*pb.Head, 0, len(heads))}
	for _, c := range heads {
		if !c.Defined() {
			return nil, errors.New("encode heads: undefined CID")
		}
		msg.Heads = append(msg.Heads, &pb.Head{Cid: c.Bytes()})
	}
	return proto.Marshal(&msg)
}
