package gui

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

// testServer serves a page of fake in a temp data dir until the test ends.
type testServer struct {
	t    *testing.T
	s    *Server
	dir  string
	api  *fakeAPI
	base string // http://127.0.0.1:PORT
	hc   *http.Client
}

func startTest(t *testing.T) *testServer {
	t.Helper()
	f := newFakeAPI()
	dir := t.TempDir()
	s, err := Listen(Config{Listen: "127.0.0.1:0", Dir: dir, API: f, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, AddrFile)); !os.IsNotExist(err) {
			t.Errorf("%s left behind after Serve: %v", AddrFile, err)
		}
	})
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &testServer{t: t, s: s, dir: dir, api: f, base: "http://" + s.Addr(), hc: hc}
}

// do sends a request; mod changes it first. It returns the status and
// body.
func (ts *testServer) do(method, path string, form url.Values, mod func(*http.Request)) (*http.Response, string) {
	ts.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, ts.base+path, body)
	if err != nil {
		ts.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if mod != nil {
		mod(req)
	}
	resp, err := ts.hc.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// login follows the login link and returns the session cookie.
func (ts *testServer) login() *http.Cookie {
	ts.t.Helper()
	u, err := ReadLogin(ts.dir)
	if err != nil {
		ts.t.Fatal(err)
	}
	if u != ts.s.LoginURL() {
		ts.t.Fatalf("ReadLogin %q, want %q", u, ts.s.LoginURL())
	}
	resp, err := ts.hc.Get(u)
	if err != nil {
		ts.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		ts.t.Fatalf("login: %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, "ferry_session_") {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
				ts.t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", c)
			}
			return c
		}
	}
	ts.t.Fatalf("login set no session cookie: %v", resp.Header)
	return nil
}

func withCookie(c *http.Cookie) func(*http.Request) {
	return func(r *http.Request) { r.AddCookie(c) }
}

func TestGUICheckListen(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8384": "127.0.0.1:8384",
		"localhost:0":    "127.0.0.1:0",
		"[::1]:9000":     "[::1]:9000",
		"127.0.0.2:80":   "127.0.0.2:80",
	} {
		got, err := CheckListen(in)
		if err != nil || got != want {
			t.Errorf("CheckListen(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"0.0.0.0:8384":     "loopback address only",
		"192.168.1.20:80":  "loopback address only",
		"[::]:8384":        "loopback address only",
		":8384":            "loopback address only",
		"example.com:8384": "loopback address only",
		"127.0.0.1":        "want a loopback address and a port",
		"127.0.0.1:99999":  "not a number from 0 to 65535",
		"127.0.0.1:http":   "not a number from 0 to 65535",
	} {
		_, err := CheckListen(in)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("CheckListen(%q): %v, want an error saying %q", in, err, why)
		}
	}
	// Listen refuses it before anything is written in the data dir.
	dir := t.TempDir()
	if _, err := Listen(Config{Listen: "0.0.0.0:0", Dir: dir, API: newFakeAPI()}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("Listen on 0.0.0.0: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused Listen left %v", entries)
	}
}

