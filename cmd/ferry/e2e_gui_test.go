package main

// End-to-end test of the web page in a real browser: headless Debian
// chromium driven with chromedp, against real `ferry node` processes (an
// office and a laptop). Skipped with -short; skipped when chromium is not
// installed, unless FERRY_BROWSER_TESTS is set (CI sets it: there a
// missing browser is a failure).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ferry-crm/ferry/node/gui"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// browserPath returns the browser to drive, or skips the test without one
// (fails with FERRY_BROWSER_TESTS set).
func browserPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("FERRY_BROWSER_TESTS") != "" {
			t.Fatalf("FERRY_BROWSER_TESTS is set but there is no browser at %s (apt-get install chromium): %v", chromiumPath, err)
		}
		t.Skipf("no browser at %s: install Debian's chromium package to run this test (set FERRY_BROWSER_TESTS=1 to make a missing browser a failure)", chromiumPath)
	}
	return chromiumPath
}

// newBrowser starts a headless chromium with a fresh profile; the name
// evil.example resolves to 127.0.0.1 in it (a DNS rebinding).
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("host-resolver-rules", "MAP evil.example 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return bctx
}

// tab is a browser tab.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context
}

// newTab opens a tab in the browser's profile (isolated: in a profile of
// its own, with no cookies).
func newTab(t *testing.T, browser context.Context, name string, isolated bool) *tab {
	t.Helper()
	var opts []chromedp.ContextOption
	if isolated {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(browser, opts...)
	t.Cleanup(cancel)
	// The tab opens with its own context: one with a deadline would
	// close it at the end of the first action.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return &tab{t: t, name: name, ctx: ctx}
}

// do runs actions within waitFor, failing the test with the page's text.
func (b *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitFor)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %s: %v\npage:\n%s", b.name, what, err, b.text())
	}
}

// js evaluates an expression (a promise is awaited) and returns its value.
func js[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitFor)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: evaluate %s: %v", b.name, expr, err)
	}
	return v
}

// text is the page's visible text.
func (b *tab) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return fmt.Sprintf("(no text: %v)", err)
	}
	return s
}

// wait waits until a JavaScript expression is true in the page, within
// waitFor. The page may be navigating meanwhile (after a click on a
// form's button): an evaluation that fails is tried again.
func (b *tab) wait(what, expr string) {
	b.t.Helper()
	eventually(b.t, b.name+": "+what, func() (bool, string) {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err != nil {
			return false, err.Error()
		}
		return ok, b.text()
	})
}

// click clicks an element with the mouse.
func (b *tab) click(what, css string) {
	b.t.Helper()
	b.do(what, chromedp.Click(chromedp.CSS(css)))
}

// guiNodes are an office and a laptop with the policy schema, each serving
// its web page on a free loopback port.
type guiNodes struct {
	officeDir, laptopDir string
}

func startGUINodes(t *testing.T) guiNodes {
	t.Helper()
	root := t.TempDir()
	schemaPath := filepath.Join(root, "policies.yaml")
	if err := os.WriteFile(schemaPath, []byte(policySchema), 0o600); err != nil {
		t.Fatal(err)
	}
	var c guiNodes
	c.officeDir = initDir(t, root, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)))
	appendConfig(t, c.officeDir, "gui: {listen: 127.0.0.1:0}\n")
	startNode(t, c.officeDir)
	c.laptopDir = joinDir(t, root, "laptop1", c.officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	appendConfig(t, c.laptopDir, "gui:\n  listen: localhost:0\n")
	mustFerry(t, c.officeDir, "schema", "apply", schemaPath)
	startNode(t, c.laptopDir)
	waitPolicies(t, c.laptopDir)
	return c
}

// loginLink runs `ferry gui --no-open` and returns the link and the
// page's base address (http://127.0.0.1:PORT).
func loginLink(t *testing.T, dir string) (link, base string) {
	t.Helper()
	r := mustFerry(t, dir, "gui", "--no-open")
	link = strings.TrimSpace(r.Stdout)
	m := regexp.MustCompile(`^(http://127\.0\.0\.1:\d+)/login\?token=[A-Za-z0-9_-]{43}$`).FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("ferry gui does not print one login link:\n%s", r)
	}
	return link, m[1]
}

