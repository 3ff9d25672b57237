package api

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
)

// Tests of bugs found and fixed: each would fail again if the bug came back.

// doNoPanic is c.Do that turns a panic into an error it reports.
func doNoPanic(c *Client, request string) (panicked any, err error) {
	method, path, _ := strings.Cut(request, " ")
	defer func() { panicked = recover() }()
	return nil, c.Do(context.Background(), method, path, nil, nil)
}

// TestInProcessRequestWithoutBody: over the socket, a request without a
// body to an endpoint that reads one is a 400 (the server gives handlers
// http.NoBody); in process too (handlerTransport gives it http.NoBody).
func TestInProcessRequestWithoutBody(t *testing.T) {
	b := newTestBackend(t, storeOpts{})
	c := newTestClient(b)
	for _, path := range []string{"POST /v1/invites", "PUT /v1/records/contacts/c1", "POST /v1/resolve/contacts/c1/phone"} {
		t.Run(path, func(t *testing.T) {
			panicked, err := doNoPanic(c, path)
			if panicked != nil {
				t.Fatalf("handlerTransport.RoundTrip passed a nil request Body to the handler: %s without a body panics in process: %v", path, panicked)
			}
			wantAPIError(t, err, http.StatusBadRequest)
		})
	}
	for _, path := range []string{"POST /v1/schema", "POST /v1/import/contacts"} {
		t.Run(path, func(t *testing.T) {
			if panicked, _ := doNoPanic(c, path); panicked != nil {
				t.Fatalf("handlerTransport.RoundTrip passed a nil request Body to the handler: %s without a body panics in process: %v", path, panicked)
			}
		})
	}
}

// TestDotNames: peers and members are named by node names, which may be
// "." or "..": Client.Diff and Client.Revoke escape dots too
// (escapeSegment), or the router would clean the path and redirect.
func TestDotNames(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	b.diff = func(peer string) (apijson.DiffResult, error) { return apijson.DiffResult{PeerName: peer}, nil }
	b.revoke = func(m string) (string, error) { return "id of " + m, nil }
	c := newTestClient(b)
	for _, name := range []string{".", ".."} {
		t.Run("diff "+name, func(t *testing.T) {
			d, err := c.Diff(ctx, name)
			if e, ok := err.(*Error); ok && e.Status == http.StatusTemporaryRedirect {
				t.Fatalf("Diff(%q) is a %d: the name is not escaped as a path segment", name, e.Status)
			}
			if err != nil || d.PeerName != name {
				t.Errorf("Diff(%q): %+v, %v", name, d, err)
			}
		})
		t.Run("revoke "+name, func(t *testing.T) {
			id, err := c.Revoke(ctx, name)
			if e, ok := err.(*Error); ok && e.Status == http.StatusTemporaryRedirect {
				t.Fatalf("Revoke(%q) is a %d: the name is not escaped as a path segment", name, e.Status)
			}
			if err != nil || id != "id of "+name {
				t.Errorf("Revoke(%q): %q, %v", name, id, err)
			}
		})
	}
}