func TestGUITokenFile(t *testing.T) {
	ts := startTest(t)
	fi, err := os.Stat(filepath.Join(ts.dir, TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %o, want 600", TokenFile, fi.Mode().Perm())
	}
	addr, err := os.ReadFile(filepath.Join(ts.dir, AddrFile))
	if err != nil || strings.TrimSpace(string(addr)) != ts.s.Addr() {
		t.Errorf("%s = %q, %v; want %s", AddrFile, addr, err, ts.s.Addr())
	}
	// The same token on the next start, with a mode fixed if loosened.
	tok, _ := os.ReadFile(filepath.Join(ts.dir, TokenFile))
	if err := os.Chmod(filepath.Join(ts.dir, TokenFile), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := loadToken(ts.dir)
	if err != nil || again != strings.TrimSpace(string(tok)) {
		t.Errorf("token on a second load %q, %v; want %q", again, err, tok)
	}
	if fi, _ := os.Stat(filepath.Join(ts.dir, TokenFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode not fixed: %o", fi.Mode().Perm())
	}
}

func TestGUINeedsLogin(t *testing.T) {
	ts := startTest(t)
	for _, path := range []string{"/", "/records", "/records/contacts", "/records/contacts/c1", "/conflicts", "/members", "/events", "/static/style.css", "/static/app.js", "/nothing"} {
		resp, body := ts.do("GET", path, nil, nil)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "ferry gui") {
			t.Errorf("GET %s without a session: %d, want 401 and how to log in:\n%s", path, resp.StatusCode, body)
		}
		if strings.Contains(body, "office-secret-name") || strings.Contains(body, "laptop-anna") {
			t.Errorf("GET %s without a session shows the node's data:\n%s", path, body)
		}
	}
	// A wrong token, or a wrong cookie, do not log in.
	resp, body := ts.do("GET", "/login?token=nope", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "not valid") {
		t.Errorf("login with a wrong token: %d, cookies %v:\n%s", resp.StatusCode, resp.Cookies(), body)
	}
	c := ts.login()
	bad := *c
	bad.Value = strings.Repeat("A", len(c.Value))
	if resp, _ := ts.do("GET", "/", nil, withCookie(&bad)); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET / with a forged cookie: %d, want 401", resp.StatusCode)
	}
	// A POST without a session changes nothing.
	if resp, _ := ts.do("POST", "/offline", url.Values{"csrf": {ts.s.sec.csrf}}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /offline without a session: %d, want 401", resp.StatusCode)
	}
	// With the session: the page and its files.
	for _, path := range []string{"/", "/static/style.css", "/static/app.js"} {
		if resp, body := ts.do("GET", path, nil, withCookie(c)); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with a session: %d\n%s", path, resp.StatusCode, body)
		}
	}
	if calls, _ := ts.api.called(); len(calls) != 0 {
		t.Errorf("refused requests reached the node: %v", calls)
	}
}

func TestGUIRefusesForeignHostAndOrigin(t *testing.T) {
	ts := startTest(t)
	c := ts.login()
	_, port, _ := strings.Cut(ts.s.Addr(), ":")
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1:1", "localhost.evil.example:" + port, "[::1]:" + port} {
		resp, body := ts.do("GET", "/", nil, func(r *http.Request) { r.Host = host; r.AddCookie(c) })
		if resp.StatusCode != http.StatusForbidden || strings.Contains(body, "office-secret-name") {
			t.Errorf("GET / with Host %q: %d, want 403:\n%s", host, resp.StatusCode, body)
		}
	}
	// The login link through a rebound name sets no cookie.
	resp, _ := ts.do("GET", "/login?token="+ts.s.sec.token, nil, func(r *http.Request) { r.Host = "evil.example:" + port })
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("login with a foreign Host: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	// localhost and the address itself are fine.
	for _, host := range []string{"localhost:" + port, ts.s.Addr()} {
		if resp, _ := ts.do("GET", "/", nil, func(r *http.Request) { r.Host = host; r.AddCookie(c) }); resp.StatusCode != http.StatusOK {
			t.Errorf("GET / with Host %q: %d, want 200", host, resp.StatusCode)
		}
	}
	form := url.Values{"csrf": {ts.s.sec.csrf}}
	for _, origin := range []string{"http://evil.example", "null", "https://" + ts.s.Addr(), "http://127.0.0.1:1"} {
		resp, _ := ts.do("POST", "/offline", form, func(r *http.Request) { r.Header.Set("Origin", origin); r.AddCookie(c) })
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST /offline from Origin %q: %d, want 403", origin, resp.StatusCode)
		}
	}
	resp, _ = ts.do("POST", "/offline", form, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site"); r.AddCookie(c) })
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /offline, Sec-Fetch-Site cross-site: %d, want 403", resp.StatusCode)
	}
	if calls, _ := ts.api.called(); len(calls) != 0 {
		t.Errorf("refused requests reached the node: %v", calls)
	}
	// The page's own origin goes through.
	resp, _ = ts.do("POST", "/offline", form, func(r *http.Request) { r.Header.Set("Origin", ts.base); r.AddCookie(c) })
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("POST /offline from the page's origin: %d, want 303", resp.StatusCode)
	}
}

