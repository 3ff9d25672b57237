// Package api is the local API of a Ferry node: HTTP over a Unix socket
// inside the data dir (whoever can open the data dir, mode 0700, can use
// it; nobody else can). Server serves a Backend (the node); Client is what
// the CLI and Go programs use to talk to it. The JSON shapes are those of
// package apijson, documented in docs/json.md.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// Backend is what the API serves: a node. Handlers parse the request, call
// one method and write its answer; what a request means is the Backend's
// business.
type Backend interface {
	// Store holds the records, the schema, conflicts and history.
	Store() *crdt.Router
	// Names maps writer ids to node names, for output.
	Names(ctx context.Context) map[string]crdt.NodeInfo
	Status(ctx context.Context) apijson.Status
	Peers(ctx context.Context) ([]apijson.PeerInfo, error)
	SetOffline(offline bool) error
	SyncState(ctx context.Context) (apijson.SyncState, error)
	SyncNow(ctx context.Context) ([]apijson.PeerSync, error)
	// Diff compares with a connected peer named by id or node name.
	Diff(ctx context.Context, peer string) (apijson.DiffResult, error)
	Check(ctx context.Context, repair bool) (*crdt.CheckReport, error)
	// Compact starts a new epoch of history (an office only).
	Compact(ctx context.Context) (apijson.CompactResult, error)
	Members(ctx context.Context) ([]apijson.Member, error)
	Invite(ctx context.Context, name, role string, ttl time.Duration) (apijson.InviteResponse, error)
	// Revoke revokes a member named by peer id or name; it returns the id.
	Revoke(ctx context.Context, member string) (string, error)
	// Channels lists the channels held, granted and known.
	Channels(ctx context.Context) (apijson.Channels, error)
	// Grant grants (or with grant false, ungrants) a member channels (an
	// office only).
	Grant(ctx context.Context, member string, channels []string, grant bool) (apijson.GrantResult, error)
	// Subscribe narrows (or with subscribe true, widens again) the
	// channels a laptop takes offline; it returns the subscription after.
	Subscribe(ctx context.Context, channels []string, subscribe bool) ([]string, error)
	// Metrics serves Prometheus metrics.
	Metrics() http.Handler
}

// Errors a Backend returns for requests it cannot serve in its state.
var (
	ErrNoNode  = errors.New("no node is running in this data dir: start it with 'ferry node'")
	ErrOffline = errors.New("the node is offline: 'ferry online' first")
)

// BadRequest marks err as the caller's mistake (HTTP 400).
func BadRequest(err error) error { return badRequestError{err} }

type badRequestError struct{ error }

func (e badRequestError) Unwrap() error { return e.error }

// Server serves the local API of a Backend.
type Server struct {
	b   Backend
	log *slog.Logger
	mux *http.ServeMux
}

// NewServer returns the API of b.
func NewServer(b Backend, log *slog.Logger) *Server {
	s := &Server{b: b, log: log, mux: http.NewServeMux()}
	s.routes()
	return s
}

// ServeHTTP serves one request (in-process clients call it directly).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve listens on dir's API socket until ctx is done. It refuses to start
// when another node answers on the socket; a stale socket left by a crash
// is replaced.
func (s *Server) Serve(ctx context.Context, dir string) error {
	path := filepath.Join(dir, datadir.SocketFile)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("serve API: a node is already running in %s", dir)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("serve API: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("serve API: %w", err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		_ = os.Remove(path)
		return err
	case err := <-errc:
		_ = os.Remove(path)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve API: %w", err)
	}
}

// routes lists every endpoint (docs/json.md).
func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /v1/status", s.status)
	m.HandleFunc("GET /v1/peers", s.peers)
	m.HandleFunc("POST /v1/offline", s.setOnline(false))
	m.HandleFunc("POST /v1/online", s.setOnline(true))
	m.HandleFunc("GET /v1/schema", s.schema)
	m.HandleFunc("POST /v1/schema", s.applySchema)
	m.HandleFunc("GET /v1/records/{collection}/{id}", s.get)
	m.HandleFunc("PUT /v1/records/{collection}/{id}", s.put)
	m.HandleFunc("DELETE /v1/records/{collection}/{id}", s.delete)
	m.HandleFunc("GET /v1/records/{collection}", s.list)
	m.HandleFunc("POST /v1/import/{collection}", s.importLines)
	m.HandleFunc("GET /v1/conflicts", s.conflicts)
	m.HandleFunc("POST /v1/resolve/{collection}/{id}/{field}", s.resolve)
	m.HandleFunc("GET /v1/history/{collection}/{id}", s.history)
	m.HandleFunc("GET /v1/sync", s.syncState)
	m.HandleFunc("POST /v1/sync", s.syncNow)
	m.HandleFunc("GET /v1/diff/{peer}", s.diff)
	m.HandleFunc("POST /v1/check", s.check)
	m.HandleFunc("POST /v1/compact", s.compact)
	m.HandleFunc("GET /v1/members", s.members)
	m.HandleFunc("GET /v1/ignored", s.ignored)
	m.HandleFunc("GET /v1/workflows", s.workflows)
	m.HandleFunc("POST /v1/workflows/retry", s.retryWorkflows)
	m.HandleFunc("GET /v1/duplicates", s.duplicates)
	m.HandleFunc("POST /v1/merge/{collection}", s.merge)
	m.HandleFunc("POST /v1/invites", s.invite)
	m.HandleFunc("POST /v1/members/{member}/revoke", s.revoke)
	m.HandleFunc("GET /v1/channels", s.channels)
	m.HandleFunc("POST /v1/grants", s.grant(true))
	m.HandleFunc("POST /v1/ungrants", s.grant(false))
	m.HandleFunc("POST /v1/subscribe", s.subscribe(true))
	m.HandleFunc("POST /v1/unsubscribe", s.subscribe(false))
	m.Handle("GET /metrics", s.b.Metrics())
}
