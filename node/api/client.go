package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// Client talks to a node's local API: a running node through its socket
// (Dial), or an API served in this process (NewClient). Its methods are
// the endpoints of docs/json.md.
type Client struct {
	hc *http.Client
	// allowDuplicates: imports write likely duplicates (AllowingDuplicates).
	allowDuplicates bool
}

// AllowingDuplicates returns a client whose imports write likely
// duplicates instead of having them refused (docs/duplicates.md).
func (c *Client) AllowingDuplicates() *Client {
	cc := *c
	cc.allowDuplicates = true
	return &cc
}

// Error is an error answered by the node, with its HTTP status.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Dial connects to the node running in the data dir dir. It fails with
// ErrNoNode when no node answers on the dir's socket.
func Dial(dir string) (*Client, error) {
	sock := filepath.Join(dir, datadir.SocketFile)
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", dir, ErrNoNode)
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &Client{hc: &http.Client{Transport: tr, CheckRedirect: noRedirects}}, nil
}

// NewClient returns a client of an API served in this process (a Server,
// or any handler of the same routes).
func NewClient(h http.Handler) *Client {
	return &Client{hc: &http.Client{Transport: handlerTransport{h}, CheckRedirect: noRedirects}}
}

// noRedirects turns a redirect into an error, never into the answer of
// another request.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// handlerTransport serves requests with an in-process handler.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// Hand the handler a request as a server would: a non-nil Body, and
	// RequestURI set. RoundTrip owns (and closes) the caller's body.
	r := req.Clone(req.Context())
	if r.Body == nil {
		r.Body = http.NoBody
	} else {
		defer req.Body.Close()
	}
	r.RequestURI = req.URL.RequestURI()
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// Status is the node's identity, network and replication state.
func (c *Client) Status(ctx context.Context) (st apijson.Status, err error) {
	err = c.Do(ctx, "GET", "/v1/status", nil, &st)
	return st, err
}

// Peers lists the peers the node knows.
func (c *Client) Peers(ctx context.Context) (ps []apijson.PeerInfo, err error) {
	err = c.Do(ctx, "GET", "/v1/peers", nil, &ps)
	return ps, err
}

// SetOffline takes the node off the network, or back on.
func (c *Client) SetOffline(ctx context.Context, offline bool) error {
	use := "online"
	if offline {
		use = "offline"
	}
	return c.Do(ctx, "POST", "/v1/"+use, nil, nil)
}

// Schema returns the replicated schema as JSON (schema.Schema's form).
func (c *Client) Schema(ctx context.Context) (raw json.RawMessage, err error) {
	err = c.Do(ctx, "GET", "/v1/schema", nil, &raw)
	return raw, err
}

// ApplySchema applies a schema file's content (YAML or JSON) and returns
// the collections it changed.
func (c *Client) ApplySchema(ctx context.Context, data []byte) ([]string, error) {
	var res struct {
		Changed []string `json:"changed"`
	}
	err := c.Do(ctx, "POST", "/v1/schema", bytes.NewReader(data), &res)
	return res.Changed, err
}

// Get reads one record.
func (c *Client) Get(ctx context.Context, collection, id string) (rec apijson.Record, err error) {
	err = c.Do(ctx, "GET", recordPath(collection, id), nil, &rec)
	return rec, err
}

// Put writes fields of one record: typed values, and text parsed by the
// fields' types (either may be nil).
func (c *Client) Put(ctx context.Context, collection, id string, fields map[string]any, text map[string]string) (res apijson.PutResponse, err error) {
	body, err := json.Marshal(apijson.PutRequest{Fields: fields, Text: text})
	if err != nil {
		return res, fmt.Errorf("put %s/%s: %w", collection, id, err)
	}
	err = c.Do(ctx, "PUT", recordPath(collection, id), bytes.NewReader(body), &res)
	return res, err
}

// Delete deletes a record and returns the delete's op id.
func (c *Client) Delete(ctx context.Context, collection, id string) (string, error) {
	var res struct {
		Op string `json:"op"`
	}
	err := c.Do(ctx, "DELETE", recordPath(collection, id), nil, &res)
	return res.Op, err
}

// ListOptions filter and shape a listing.
type ListOptions struct {
	// Where keeps records whose field equals a value: "FIELD=VALUE", the
	// value parsed by the field's type.
	Where string
	// Export gives import-compatible lines instead of apijson.Record.
	Export bool
}

// List calls fn with every record of a collection, one JSON line each
// (apijson.Record, or an import line with Export).
func (c *Client) List(ctx context.Context, collection string, opts ListOptions, fn func(line []byte) error) error {
	q := url.Values{}
	if opts.Where != "" {
		q.Set("where", opts.Where)
	}
	if opts.Export {
		q.Set("format", "export")
	}
	path := "/v1/records/" + url.PathEscape(collection)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.Lines(ctx, "GET", path, nil, fn)
}

