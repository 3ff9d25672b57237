package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node"
)

// client reaches a node's local API: the running node's socket in the data
// dir or, when no node runs, the store opened in this process (no network),
// so that reads and edits work with or without the daemon.
type client struct {
	http  *http.Client
	local *node.Node // set when the store was opened in-process
}

// connect finds the node of dir. When the store is locked by a node that is
// still starting, it waits a little for the node's socket.
func connect(ctx context.Context, dir string) (*client, error) {
	fc, err := loadConfig(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(storeLockWait)
	for {
		if c := dialNode(dir); c != nil {
			return c, nil
		}
		c, err := openLocal(ctx, dir, fc)
		if !errors.Is(err, node.ErrStoreLocked) || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// storeLockWait is how long a command waits for a starting node.
const storeLockWait = 5 * time.Second

// dialNode returns a client of the running node, or nil when none answers.
func dialNode(dir string) *client {
	sock := filepath.Join(dir, node.SocketFile)
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return nil
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &client{http: &http.Client{Transport: tr, CheckRedirect: noRedirects}}
}

// runningNode returns a client of the running node, or an error saying how
// to start one (for commands that need the network).
func runningNode(dir string) (*client, error) {
	if c := dialNode(dir); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no node is running in %s: start it with 'ferry --dir %s node'", dir, dir)
}

// openLocal opens the store in this process (no network).
func openLocal(ctx context.Context, dir string, fc *fileConfig) (*client, error) {
	cfg, err := fc.nodeConfig(dir)
	if err != nil {
		return nil, err
	}
	cfg.Network = false
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := node.Start(ctx, cfg)
	if err != nil {
		if errors.Is(err, node.ErrStoreLocked) {
			return nil, fmt.Errorf("%w (is a node starting or stopping in %s?)", err, dir)
		}
		return nil, err
	}
	return &client{http: &http.Client{Transport: handlerTransport{n.Handler()}, CheckRedirect: noRedirects}, local: n}, nil
}

// noRedirects turns a redirect from the API into an error, never into the
// answer of another request.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func (c *client) Close() error {
	if c.local != nil {
		return c.local.Close()
	}
	return nil
}

// handlerTransport serves requests with an in-process handler.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// apiError is an error answered by the node.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return e.Msg }

// do sends a request and decodes a JSON answer into out (unless nil).
func (c *client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// send sends a request and returns the response when it succeeded.
func (c *client) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://ferry"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach node: %w", err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e node.ErrorResponse
		data, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(data))
		}
		return nil, &apiError{Status: resp.StatusCode, Msg: e.Error}
	}
	return resp, nil
}

// recordPath is the API path of a record. Dots are escaped too: the HTTP
// router would clean "." and ".." segments out of the path.
func recordPath(collection, id string) string {
	return "/v1/records/" + url.PathEscape(collection) + "/" + escapeSegment(id)
}

// escapeSegment escapes one path segment, dots included.
func escapeSegment(s string) string {
	return strings.ReplaceAll(url.PathEscape(s), ".", "%2E")
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
