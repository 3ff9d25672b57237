package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/disk"
	"github.com/ferry-crm/ferry/schema"
)

func TestStatusOf(t *testing.T) {
	fe := &schema.FieldError{Collection: "contacts", ID: "c1", Field: "amount", Reason: "want a number"}
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"not found", crdt.ErrNotFound, 404},
		{"not found wrapped", fmt.Errorf("get contacts/c1: %w", crdt.ErrNotFound), 404},
		{"no conflict", fmt.Errorf("resolve: %w", crdt.ErrNoConflict), 409},
		{"conflict changed", crdt.ErrConflictChanged, 409},
		{"conflict changed wrapped", fmt.Errorf("x: %w", crdt.ErrConflictChanged), 409},
		{"forbidden", crdt.ErrForbidden, 403},
		{"forbidden wrapped", fmt.Errorf("put prices/p1: %w", crdt.ErrForbidden), 403},
		{"not member", fmt.Errorf("put: %w", crdt.ErrNotMember), 403},
		{"disk low", disk.ErrLow, 507},
		{"disk low not written", fmt.Errorf("%w: %w", crdt.ErrNotWritten, disk.ErrLow), 507},
		{"ENOSPC", syscall.ENOSPC, 507},
		{"ENOSPC wrapped", fmt.Errorf("commit: %w", &fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}), 507},
		{"field error", fe, 400},
		{"field error wrapped", fmt.Errorf("line 3: %w", fe), 400},
		{"bad request", BadRequest(errors.New("nope")), 400},
		{"bad request wrapped", fmt.Errorf("x: %w", BadRequest(ErrNoNode)), 400},
		{"bad resolution", fmt.Errorf("x: %w", crdt.ErrBadResolution), 400},
		{"too large", crdt.ErrTooLarge, 400},
		{"no fields", crdt.ErrNoFields, 400},
		{"unknown collection", schema.ErrUnknownCollection, 400},
		{"invalid schema", schema.ErrInvalidSchema, 400},
		{"destructive change", schema.ErrDestructiveChange, 400},
		{"plain", errors.New("boom"), 500},
		{"no node unmarked", ErrNoNode, 500},
		{"other errno", syscall.EIO, 500},
	}
	for _, tc := range cases {
		if got := statusOf(tc.err); got != tc.want {
			t.Errorf("%s: statusOf(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
	// BadRequest keeps the error it marks.
	br := BadRequest(ErrOffline)
	if !errors.Is(br, ErrOffline) || br.Error() != ErrOffline.Error() {
		t.Errorf("BadRequest(ErrOffline) = %v, not ErrOffline", br)
	}
}

// TestWriteError: every error answer is {"error": message} with its status.
func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	writeError(w, fmt.Errorf("put contacts/c1: %w", crdt.ErrForbidden))
	a := answer{code: w.Code, body: w.Body.String(), header: w.Header()}
	if msg := a.wantError(t, http.StatusForbidden); msg != "put contacts/c1: not allowed" {
		t.Errorf("message %q", msg)
	}
}

func TestStatusAndOnline(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	b.status = apijson.Status{PeerID: "12D3KooWtest", Name: "office", Role: "office", Running: true, Heads: []string{"bafyx"}, DAGHeight: 7}
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PeerID != "12D3KooWtest" || st.Name != "office" || !st.Running || !st.Online || st.DAGHeight != 7 || len(st.Heads) != 1 {
		t.Errorf("status %+v", st)
	}

	var on map[string]bool
	call(t, srv, "POST", "/v1/offline", "").wantJSON(t, &on)
	if len(on) != 1 || on["online"] {
		t.Errorf("offline answers %v", on)
	}
	if st, _ := c.Status(ctx); st.Online {
		t.Error("still online after /v1/offline")
	}
	if err := c.SetOffline(ctx, false); err != nil {
		t.Fatal(err)
	}
	if b.lastCall() != "online" {
		t.Errorf("backend asked %q, want online", b.lastCall())
	}
	if st, _ := c.Status(ctx); !st.Online {
		t.Error("offline after SetOffline(false)")
	}
	if err := c.SetOffline(ctx, true); err != nil || b.lastCall() != "offline" {
		t.Errorf("SetOffline(true): %v, backend asked %q", err, b.lastCall())
	}
	b.setErr = errNoNetwork
	err = c.SetOffline(ctx, false)
	wantAPIError(t, err, http.StatusBadRequest, "no node is running")

	// Wrong methods and unknown paths are the router's.
	if a := call(t, srv, "GET", "/v1/offline", ""); a.code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/offline: %d", a.code)
	}
	if a := call(t, srv, "GET", "/v1/nothing", ""); a.code != http.StatusNotFound {
		t.Errorf("GET /v1/nothing: %d", a.code)
	}
	err = c.Do(ctx, "GET", "/v2/status", nil, nil)
	wantAPIError(t, err, http.StatusNotFound, "GET /v2/status: 404")
}