// Import sends JSON Lines (one object with an "id" member per line) and
// calls progress with every progress line; it returns the final result.
// opts asks for a dry run, or to leave out invalid records. lines is sent
// as it is read (it may be an io.Pipe written while the import is sent):
// the node spools it and reads it only once it has all of it, so an input
// that fails part-way (an error from lines) writes nothing. Past the
// node's limit (apijson.MaxImportBody) it fails with ErrImportTooLarge.
func (c *Client) Import(ctx context.Context, collection string, lines io.Reader, opts crdt.ImportOptions, progress func(apijson.ImportProgress)) (crdt.ImportResult, error) {
	body := &importBody{r: lines, left: maxImportBody}
	res, err := c.importLines(ctx, collection, body, opts, progress)
	if body.over.Load() {
		return crdt.ImportResult{}, fmt.Errorf("%w of %s (split it into smaller files)", ErrImportTooLarge, byteSize(maxImportBody))
	}
	return res, err
}

// ErrImportTooLarge: an import's input is over the node's limit.
var ErrImportTooLarge = errors.New("the input is over the node's import limit")

// importBody is the body of an import, read up to a limit.
type importBody struct {
	r    io.Reader
	left int64
	// over: more than the limit was read. Atomic: the transport may still
	// read the body after the answer came.
	over atomic.Bool
}

func (b *importBody) Read(p []byte) (int, error) {
	if b.over.Load() {
		return 0, ErrImportTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		n, b.left = int(b.left), 0
		b.over.Store(true)
		return n, ErrImportTooLarge
	}
	b.left -= int64(n)
	return n, err
}

func (c *Client) importLines(ctx context.Context, collection string, lines io.Reader, opts crdt.ImportOptions, progress func(apijson.ImportProgress)) (crdt.ImportResult, error) {
	var res *crdt.ImportResult
	q := url.Values{}
	if opts.DryRun {
		q.Set("dry_run", "1")
	}
	if opts.SkipInvalid {
		q.Set("skip_invalid", "1")
	}
	if c.allowDuplicates {
		q.Set("allow_duplicate", "1")
	}
	path := "/v1/import/" + url.PathEscape(collection)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	err := c.Lines(ctx, "POST", path, lines, func(line []byte) error {
		var p apijson.ImportProgress
		if err := json.Unmarshal(line, &p); err != nil {
			return fmt.Errorf("import: bad progress line: %w", err)
		}
		if progress != nil {
			progress(p)
		}
		if p.Error != "" {
			return &ImportError{Done: p.Done, Total: p.Total, Msg: p.Error}
		}
		if p.Result != nil {
			res = p.Result
		}
		return nil
	})
	if err != nil {
		return crdt.ImportResult{}, err
	}
	if res == nil {
		return crdt.ImportResult{}, errors.New("import: the node ended the answer without a result")
	}
	return *res, nil
}

// ImportError is an import stopped part-way: Done of Total records were
// written before it.
type ImportError struct {
	Done, Total int
	Msg         string
}

func (e *ImportError) Error() string {
	return fmt.Sprintf("import stopped after %d of %d records: %s", e.Done, e.Total, e.Msg)
}

// Conflicts lists conflicts, of one collection if given, open ones only if
// asked.
func (c *Client) Conflicts(ctx context.Context, collection string, onlyOpen bool) (cs []apijson.Conflict, err error) {
	q := url.Values{}
	if collection != "" {
		q.Set("collection", collection)
	}
	if onlyOpen {
		q.Set("open", "true")
	}
	err = c.Do(ctx, "GET", "/v1/conflicts?"+q.Encode(), nil, &cs)
	return cs, err
}

// Resolve decides a conflict; it returns the op written, if any.
func (c *Client) Resolve(ctx context.Context, collection, id, field string, req apijson.ResolveRequest) (string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("resolve: %w", err)
	}
	var res struct {
		Op string `json:"op"`
	}
	path := "/v1/resolve/" + url.PathEscape(collection) + "/" + escapeSegment(id) + "/" + url.PathEscape(field)
	err = c.Do(ctx, "POST", path, bytes.NewReader(body), &res)
	return res.Op, err
}

// History lists a record's operations, of one field if given.
func (c *Client) History(ctx context.Context, collection, id, field string) (h []apijson.History, err error) {
	path := "/v1/history/" + url.PathEscape(collection) + "/" + escapeSegment(id)
	if field != "" {
		path += "?field=" + url.QueryEscape(field)
	}
	err = c.Do(ctx, "GET", path, nil, &h)
	return h, err
}

