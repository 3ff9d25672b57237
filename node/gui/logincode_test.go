package gui

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGUILoginCode: a one-time code (what `ferry gui` gives the browser)
// logs in once, within its time; a second use, an expired code, a code
// nobody made and a malformed one do not.
func TestGUILoginCode(t *testing.T) {
	ts := startTest(t)
	get := func(link string) *http.Response {
		t.Helper()
		resp, err := ts.hc.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	link, err := NewLoginCode(ts.dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(link, ts.s.sec.token) || !strings.HasPrefix(link, ts.base+"/login?code=") {
		t.Fatalf("code link %q", link)
	}
	resp := get(link)
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, "ferry_session_") {
			session = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || session.Value != ts.s.sec.session {
		t.Fatalf("first use: %d, cookie %v", resp.StatusCode, session)
	}
	if r := get(link); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Errorf("second use: %d %v", r.StatusCode, r.Cookies())
	}

	old, err := NewLoginCode(ts.dir)
	if err != nil {
		t.Fatal(err)
	}
	code := old[strings.LastIndex(old, "=")+1:]
	then := time.Now().Add(-codeTTL - time.Second)
	if err := os.Chtimes(filepath.Join(ts.dir, CodeDir, code), then, then); err != nil {
		t.Fatal(err)
	}
	if r := get(old); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired code: %d", r.StatusCode)
	}
	for _, bad := range []string{"00000000000000000000000000000000", "../gui.token", "abc", strings.Repeat("z", 32)} {
		if r := get(ts.base + "/login?code=" + bad); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("code %q: %d", bad, r.StatusCode)
		}
	}
	if _, err := os.Stat(filepath.Join(ts.dir, TokenFile)); err != nil {
		t.Errorf("the token file is gone: %v", err)
	}
}