func TestPeersAndSync(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	// Without network: the Backend's 400.
	_, err := c.Peers(ctx)
	wantAPIError(t, err, http.StatusBadRequest, ErrNoNode.Error())
	_, err = c.SyncState(ctx)
	wantAPIError(t, err, http.StatusBadRequest, "no node is running")
	_, err = c.SyncNow(ctx)
	wantAPIError(t, err, http.StatusBadRequest, "no node is running")
	_, err = c.Diff(ctx, "office")
	wantAPIError(t, err, http.StatusBadRequest, "no node is running")

	last := time.Date(2026, 11, 22, 10, 41, 1, 0, time.UTC)
	b.peers = []apijson.PeerInfo{{ID: "P1", Name: "laptop1", Connected: true, LastSync: last}, {ID: "P2", Configured: true}}
	ps, err := c.Peers(ctx)
	if err != nil || len(ps) != 2 || ps[0].Name != "laptop1" || !ps[0].LastSync.Equal(last) || !ps[1].Configured {
		t.Errorf("peers %+v, %v", ps, err)
	}

	// No peer: empty lists, never null.
	b.syncState = &apijson.SyncState{Digest: "d1", Online: true}
	a := call(t, srv, "GET", "/v1/sync", "")
	a.wantJSON(t, nil)
	if strings.TrimSpace(a.body) != `{"digest":"d1","online":true,"peers":[]}` {
		t.Errorf("sync state answers %s", a.body)
	}
	b.syncNow = func() ([]apijson.PeerSync, error) { return nil, nil }
	a = call(t, srv, "POST", "/v1/sync", "")
	a.wantJSON(t, nil)
	if strings.TrimSpace(a.body) != `{"peers":[]}` {
		t.Errorf("sync now answers %s", a.body)
	}

	b.syncState = &apijson.SyncState{Digest: "d1", Online: true, Peers: []apijson.PeerSync{{Peer: "P1", InSync: true, Digest: "d1"}}}
	st, err := c.SyncState(ctx)
	if err != nil || st.Digest != "d1" || len(st.Peers) != 1 || !st.Peers[0].InSync {
		t.Errorf("sync state %+v, %v", st, err)
	}
	b.syncNow = func() ([]apijson.PeerSync, error) {
		return []apijson.PeerSync{{Peer: "P1"}, {Peer: "P2", Error: "timeout"}}, nil
	}
	if ps, err := c.SyncNow(ctx); err != nil || len(ps) != 2 || ps[1].Error != "timeout" {
		t.Errorf("sync now %+v, %v", ps, err)
	}
	b.syncNow = func() ([]apijson.PeerSync, error) { return nil, BadRequest(ErrOffline) }
	_, err = c.SyncNow(ctx)
	wantAPIError(t, err, http.StatusBadRequest, "the node is offline")

	// Diff gets the peer as given, escapes and all.
	b.diff = func(peer string) (apijson.DiffResult, error) {
		if peer == "ghost" {
			return apijson.DiffResult{}, errors.New("peer ghost is not connected")
		}
		return apijson.DiffResult{Peer: "P1", PeerName: peer, Digest: "d1", PeerDigest: "d2",
			Records: []apijson.DiffRecord{{Collection: "contacts", ID: "c2", There: true}}}, nil
	}
	for _, peer := range []string{"office", "laptop 1", "a/b", "12D3KooW.x"} {
		d, err := c.Diff(ctx, peer)
		if err != nil || d.PeerName != peer || d.Identical || len(d.Records) != 1 || !d.Records[0].There {
			t.Errorf("diff %q: %+v, %v", peer, d, err)
		}
		if b.lastCall() != "diff "+peer {
			t.Errorf("backend asked %q, want diff %s", b.lastCall(), peer)
		}
	}
	_, err = c.Diff(ctx, "ghost")
	wantAPIError(t, err, http.StatusInternalServerError, "peer ghost is not connected")
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "A"}, nil); err != nil {
		t.Fatal(err)
	}

	rep, err := c.Check(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Heads != 1 || rep.Blocks < 2 || len(rep.Problems) != 0 || b.lastCall() != "check" {
		t.Errorf("check: %+v (backend asked %q)", rep, b.lastCall())
	}
	if rep, err := c.Check(ctx, true); err != nil || !rep.OK || b.lastCall() != "check repair" {
		t.Errorf("check --repair: %+v, %v (backend asked %q)", rep, err, b.lastCall())
	}

	ok := []struct {
		query, call string
	}{
		{"", "check"},
		{"?repair=1", "check repair"},
		{"?repair=true", "check repair"},
		{"?repair=0", "check"},
		{"?repair=false", "check"},
	}
	for _, tc := range ok {
		var rep crdt.CheckReport
		call(t, srv, "POST", "/v1/check"+tc.query, "").wantJSON(t, &rep)
		if !rep.OK || b.lastCall() != tc.call {
			t.Errorf("POST /v1/check%s: %+v, backend asked %q, want %q", tc.query, rep, b.lastCall(), tc.call)
		}
	}
	bad := []struct {
		query string
		parts []string
	}{
		{"?fix=1", []string{`unknown query parameter "fix"`}},
		{"?repair=1&fix=1", []string{`"fix"`}},
		{"?repair=x", []string{`repair="x"`}},
		{"?repair=", []string{`repair=""`}},
		{"?repair=1&repair=1", []string{"repair given 2 times"}},
	}
	before := len(b.calls)
	for _, tc := range bad {
		call(t, srv, "POST", "/v1/check"+tc.query, "").wantError(t, http.StatusBadRequest, tc.parts...)
	}
	if len(b.calls) != before {
		t.Errorf("refused checks called the backend: %q", b.calls[before:])
	}
	if a := call(t, srv, "GET", "/v1/check", ""); a.code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/check: %d", a.code)
	}

	b.checkErr = errors.New("scan failed")
	_, err = c.Check(ctx, false)
	wantAPIError(t, err, http.StatusInternalServerError, "scan failed")
}

