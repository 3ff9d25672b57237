package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/datadir"
)

// client reaches a node's local API: the running node's socket in the data
// dir or, when no node runs, the store opened in this process (no network),
// so that reads and edits work with or without the daemon.
type client struct {
	*api.Client
	local *node.Node // set when the store was opened in-process
}

// connect finds the node of dir. When the store is locked by a node that is
// still starting (its socket is not up yet), it waits for the node's socket
// as long as the node takes to open its store, up to storeLockWait.
func connect(ctx context.Context, dir string) (*client, error) {
	s, err := datadir.ReadSettings(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(storeLockWait)
	for {
		if c, err := api.Dial(dir); err == nil {
			return &client{Client: c}, nil
		}
		c, err := openLocal(ctx, dir, s)
		if !errors.Is(err, datadir.ErrLocked) || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// storeLockWait is how long a command waits for a node that holds the
// store but does not answer yet (opening a large store, or stopping).
const storeLockWait = 2 * time.Minute

// runningNode returns a client of the running node, or an error saying how
// to start one (for commands that need the network).
func runningNode(dir string) (*client, error) {
	c, err := api.Dial(dir)
	if err != nil {
		return nil, fmt.Errorf("no node is running in %s: start it with 'ferry --dir %s node'", dir, dir)
	}
	return &client{Client: c}, nil
}

// openLocal opens the store in this process (no network).
func openLocal(ctx context.Context, dir string, s *datadir.Settings) (*client, error) {
	cfg, err := nodeConfig(dir, s)
	if err != nil {
		return nil, err
	}
	cfg.Network = false
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := node.Start(ctx, cfg)
	if err != nil {
		if errors.Is(err, datadir.ErrLocked) {
			return nil, fmt.Errorf("%w (is a node starting or stopping in %s?)", err, dir)
		}
		return nil, err
	}
	return &client{Client: api.NewClient(n.Handler()), local: n}, nil
}

func (c *client) Close() error {
	if c.local != nil {
		return c.local.Close()
	}
	return nil
}

// withClient runs fn with a client of the data dir.
func withClient(ctx context.Context, dir string, fn func(*client) error) error {
	c, err := connect(ctx, dir)
	if err != nil {
		return err
	}
	err = fn(c)
	if cerr := c.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}
