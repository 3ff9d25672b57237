package crdt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	dscrdt "github.com/ipfs/go-ds-crdt"
)

// lenientBroadcaster keeps a failed announcement from failing a write: by
// then go-ds-crdt has merged the delta locally, and an error would skip the
// fsync and tell the user the write failed when it did not. Heads reach
// peers anyway through the node's heads exchange and go-ds-crdt's
// rebroadcast. The announcement of a local write is held until the write is
// on disk (see Store.commit): a peer told of a block that then fails to
// commit would hold a write this node reported as not written.
type lenientBroadcaster struct {
	dscrdt.Broadcaster
	log  *slog.Logger
	mu   sync.Mutex
	held [][]byte
	// quiet drops every announcement (a migration is replaying writes).
	quiet atomic.Bool
	// epoch is the store's current epoch: announcements are tagged with
	// it, and only heads of it are handed to go-ds-crdt; heads of another
	// epoch go to foreign (if set).
	epoch   func() Epoch
	foreign func(Epoch, []byte)

	// requeued heads are handed to go-ds-crdt before anything received
	// (heads of a later epoch heard while moving to it); wake interrupts a
	// waiting Next.
	reqMu    sync.Mutex
	requeued [][]byte
	wake     chan struct{}
}

// requeue hands heads (of the current epoch) to go-ds-crdt.
func (b *lenientBroadcaster) requeue(data []byte) {
	b.reqMu.Lock()
	b.requeued = append(b.requeued, data)
	if b.wake == nil {
		b.wake = make(chan struct{}, 1)
	}
	wake := b.wake
	b.reqMu.Unlock()
	select {
	case wake <- struct{}{}:
	default:
	}
}

// next returns a requeued payload, or waits for the next one received.
func (b *lenientBroadcaster) next(ctx context.Context) ([]byte, error) {
	b.reqMu.Lock()
	if len(b.requeued) > 0 {
		data := b.requeued[0]
		b.requeued = b.requeued[1:]
		b.reqMu.Unlock()
		return data, nil
	}
	if b.wake == nil {
		b.wake = make(chan struct{}, 1)
	}
	wake := b.wake
	b.reqMu.Unlock()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	woke := make(chan struct{})
	go func() {
		select {
		case <-wake:
			close(woke)
			cancel()
		case <-cctx.Done():
		}
	}()
	data, err := b.Broadcaster.Next(cctx)
	if err != nil && ctx.Err() == nil {
		select {
		case <-woke:
			return nil, errRequeued
		default:
		}
	}
	return data, err
}

var errRequeued = errors.New("requeued heads")

// Next hands go-ds-crdt the next heads of the store's own epoch.
func (b *lenientBroadcaster) Next(ctx context.Context) ([]byte, error) {
	for {
		data, err := b.next(ctx)
		if errors.Is(err, errRequeued) {
			continue
		}
		if err != nil || b.epoch == nil {
			return data, err
		}
		ep, rest, err := splitEpochTag(data)
		if err != nil {
			return data, nil // go-ds-crdt refuses it and says so
		}
		if ep == b.epoch() {
			return rest, nil
		}
		if b.foreign != nil {
			b.foreign(ep, rest)
		}
	}
}

func (b *lenientBroadcaster) Broadcast(ctx context.Context, data []byte) error {
	if b.quiet.Load() {
		return nil
	}
	if b.epoch != nil {
		data = appendEpochTag(data, b.epoch())
	}
	if isLocalWrite(ctx) {
		b.mu.Lock()
		b.held = append(b.held, data)
		b.mu.Unlock()
		return nil
	}
	b.send(ctx, data)
	return nil
}

func (b *lenientBroadcaster) send(ctx context.Context, data []byte) {
	if err := b.Broadcaster.Broadcast(ctx, data); err != nil {
		b.log.Warn("announcing new heads failed; peers will get them at the next heads exchange", "err", err)
	}
}

// release sends (ok) or drops the held announcements of a local write.
func (b *lenientBroadcaster) release(ctx context.Context, ok bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	held := b.held
	b.held = nil
	b.mu.Unlock()
	if ok && !b.quiet.Load() {
		for _, data := range held {
			b.send(ctx, data)
		}
	}
}

// engineLogger adapts slog to go-ds-crdt's logger interface.
type engineLogger struct{ log *slog.Logger }

func (l *engineLogger) Debug(args ...any)            { l.log.Debug(fmt.Sprint(args...)) }
func (l *engineLogger) Debugf(f string, args ...any) { l.log.Debug(fmt.Sprintf(f, args...)) }
func (l *engineLogger) Info(args ...any)             { l.log.Debug(fmt.Sprint(args...)) }
func (l *engineLogger) Infof(f string, args ...any)  { l.log.Debug(fmt.Sprintf(f, args...)) }
func (l *engineLogger) Warn(args ...any)             { l.log.Warn(fmt.Sprint(args...)) }
func (l *engineLogger) Warnf(f string, args ...any)  { l.log.Warn(fmt.Sprintf(f, args...)) }
func (l *engineLogger) Error(args ...any)            { l.log.Error(fmt.Sprint(args...)) }
func (l *engineLogger) Errorf(f string, args ...any) { l.log.Error(fmt.Sprintf(f, args...)) }
func (l *engineLogger) Fatal(args ...any)            { l.log.Error(fmt.Sprint(args...)) }
func (l *engineLogger) Fatalf(f string, args ...any) { l.log.Error(fmt.Sprintf(f, args...)) }
func (l *engineLogger) Panic(args ...any)            { panic(fmt.Sprint(args...)) }
func (l *engineLogger) Panicf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