func TestMembers(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	_, err := c.Members(ctx)
	wantAPIError(t, err, http.StatusBadRequest, "no node is running")
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	b.members = []apijson.Member{{PeerID: "P0", Name: "office", Role: "office", Founder: true, Self: true},
		{PeerID: "P1", Name: "laptop1", Role: "laptop", Revoked: true, RevokedAt: &at, By: "P0"}}
	ms, err := c.Members(ctx)
	if err != nil || len(ms) != 2 || !ms[0].Founder || !ms[1].Revoked || !ms[1].RevokedAt.Equal(at) {
		t.Errorf("members %+v, %v", ms, err)
	}

	// Revoke: the member as given; its id back.
	b.revoke = func(m string) (string, error) {
		switch m {
		case "office":
			return "", fmt.Errorf("revoke P0: %w: the founding office cannot be revoked", crdt.ErrForbidden)
		case "nobody":
			return "", BadRequest(fmt.Errorf("no member %q", m))
		}
		return "P1", nil
	}
	for _, m := range []string{"laptop1", "laptop 1", "P1"} {
		if id, err := c.Revoke(ctx, m); err != nil || id != "P1" || b.lastCall() != "revoke "+m {
			t.Errorf("revoke %q: %q, %v (backend asked %q)", m, id, err, b.lastCall())
		}
	}
	var rv map[string]string
	call(t, srv, "POST", "/v1/members/laptop1/revoke", "").wantJSON(t, &rv)
	if len(rv) != 1 || rv["revoked"] != "P1" {
		t.Errorf("revoke answers %v", rv)
	}
	_, err = c.Revoke(ctx, "office")
	wantAPIError(t, err, http.StatusForbidden, "cannot be revoked")
	_, err = c.Revoke(ctx, "nobody")
	wantAPIError(t, err, http.StatusBadRequest, `no member "nobody"`)
}