func TestGUIBrowser(t *testing.T) {
	e2e(t)
	path := browserPath(t)
	c := startGUINodes(t)
	browser := newBrowser(t, path)
	officeLink, officeBase := loginLink(t, c.officeDir)
	laptopLink, laptopBase := loginLink(t, c.laptopDir)
	officeID, laptopID := mustStatus(t, c.officeDir).PeerID, mustStatus(t, c.laptopDir).PeerID
	office := newTab(t, browser, "office's page", false)
	laptop := newTab(t, browser, "laptop's page", false)

	t.Run("overview shows the last sync, live", func(t *testing.T) {
		laptop.t, office.t = t, t
		laptop.do("log in", chromedp.Navigate(laptopLink))
		if loc := js[string](laptop, `location.href`); loc != laptopBase+"/" {
			t.Errorf("after the login link the page is at %s, want %s/ (the token out of the address bar)", loc, laptopBase)
		}
		office.do("log in", chromedp.Navigate(officeLink))
		row := func(peer string) string {
			return fmt.Sprintf(`(document.querySelector('#peers tr[data-peer="%s"]') || {innerText: ""}).innerText`, peer)
		}
		laptop.wait("the office's row: connected, last update today", row(officeID)+`.match(/\bconnected\b/) && !`+row(officeID)+`.includes("not connected") && /Last update: (today|yesterday) \d\d:\d\d/.test(`+row(officeID)+`)`)
		office.wait("the laptop's row: connected, last update today", `/Last update: (today|yesterday) \d\d:\d\d/.test(`+row(laptopID)+`)`)
		laptop.wait("live updates connect", `document.documentElement.dataset.liveState === "on"`)
		// A change of state made elsewhere shows without a reload.
		js[bool](laptop, `window.notReloaded = true`)
		mustFerry(t, c.laptopDir, "offline")
		laptop.wait("the header says offline", `document.querySelector("#state").innerText === "Offline" && window.notReloaded`)
		mustFerry(t, c.laptopDir, "online")
		laptop.wait("the header says online", `document.querySelector("#state").innerText.startsWith("Online") && window.notReloaded`)
		for _, s := range []string{"Not yet at the office", "Sync now", "Technical details"} {
			if !strings.Contains(laptop.text(), s) {
				t.Errorf("the overview does not show %q:\n%s", s, laptop.text())
			}
		}
		if d := js[string](laptop, `document.querySelector("#digest").textContent`); d != mustStatus(t, c.laptopDir).Digest {
			t.Errorf("the overview shows the digest %q, want the status's", d)
		}
	})

	t.Run("going offline stops replication", func(t *testing.T) {
		laptop.t, office.t = t, t
		mustFerry(t, c.officeDir, "put", "contacts", "c1", "last_name=Lee", "phone=+41-0")
		waitRecord(t, c.laptopDir, "contacts", "c1", map[string]any{"phone": "+41-0"})
		laptop.do("back to the overview", chromedp.Navigate(laptopBase+"/"))
		laptop.click("click Go offline", "#go-offline")
		laptop.wait("the page says offline", `!!document.querySelector("#go-online") && location.search === "?done=offline"`)
		eventually(t, "laptop offline, office without peers", func() (bool, string) {
			ls, lr := status(t, c.laptopDir)
			os, or := status(t, c.officeDir)
			return !ls.Online && ls.ConnectedPeers == 0 && os.ConnectedPeers == 0, lr.String() + or.String()
		})
		office.wait("the office's page shows the laptop not connected", fmt.Sprintf(`(document.querySelector('#peers tr[data-peer="%s"]') || {innerText: ""}).innerText.includes("not connected")`, laptopID))
		mustFerry(t, c.officeDir, "put", "contacts", "c2", "last_name=Meanwhile")
		mustFerry(t, c.officeDir, "sync")
		if r := ferry(t, c.laptopDir, "get", "contacts", "c2"); r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
			t.Errorf("an offline laptop received a record:\n%s", r)
		}
		laptop.click("click Go online", "#go-online")
		laptop.wait("the page says online", `!!document.querySelector("#go-offline")`)
		waitRecord(t, c.laptopDir, "contacts", "c2", map[string]any{"last_name": "Meanwhile"})
	})

	t.Run("one click resolves a conflict everywhere", func(t *testing.T) {
		laptop.t, office.t = t, t
		setOnline(t, false, c.laptopDir)
		mustFerry(t, c.laptopDir, "put", "contacts", "c1", "phone=+41-1")
		mustFerry(t, c.officeDir, "put", "contacts", "c1", "phone=+41-2")
		setOnline(t, true, c.laptopDir)
		cs := waitConflicts(t, c.officeDir, "contacts/c1/phone")
		waitConflicts(t, c.laptopDir, "contacts/c1/phone")
		pick := 0
		for _, cand := range cs[0].Candidates {
			if cand.Value == "+41-1" {
				pick = cand.N
			}
		}
		if pick == 0 {
			t.Fatalf("no candidate +41-1 in %+v", cs[0])
		}
		laptop.do("open the conflicts", chromedp.Navigate(laptopBase+"/conflicts"))
		laptop.wait("the laptop's page lists the conflict", `!!document.querySelector("#conflict-contacts-c1-phone")`)
		js[bool](laptop, `window.notReloaded = true`)
		office.do("open the conflicts", chromedp.Navigate(officeBase+"/conflicts"))
		text := office.text()
		for _, s := range []string{"41-1", "41-2", "laptop1", "office", "manual"} {
			if !strings.Contains(text, s) {
				t.Errorf("the conflicts page does not show %q:\n%s", s, text)
			}
		}
		office.click("click Keep this", fmt.Sprintf(`#conflict-contacts-c1-phone button[name="pick"][value="%d"]`, pick))
		office.wait("the conflict vanishes from the office's page", `!!document.querySelector("#no-open-conflicts") && !document.querySelector("#conflict-contacts-c1-phone")`)
		laptop.wait("the conflict vanishes from the laptop's page, without a reload", `!!document.querySelector("#no-open-conflicts") && !document.querySelector("#conflict-contacts-c1-phone") && window.notReloaded`)
		for _, d := range []string{c.officeDir, c.laptopDir} {
			waitNoConflicts(t, d)
			waitRecord(t, d, "contacts", "c1", map[string]any{"phone": "+41-1"})
		}
		// The record's page: the value, its writer, and its history.
		laptop.do("open the record", chromedp.Navigate(laptopBase+"/records/contacts/c1"))
		text = laptop.text()
		for _, s := range []string{"phone", "41-1", "History of phone"} {
			if !strings.Contains(text, s) {
				t.Errorf("the record's page does not show %q:\n%s", s, text)
			}
		}
	})

	t.Run("refused: no token, foreign host, no CSRF token", func(t *testing.T) {
		laptop.t, office.t = t, t
		stranger := newTab(t, browser, "a page without the login", true)
		for _, p := range []string{"/", "/records/contacts/c1", "/conflicts", "/events"} {
			stranger.do("open "+p, chromedp.Navigate(laptopBase+p))
			if text := stranger.text(); !strings.Contains(text, "please log in") || strings.Contains(text, "Lee") || strings.Contains(text, "laptop1") {
				t.Errorf("%s without the login: want the login page only, got:\n%s", p, text)
			}
		}
		_, port, _ := strings.Cut(strings.TrimPrefix(laptopBase, "http://"), ":")
		laptop.do("open the page by another name", chromedp.Navigate("http://evil.example:"+port+"/"))
		if text := laptop.text(); !strings.HasPrefix(text, "Forbidden") || strings.Contains(text, "laptop1") {
			t.Errorf("the page under a foreign host name: want Forbidden, got:\n%s", text)
		}
		laptop.do("back to the page", chromedp.Navigate(laptopBase+"/"))
		for name, body := range map[string]string{"no token": "", "a wrong token": "csrf=forged"} {
			code := js[int](laptop, `fetch("/offline", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "`+body+`"}).then(r => r.status)`)
			if code != 403 {
				t.Errorf("POST /offline with %s: %d, want 403", name, code)
			}
		}
		if st := mustStatus(t, c.laptopDir); !st.Online {
			t.Errorf("a refused POST took the laptop offline")
		}
	})

	t.Run("ferry gui and the gui key", func(t *testing.T) {
		root := t.TempDir()
		dir := initDir(t, root, "alone", "--listen", "/ip4/127.0.0.1/tcp/0")
		if r := ferry(t, dir, "gui", "--no-open"); r.Code != 1 || !strings.Contains(r.Stderr, "no node is running") {
			t.Errorf("ferry gui without a node:\n%s", r)
		}
		appendConfig(t, dir, "gui: {listen: 0.0.0.0:8384}\n")
		r := runFerryWithin(t, cliTimeout, nil, "--dir", dir, "node")
		if r.Code != 1 || !strings.Contains(r.Stderr, "loopback address only") || strings.Contains(r.Stdout, "running") {
			t.Errorf("a node with a non-loopback gui address:\n%s", r)
		}
		if _, err := os.Stat(filepath.Join(dir, gui.TokenFile)); !os.IsNotExist(err) {
			t.Errorf("the refused node left a token: %v", err)
		}
	})
}
