package gui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Files of the web page inside the data dir.
const (
	// TokenFile holds the login token (mode 0600): whoever can read the
	// data dir can log in, nobody else.
	TokenFile = "gui.token"
	// AddrFile holds the address the running node's page listens on
	// (host:port); the node removes it when it stops.
	AddrFile = "gui.addr"
)

// DefaultListen is the page's address when config.yaml does not say.
const DefaultListen = "127.0.0.1:8384"

// CheckListen checks a listen address (host:port) and returns it with
// localhost spelled 127.0.0.1. The page listens on a loopback address
// only: anything else is refused with an error saying why.
func CheckListen(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("gui listen %q: want a loopback address and a port, like %s", addr, DefaultListen)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(p, 10) != port {
		return "", fmt.Errorf("gui listen %q: port %q is not a number from 0 to 65535", addr, port)
	}
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("gui listen %q: the web page listens on a loopback address only (127.0.0.1, [::1] or localhost): on %q other machines could reach it", addr, host)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// loadToken reads the data dir's login token, creating it (and fixing a
// file others may read) as needed.
func loadToken(dir string) (string, error) {
	path := filepath.Join(dir, TokenFile)
	data, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(data))
		if len(tok) >= 32 {
			if err := os.Chmod(path, 0o600); err != nil {
				return "", fmt.Errorf("gui token: %w", err)
			}
			return tok, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("gui token: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("gui token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("gui token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("gui token: %w", err)
	}
	return tok, nil
}

// ReadLogin returns the login address of the page a running node serves
// in dir (http://ADDR/login?token=TOKEN), from its AddrFile and TokenFile.
func ReadLogin(dir string) (string, error) {
	addr, err := os.ReadFile(filepath.Join(dir, AddrFile))
	if err != nil {
		return "", fmt.Errorf("gui address: %w", err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		return "", fmt.Errorf("gui token: %w", err)
	}
	return "http://" + strings.TrimSpace(string(addr)) + "/login?token=" + strings.TrimSpace(string(tok)), nil
}

// secrets are what the token grants: the session cookie's value and the
// CSRF token of forms, both derived from the login token (a new token
// ends every session).
type secrets struct {
	token   string
	session string
	csrf    string
}

func newSecrets(token string) secrets {
	mac := func(purpose string) string {
		h := hmac.New(sha256.New, []byte(token))
		h.Write([]byte("ferry gui " + purpose))
		return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
	}
	return secrets{token: token, session: mac("session"), csrf: mac("csrf")}
}

func equal(a, b string) bool { return hmac.Equal([]byte(a), []byte(b)) }

// allowedHosts are the Host headers the page answers to: the loopback
// address it listens on and localhost, with its port. A page reached by
// any other name (a DNS rebinding attack) is refused.
func allowedHosts(addr string) map[string]bool {
	host, port, _ := net.SplitHostPort(addr)
	hosts := map[string]bool{net.JoinHostPort(host, port): true, "localhost:" + port: true}
	return hosts
}

// guard wraps the page's handler with its checks, in order: the Host (and
// Origin) must be the page's own, the session cookie must be set (except
// on /login), and a POST must carry the CSRF token.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		// same-origin, not no-referrer: with no-referrer a browser sends
		// "Origin: null" on the page's own form posts.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if !s.hosts[strings.ToLower(r.Host)] {
			http.Error(w, "Forbidden: this page answers only at http://"+s.addr, http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			host, ok := strings.CutPrefix(o, "http://")
			if !ok || !s.hosts[strings.ToLower(host)] {
				http.Error(w, "Forbidden: a request from another site", http.StatusForbidden)
				return
			}
		}
		if r.Method == http.MethodPost && r.Header.Get("Sec-Fetch-Site") == "cross-site" {
			http.Error(w, "Forbidden: a request from another site", http.StatusForbidden)
			return
		}
		if r.URL.Path == "/login" {
			s.login(w, r)
			return
		}
		c, err := r.Cookie(s.cookie)
		if err != nil || !equal(c.Value, s.sec.session) {
			s.loginNeeded(w, http.StatusUnauthorized, "")
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPost:
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			tok := r.Header.Get("X-CSRF-Token")
			if tok == "" {
				tok = r.PostFormValue("csrf")
			}
			if !equal(tok, s.sec.csrf) {
				http.Error(w, "Forbidden: the form's security token is missing or wrong: reload the page and try again", http.StatusForbidden)
				return
			}
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// login turns the login link's token into the session cookie, and sends
// the browser on to the overview (the token leaves the address bar).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ok := r.Method == http.MethodGet
	if code := q.Get("code"); ok && code != "" {
		ok = useLoginCode(s.cfg.Dir, code)
	} else {
		ok = ok && equal(q.Get("token"), s.sec.token)
	}
	if !ok {
		s.loginNeeded(w, http.StatusUnauthorized, "This login link is not valid.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: s.sec.session, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// loginNeeded answers a request without a valid session: a page saying
// how to log in, and nothing else.
func (s *Server) loginNeeded(w http.ResponseWriter, code int, why string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_ = s.pages["login"].ExecuteTemplate(w, "login", struct{ Why string }{why})
}