func TestInvite(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)

	_, err := c.Invite(ctx, apijson.InviteRequest{Name: "laptop1"})
	wantAPIError(t, err, http.StatusBadRequest, "no node is running")
	if b.lastCall() != "invite laptop1  24h0m0s" {
		t.Errorf("backend asked %q: want the default ttl of 24h", b.lastCall())
	}

	exp := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	b.invite = func(name, role string, ttl time.Duration) (apijson.InviteResponse, error) {
		if role == "king" {
			return apijson.InviteResponse{}, BadRequest(fmt.Errorf("unknown role %q", role))
		}
		return apijson.InviteResponse{Token: "ferry-invite-1.x", Name: name, Role: role, Expires: exp, Office: "P0",
			Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}, nil
	}
	res, err := c.Invite(ctx, apijson.InviteRequest{Name: "laptop1", Role: "laptop", Expires: "90m"})
	if err != nil || res.Token != "ferry-invite-1.x" || res.Name != "laptop1" || res.Role != "laptop" || !res.Expires.Equal(exp) || len(res.Addrs) != 1 {
		t.Errorf("invite %+v, %v", res, err)
	}
	if b.lastCall() != "invite laptop1 laptop 1h30m0s" {
		t.Errorf("backend asked %q", b.lastCall())
	}

	before := len(b.calls)
	bad := []struct {
		body  string
		parts []string
	}{
		{`{"name": "x", "expires": "soon"}`, []string{`expires "soon"`, "positive duration"}},
		{`{"name": "x", "expires": "-1h"}`, []string{`expires "-1h"`}},
		{`{"name": "x", "expires": "0s"}`, []string{`expires "0s"`}},
		{`{"name": `, []string{"bad invite request"}},
		{``, []string{"bad invite request"}},
		{`{"name": 3}`, []string{"bad invite request"}},
	}
	for _, tc := range bad {
		call(t, srv, "POST", "/v1/invites", tc.body).wantError(t, http.StatusBadRequest, tc.parts...)
	}
	if len(b.calls) != before {
		t.Errorf("refused invites called the backend: %q", b.calls[before:])
	}
	_, err = c.Invite(ctx, apijson.InviteRequest{Name: "x", Expires: "1 day"})
	wantAPIError(t, err, http.StatusBadRequest, `expires "1 day"`)
	_, err = c.Invite(ctx, apijson.InviteRequest{Name: "x", Role: "king"})
	wantAPIError(t, err, http.StatusBadRequest, `unknown role "king"`)
}

func TestMetrics(t *testing.T) {
	srv := NewServer(newTestBackend(t, storeOpts{}), testLogger())
	a := call(t, srv, "GET", "/metrics", "")
	if a.code != http.StatusOK || !strings.Contains(a.body, "ferry_test_total 7") ||
		!strings.HasPrefix(a.header.Get("Content-Type"), "text/plain") {
		t.Errorf("metrics: %d %q %q", a.code, a.header.Get("Content-Type"), a.body)
	}
	// Through a client, the handler's answer as is.
	resp, err := NewClient(srv).send(context.Background(), "GET", "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(data), "ferry_test_total 7") {
		t.Errorf("metrics through the client: %q", data)
	}
}

func TestCompact(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(t, storeOpts{})
	srv := NewServer(b, testLogger())
	c := NewClient(srv)
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "A"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "contacts", "c1", map[string]any{"last_name": "B"}, nil); err != nil {
		t.Fatal(err)
	}
	res, err := c.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Epoch, "1-") || res.Prev != "0" || res.Records == 0 || b.lastCall() != "compact" {
		t.Errorf("compact: %+v (backend asked %q)", res, b.lastCall())
	}
	rec, err := b.store.Get(ctx, "contacts", "c1")
	if err != nil || rec.Values()["last_name"] != "B" {
		t.Errorf("after compaction: %+v %v", rec, err)
	}
	if b.store.Epoch().String() != res.Epoch {
		t.Errorf("store in epoch %s, compaction said %s", b.store.Epoch(), res.Epoch)
	}
	b.calls = nil
	call(t, srv, "POST", "/v1/compact?now=1", "").wantError(t, http.StatusBadRequest, "takes no query parameters")
	if len(b.calls) != 0 || b.store.Epoch().String() != res.Epoch {
		t.Error("a refused compaction reached the backend")
	}
}