func TestGUICSRF(t *testing.T) {
	ts := startTest(t)
	c := ts.login()
	for name, form := range map[string]url.Values{
		"no token":    {},
		"wrong token": {"csrf": {"x" + ts.s.sec.csrf}},
		"the session": {"csrf": {c.Value}},
	} {
		for _, path := range []string{"/offline", "/online", "/sync", "/conflicts/resolve", "/members/invite", "/members/revoke"} {
			resp, body := ts.do("POST", path, form, withCookie(c))
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "security token") {
				t.Errorf("POST %s, %s: %d, want 403:\n%s", path, name, resp.StatusCode, body)
			}
		}
	}
	if calls, _ := ts.api.called(); len(calls) != 0 {
		t.Errorf("refused requests reached the node: %v", calls)
	}
	// The page's forms carry the token.
	_, body := ts.do("GET", "/", nil, withCookie(c))
	if !strings.Contains(body, `name="csrf" value="`+ts.s.sec.csrf+`"`) {
		t.Errorf("the overview's forms lack the CSRF token:\n%s", body)
	}
	resp, _ := ts.do("POST", "/offline", url.Values{"csrf": {ts.s.sec.csrf}}, withCookie(c))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/?done=offline" {
		t.Errorf("POST /offline: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The header form of the token works too (scripts).
	resp, _ = ts.do("POST", "/sync", nil, func(r *http.Request) { r.Header.Set("X-CSRF-Token", ts.s.sec.csrf); r.AddCookie(c) })
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("POST /sync with X-CSRF-Token: %d", resp.StatusCode)
	}
	if calls, _ := ts.api.called(); strings.Join(calls, ";") != "POST /v1/offline;POST /v1/sync" {
		t.Errorf("calls %v", calls)
	}
}

func TestGUIResolveForm(t *testing.T) {
	ts := startTest(t)
	c := ts.login()
	_, body := ts.do("GET", "/conflicts", nil, withCookie(c))
	for _, want := range []string{"41-1", "41-2", "laptop-anna", "manual", `name="pick" value="2"`, `name="expect" value="w1.1,w2.1"`} {
		if !strings.Contains(body, want) {
			t.Errorf("conflicts page lacks %q:\n%s", want, body)
		}
	}
	base := url.Values{"csrf": {ts.s.sec.csrf}, "collection": {"contacts"}, "id": {"c1"}, "field": {"phone"}, "expect": {"w1.1,w2.1"}}
	// Bad input: a clear error, nothing sent to the node.
	for name, extra := range map[string]url.Values{
		"no choice":  {},
		"blank text": {"text": {"  "}},
		"bad pick":   {"pick": {"zero"}},
	} {
		f := url.Values{}
		for k, v := range base {
			f[k] = v
		}
		for k, v := range extra {
			f[k] = v
		}
		resp, body := ts.do("POST", "/conflicts/resolve", f, withCookie(c))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `class="err"`) {
			t.Errorf("resolve, %s: %d, want 400 with a message:\n%s", name, resp.StatusCode, body)
		}
	}
	if calls, _ := ts.api.called(); len(calls) != 0 {
		t.Fatalf("bad input reached the node: %v", calls)
	}
	f := url.Values{"pick": {"2"}, "back": {"//evil.example/"}}
	for k, v := range base {
		f[k] = v
	}
	resp, _ := ts.do("POST", "/conflicts/resolve", f, withCookie(c))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/conflicts?done=resolved" {
		t.Errorf("resolve: %d to %q, want 303 to /conflicts?done=resolved", resp.StatusCode, resp.Header.Get("Location"))
	}
	calls, bodies := ts.api.called()
	if len(calls) != 1 || calls[0] != "POST /v1/resolve/contacts/c1/phone" || !strings.Contains(bodies[0], `"pick":2`) || !strings.Contains(bodies[0], `"expect":["w1.1","w2.1"]`) {
		t.Errorf("resolve sent %v %v", calls, bodies)
	}
}

func TestGUIEvents(t *testing.T) {
	ts := startTest(t)
	c := ts.login()
	req, _ := http.NewRequest("GET", ts.base+"/events", nil)
	req.AddCookie(c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events: Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() string {
		for sc.Scan() {
			if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				return ev
			}
		}
		t.Fatalf("event stream ended: %v", sc.Err())
		return ""
	}
	if ev := next(); ev != "hello" {
		t.Fatalf("first event %q, want hello", ev)
	}
	ts.api.setStatus(func(st *apijson.Status) { st.Online = false })
	if ev := next(); ev != "change" {
		t.Fatalf("after a change of state: event %q, want change", ev)
	}
}
