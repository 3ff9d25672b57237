package crdt

import (
	"context"
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
}

func (b *lenientBroadcaster) Broadcast(ctx context.Context, data []byte) error {
	if b.quiet.Load() {
		return nil
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
