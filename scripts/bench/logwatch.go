package main

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// slog handlers that watch for one message a node logs.

// logHook is a slog handler that calls on for every record of one message
// (logged at Info or above) and passes on what its inner handler takes.
type logHook struct {
	slog.Handler
	msg string
	on  func(slog.Record)
}

func (h *logHook) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.Handler.Enabled(ctx, l)
}

func (h *logHook) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.on(r)
	}
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h *logHook) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHook{Handler: h.Handler.WithAttrs(as), msg: h.msg, on: h.on}
}

func (h *logHook) WithGroup(name string) slog.Handler {
	return &logHook{Handler: h.Handler.WithGroup(name), msg: h.msg, on: h.on}
}

// logCount counts the records of one message a node logs (see wrap).
type logCount struct {
	msg string
	mu  sync.Mutex
	n   int
}

func (c *logCount) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// wrap is h, counting c's message.
func (c *logCount) wrap(h slog.Handler) slog.Handler {
	return &logHook{Handler: h, msg: c.msg, on: func(slog.Record) {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}}
}

// loggedAt records when a node last logged one message (see wrap).
type loggedAt struct {
	msg string
	mu  sync.Mutex
	t   time.Time
}

func (l *loggedAt) get() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t
}

// wrap is h, recording when l's message was logged.
func (l *loggedAt) wrap(h slog.Handler) slog.Handler {
	return &logHook{Handler: h, msg: l.msg, on: func(r slog.Record) {
		l.mu.Lock()
		l.t = r.Time
		l.mu.Unlock()
	}}
}