// SyncState compares the node's digest with every connected peer's.
func (c *Client) SyncState(ctx context.Context) (st apijson.SyncState, err error) {
	err = c.Do(ctx, "GET", "/v1/sync", nil, &st)
	return st, err
}

// SyncNow exchanges heads with every connected peer at once.
func (c *Client) SyncNow(ctx context.Context) ([]apijson.PeerSync, error) {
	var res struct {
		Peers []apijson.PeerSync `json:"peers"`
	}
	err := c.Do(ctx, "POST", "/v1/sync", nil, &res)
	return res.Peers, err
}

// Diff compares the node's records with a connected peer's (id or name).
func (c *Client) Diff(ctx context.Context, peer string) (res apijson.DiffResult, err error) {
	err = c.Do(ctx, "GET", "/v1/diff/"+escapeSegment(peer), nil, &res)
	return res, err
}

// Check checks the store and, with repair, repairs it first.
func (c *Client) Check(ctx context.Context, repair bool) (*crdt.CheckReport, error) {
	path := "/v1/check"
	if repair {
		path += "?repair=1"
	}
	var rep crdt.CheckReport
	if err := c.Do(ctx, "POST", path, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Compact starts a new epoch of history on an office node.
func (c *Client) Compact(ctx context.Context) (apijson.CompactResult, error) {
	var res apijson.CompactResult
	err := c.Do(ctx, "POST", "/v1/compact", nil, &res)
	return res, err
}

// Members lists the network's members.
func (c *Client) Members(ctx context.Context) (ms []apijson.Member, err error) {
	err = c.Do(ctx, "GET", "/v1/members", nil, &ms)
	return ms, err
}

// Ignored lists the operations the node ignores.
func (c *Client) Ignored(ctx context.Context) (ig []apijson.Ignored, err error) {
	err = c.Do(ctx, "GET", "/v1/ignored", nil, &ig)
	return ig, err
}

// Invite creates an invitation (office nodes only).
func (c *Client) Invite(ctx context.Context, req apijson.InviteRequest) (res apijson.InviteResponse, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return res, fmt.Errorf("invite: %w", err)
	}
	err = c.Do(ctx, "POST", "/v1/invites", bytes.NewReader(body), &res)
	return res, err
}

// Revoke revokes a member (peer id or name) and returns its peer id.
func (c *Client) Revoke(ctx context.Context, member string) (string, error) {
	var res struct {
		Revoked string `json:"revoked"`
	}
	err := c.Do(ctx, "POST", "/v1/members/"+escapeSegment(member)+"/revoke", nil, &res)
	return res.Revoked, err
}

// Channels lists the channels the node holds, its grants and every channel
// known.
func (c *Client) Channels(ctx context.Context) (cs apijson.Channels, err error) {
	err = c.Do(ctx, "GET", "/v1/channels", nil, &cs)
	return cs, err
}

// Grant grants a member channels (grant true) or ends its grants of them
// (an office only), and returns the member's grants after.
func (c *Client) Grant(ctx context.Context, member string, channels []string, grant bool) (res apijson.GrantResult, err error) {
	body, err := json.Marshal(apijson.GrantRequest{Member: member, Channels: channels})
	if err != nil {
		return res, fmt.Errorf("grant: %w", err)
	}
	path := "/v1/grants"
	if !grant {
		path = "/v1/ungrants"
	}
	err = c.Do(ctx, "POST", path, bytes.NewReader(body), &res)
	return res, err
}

// Subscribe takes channels offline again (subscribe true) or stops taking
// them (a laptop only), and returns the channels taken after (nil: every
// channel granted).
func (c *Client) Subscribe(ctx context.Context, channels []string, subscribe bool) ([]string, error) {
	body, err := json.Marshal(apijson.SubscribeRequest{Channels: channels})
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	path := "/v1/subscribe"
	if !subscribe {
		path = "/v1/unsubscribe"
	}
	var res apijson.SubscribeRequest
	err = c.Do(ctx, "POST", path, bytes.NewReader(body), &res)
	return res.Channels, err
}

// Do sends a request and decodes a JSON answer into out (unless nil). An
// answer with an error status is an *Error.
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, out any) error {
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

// Lines sends a request whose answer is JSON Lines and calls fn with each
// line; a line {"error": ...} ends the stream with that error.
func (c *Client) Lines(ctx context.Context, method, path string, body io.Reader, fn func(line []byte) error) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte(`{"error":`)) {
			var e apijson.ErrorBody
			if json.Unmarshal(line, &e) == nil {
				return errors.New(e.Error)
			}
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// send sends a request and returns the response when it succeeded.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://ferry"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach node: %w", err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e apijson.ErrorBody
		data, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(data))
		}
		return nil, &Error{Status: resp.StatusCode, Msg: e.Error}
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
