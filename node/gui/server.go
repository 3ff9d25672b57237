// Package gui is the web page a Ferry node serves on loopback: an
// overview (online switch, peers and their last sync, edits no office
// holds yet, sync now, warnings), the records, the conflicts with buttons
// to resolve them, and (office) the members. It is made of html/template
// pages and a small script, all embedded in the binary, and talks to the
// node through its local API (package api) in process.
//
// Security (docs/gui.md): it listens on a loopback address only, answers
// only requests whose Host (and Origin) is that address, wants the session
// cookie that the login link (token in <dir>/gui.token, mode 0600) sets,
// and a CSRF token on every POST.
package gui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/api"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config is what a page needs.
type Config struct {
	// Listen is the loopback host:port to listen on (port 0: any free
	// one); CheckListen tells what is accepted.
	Listen string
	// Dir is the node's data dir: the token is read from (or created in)
	// it, and the address written to it.
	Dir string
	// API is the node's local API (node.Node.Handler()).
	API http.Handler
	// Watch, if set, reports record changes at once (node.Node.Watch);
	// the rest of the state is polled every Poll.
	Watch func(context.Context) <-chan node.Change
	// Poll is how often the state is compared for live updates (default
	// 1s).
	Poll   time.Duration
	Logger *slog.Logger
}

// Server is a node's web page.
type Server struct {
	cfg    Config
	api    *api.Client
	ln     net.Listener
	addr   string          // host:port listened on
	hosts  map[string]bool // the Host headers answered
	cookie string          // the session cookie's name (per port)
	sec    secrets
	pages  map[string]*template.Template
	mux    *http.ServeMux
}

// Listen checks cfg, reads or creates the login token, listens, and
// writes the address to the data dir's AddrFile. Serve then serves the
// page.
func Listen(cfg Config) (*Server, error) {
	addr, err := CheckListen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	if cfg.API == nil {
		return nil, errors.New("gui: no API to serve")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tok, err := loadToken(cfg.Dir)
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gui listen %s: %w", addr, err)
	}
	s := &Server{cfg: cfg, api: api.NewClient(cfg.API), ln: ln, addr: ln.Addr().String(),
		sec: newSecrets(tok), pages: pages, mux: http.NewServeMux()}
	s.hosts = allowedHosts(s.addr)
	_, port, _ := net.SplitHostPort(s.addr)
	s.cookie = "ferry_session_" + port
	s.routes()
	if err := os.WriteFile(filepath.Join(cfg.Dir, AddrFile), []byte(s.addr+"\n"), 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("gui: write %s: %w", AddrFile, err)
	}
	return s, nil
}

// Addr is the address the page listens on (host:port).
func (s *Server) Addr() string { return s.addr }

// LoginURL is the page's login link.
func (s *Server) LoginURL() string { return "http://" + s.addr + "/login?token=" + s.sec.token }

// ServeHTTP serves one request, with every check of the page.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.guard(s.mux).ServeHTTP(w, r) }

// Serve serves the page until ctx is done; then it removes the data dir's
// AddrFile (written by Listen).
func (s *Server) Serve(ctx context.Context) error {
	defer RemoveAddr(s.cfg.Dir)
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			// Live streams end with ctx; whatever is left is cut.
			_ = srv.Close()
		}
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("gui serve: %w", err)
	}
}

// RemoveAddr removes a data dir's AddrFile (left by a node that did not
// stop cleanly, or whose page is now off).
func RemoveAddr(dir string) { _ = os.Remove(filepath.Join(dir, AddrFile)) }

// routes lists the page's addresses (docs/gui.md).
func (s *Server) routes() {
	m := s.mux
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /{$}", s.overview)
	m.HandleFunc("GET /events", s.events)
	m.HandleFunc("POST /offline", s.setOnline(false))
	m.HandleFunc("POST /online", s.setOnline(true))
	m.HandleFunc("POST /sync", s.syncNow)
	m.HandleFunc("GET /records", s.collections)
	m.HandleFunc("GET /records/{collection}", s.records)
	m.HandleFunc("GET /records/{collection}/{id}", s.record)
	m.HandleFunc("GET /conflicts", s.conflicts)
	m.HandleFunc("POST /conflicts/resolve", s.resolve)
	m.HandleFunc("GET /members", s.members)
	m.HandleFunc("POST /members/invite", s.invite)
	m.HandleFunc("POST /members/revoke", s.revoke)
	m.HandleFunc("POST /logout", s.logout)
}

// logout clears the session cookie (the login link still works).
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	s.loginNeeded(w, http.StatusOK, "You are logged out.")
}

// parsePages parses each page with the layout it shares.
func parsePages() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, name := range []string{"overview", "collections", "records", "record", "conflicts", "members", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/candidates.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("gui: template %s: %w", name, err)
		}
		out[name] = t
	}
	t, err := template.New("login").ParseFS(templateFS, "templates/login.html")
	if err != nil {
		return nil, fmt.Errorf("gui: template login: %w", err)
	}
	out["login"] = t
	return out, nil
}

// render writes a page: data is the page's own, base the common part.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, base *page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.pages[name].ExecuteTemplate(w, "layout", base); err != nil {
		s.cfg.Logger.Warn("gui: render", "page", name, "err", err)
	}
}

// page is what every page shows: the node in the header, the navigation,
// a message after an action, and the page's own data.
type page struct {
	Title   string
	Nav     string // the navigation entry to highlight
	CSRF    string
	Node    nodeHeader
	Msg     string
	Err     string
	Data    any
	Office  bool
	Request *http.Request
}

// nodeHeader is the node as the header shows it on every page.
type nodeHeader struct {
	Name      string
	Role      string
	Online    bool
	Running   bool
	Connected int
}

// newPage fills the common part of a page, with the node's status.
func (s *Server) newPage(r *http.Request, title, nav string) *page {
	p := &page{Title: title, Nav: nav, CSRF: s.sec.csrf, Request: r}
	st, err := s.api.Status(r.Context())
	if err != nil {
		p.Err = "The node does not answer: " + err.Error()
		return p
	}
	p.Node = nodeHeader{Name: st.Name, Role: st.Role, Online: st.Online, Running: st.Running, Connected: st.ConnectedPeers}
	p.Office = st.Role == node.RoleOffice
	if m, ok := doneMessages[r.URL.Query().Get("done")]; ok {
		p.Msg = m
	}
	return p
}

// doneMessages are the messages shown after an action (?done=KEY).
var doneMessages = map[string]string{
	"offline":  "This computer is now offline: it exchanges no edits until you switch it back online.",
	"online":   "This computer is online again: it connects to its peers and exchanges edits.",
	"sync":     "Asked every connected peer for their news. Anything new arrives within moments.",
	"resolved": "Conflict resolved. Every other computer gets the decision at its next sync.",
	"revoked":  "Member revoked: its later edits are ignored everywhere.",
}

// fail shows an error page (an API error's message, in words).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	var ae *api.Error
	if errors.As(err, &ae) {
		code = ae.Status
	}
	p := s.newPage(r, "Error", "")
	p.Err = errText(err)
	s.render(w, r, code, "error", p)
}

// errText is an error in words for the page.
func errText(err error) string {
	msg := err.Error()
	if msg == "" {
		return "unknown error"
	}
	return strings.ToUpper(msg[:1]) + msg[1:]
}

// back redirects to a local path after an action (never elsewhere).
func back(w http.ResponseWriter, r *http.Request, path, done string) {
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") || strings.Contains(path, "\\") {
		path = "/"
	}
	if done != "" {
		if strings.Contains(path, "?") {
			path += "&done=" + done
		} else {
			path += "?done=" + done
		}
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}
