// Command screenshots regenerates the pictures of the web page in
// docs/gui/: it builds ferry, starts a small demo network (an office and
// two laptops on loopback, in a temp dir), makes some records and a
// conflict, and photographs each page with headless chromium (Debian's
// package). See docs/gui.md.
//
//	go run ./scripts/screenshots            # writes docs/gui/*.png
//	scripts/screenshots.sh                  # the same
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

// deadline bounds every wait.
const deadline = 30 * time.Second

// demoSchema has a field decided by hand (phone), for the conflicts page.
const demoSchema = `collections:
  accounts:
    fields:
      name:     {type: string, required: true}
      city:     {type: string}
      industry: {type: enum, values: [retail, industry, services, public]}
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      email:      {type: string}
      phone:      {type: string, policy: manual}
      stage:      {type: enum, values: [lead, qualified, won, lost]}
      account:    {type: string}
`

var people = []string{"Ann Lee", "Bruno Keller", "Chiara Rossi", "David Meier", "Eva Novak", "Farid Haddad", "Greta Lind",
	"Hugo Brun", "Ines Costa", "Jonas Berg", "Karin Vogel", "Luca Ferri", "Mia Schmid", "Nils Olsen", "Olga Petrova",
	"Paul Weber", "Rosa Marti", "Sven Aalto", "Tina Huber", "Ugo Bianchi", "Vera Gerber", "Walter Frei"}

func main() {
	out := flag.String("out", "docs/gui", "where to write the PNG files")
	browser := flag.String("chromium", "/usr/bin/chromium", "the browser")
	keep := flag.Bool("keep", false, "keep the demo's temp dir")
	flag.Parse()
	if err := run(*out, *browser, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

// demo is the running demo network.
type demo struct {
	bin   string
	root  string
	procs []*exec.Cmd
}

func run(out, browser string, keep bool) error {
	root, err := os.MkdirTemp("", "ferry-screenshots-")
	if err != nil {
		return err
	}
	d := &demo{root: root, bin: filepath.Join(root, "ferry")}
	defer func() {
		d.stop()
		if keep {
			fmt.Println("demo kept in", root)
		} else {
			os.RemoveAll(root)
		}
	}()
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	fmt.Println("building ferry")
	if b, err := exec.Command("go", "build", "-o", d.bin, "./cmd/ferry").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, b)
	}
	office, l1, l2, err := d.network()
	if err != nil {
		return err
	}
	if err := d.content(office, l1, l2); err != nil {
		return err
	}
	return d.photograph(out, browser, office, l1, l2)
}

// network starts an office and two laptops, each with its page on a free
// port, and applies the schema.
func (d *demo) network() (office, l1, l2 string, err error) {
	office = filepath.Join(d.root, "office")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if _, err := d.ferry(office, "init", "--office", "--name", "office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)); err != nil {
		return "", "", "", err
	}
	if err := d.start(office); err != nil {
		return "", "", "", err
	}
	schema := filepath.Join(d.root, "schema.yaml")
	if err := os.WriteFile(schema, []byte(demoSchema), 0o600); err != nil {
		return "", "", "", err
	}
	if _, err := d.ferry(office, "schema", "apply", schema); err != nil {
		return "", "", "", err
	}
	var laptops []string
	for _, name := range []string{"laptop-anna", "laptop-bruno"} {
		tok, err := d.ferry(office, "invite", "--name", name)
		if err != nil {
			return "", "", "", err
		}
		dir := filepath.Join(d.root, name)
		if _, err := d.ferry(dir, "init", "--join", strings.TrimSpace(tok), "--name", name, "--listen", "/ip4/127.0.0.1/tcp/0"); err != nil {
			return "", "", "", err
		}
		if err := d.start(dir); err != nil {
			return "", "", "", err
		}
		laptops = append(laptops, dir)
	}
	return office, laptops[0], laptops[1], nil
}

// content makes records on the nodes, and a conflict on contacts c3's
// phone.
func (d *demo) content(office, l1, l2 string) error {
	var lines strings.Builder
	stages := []string{"lead", "qualified", "won", "lost"}
	for i, p := range people {
		first, last, _ := strings.Cut(p, " ")
		fmt.Fprintf(&lines, `{"id":"c%d","first_name":%q,"last_name":%q,"email":"%s.%s@example.com","phone":"+41 44 555 %02d %02d","stage":%q,"account":"a%d"}`+"\n",
			i+1, first, last, strings.ToLower(first), strings.ToLower(last), 10+i, 30+i, stages[i%4], i%3+1)
	}
	if err := d.ferryIn(office, lines.String(), "import", "contacts", "-"); err != nil {
		return err
	}
	for i, a := range []string{"Acme Retail|Zurich|retail", "Brun Maschinen|Basel|industry", "Lakeside Services|Lucerne|services"} {
		f := strings.Split(a, "|")
		if _, err := d.ferry(office, "put", "accounts", fmt.Sprintf("a%d", i+1), "name="+f[0], "city="+f[1], "industry="+f[2]); err != nil {
			return err
		}
	}
	if err := d.waitFor("the laptops have the contacts", func() bool {
		_, e1 := d.ferry(l1, "get", "contacts", "c22")
		_, e2 := d.ferry(l2, "get", "contacts", "c22")
		return e1 == nil && e2 == nil
	}); err != nil {
		return err
	}
	if _, err := d.ferry(l1, "put", "contacts", "c2", "stage=won"); err != nil {
		return err
	}
	// The conflict: anna changes a phone number while offline, the office
	// changes it too.
	if _, err := d.ferry(l1, "offline"); err != nil {
		return err
	}
	if _, err := d.ferry(l1, "put", "contacts", "c3", "phone=+41 79 123 45 67"); err != nil {
		return err
	}
	if _, err := d.ferry(office, "put", "contacts", "c3", "phone=+41 44 555 99 00"); err != nil {
		return err
	}
	if _, err := d.ferry(l1, "online"); err != nil {
		return err
	}
	if err := d.waitFor("the office lists the conflict", func() bool {
		out, err := d.ferry(office, "conflicts", "--open", "--json")
		return err == nil && strings.Contains(out, `"c3"`) && strings.Contains(out, "laptop-anna")
	}); err != nil {
		return err
	}
	// Bruno's edits the office does not hold yet.
	if _, err := d.ferry(l2, "offline"); err != nil {
		return err
	}
	for _, kv := range [][]string{{"c7", "stage=won"}, {"c8", "email=hugo@brun.example"}} {
		if _, err := d.ferry(l2, "put", "contacts", kv[0], kv[1]); err != nil {
			return err
		}
	}
	return d.waitFor("anna's last sync with the office", func() bool {
		out, err := d.ferry(l1, "peers", "--json")
		return err == nil && strings.Contains(out, `"last_sync"`)
	})
}

// photograph logs in to the office's, anna's and bruno's pages and saves
// a picture of each page.
func (d *demo) photograph(out, browser, office, l1, l2 string) error {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(filepath.Join(d.root, "chromium")),
		chromedp.WindowSize(1200, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		return fmt.Errorf("start %s: %w", browser, err)
	}
	officeLink, err := d.ferry(office, "gui", "--no-open")
	if err != nil {
		return err
	}
	annaLink, err := d.ferry(l1, "gui", "--no-open")
	if err != nil {
		return err
	}
	brunoLink, err := d.ferry(l2, "gui", "--no-open")
	if err != nil {
		return err
	}
	officeBase := strings.SplitN(strings.TrimSpace(officeLink), "/login", 2)[0]
	annaBase := strings.SplitN(strings.TrimSpace(annaLink), "/login", 2)[0]
	shots := []struct{ file, url, ready string }{
		{"", strings.TrimSpace(officeLink), "true"},
		{"", strings.TrimSpace(annaLink), "true"},
		{"overview.png", annaBase + "/", `document.documentElement.dataset.liveState === "on" && /Last update: today/.test(document.querySelector("#peers").innerText)`},
		{"", strings.TrimSpace(brunoLink), "true"},
		{"overview-offline.png", strings.SplitN(strings.TrimSpace(brunoLink), "/login", 2)[0] + "/", `!!document.querySelector("#go-online")`},
		{"records.png", annaBase + "/records/contacts", `!!document.querySelector("table.records")`},
		{"record.png", officeBase + "/records/contacts/c3", `!!document.querySelector("tr.conflicted")`},
		{"conflicts.png", officeBase + "/conflicts", `!!document.querySelector("article.conflict.open")`},
		{"members.png", officeBase + "/members", `!!document.querySelector("table.members")`},
	}
	for _, s := range shots {
		if err := chromedp.Do(ctx, chromedp.Navigate(s.url)); err != nil {
			return fmt.Errorf("open %s: %w", s.url, err)
		}
		if err := d.waitFor("the page "+s.url+" is ready", func() bool {
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+s.ready+")"))
			return err == nil && ok
		}); err != nil {
			return err
		}
		if s.file == "" {
			continue
		}
		if s.file == "record.png" {
			// Open the phone's history.
			if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.querySelectorAll("tr.history-row details").forEach((d, i) => { if (d.innerText.includes("History of phone")) d.open = true })`)); err != nil {
				return err
			}
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			return fmt.Errorf("screenshot %s: %w", s.file, err)
		}
		path := filepath.Join(out, s.file)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", path)
	}
	return nil
}

// ferry runs `ferry --dir DIR ARGS...` and returns its output.
func (d *demo) ferry(dir string, args ...string) (string, error) {
	cmd := exec.Command(d.bin, append([]string{"--dir", dir}, args...)...)
	cmd.Env = append(os.Environ(), "FERRY_DIR="+dir)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ferry %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// ferryIn is ferry with stdin.
func (d *demo) ferryIn(dir, stdin string, args ...string) error {
	cmd := exec.Command(d.bin, append([]string{"--dir", dir}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ferry %s: %v: %s", strings.Join(args, " "), err, b)
	}
	return nil
}

// start runs a node in dir with its page on a free loopback port, and
// waits until it answers.
func (d *demo) start(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "config.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("gui: {listen: 127.0.0.1:0}\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	cmd := exec.Command(d.bin, "--dir", dir, "node", "--log-level", "warn")
	logf, err := os.Create(filepath.Join(d.root, filepath.Base(dir)+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	d.procs = append(d.procs, cmd)
	return d.waitFor(filepath.Base(dir)+" serves its page", func() bool {
		_, err := os.Stat(filepath.Join(dir, "gui.addr"))
		if err != nil {
			return false
		}
		_, err = d.ferry(dir, "gui", "--no-open")
		return err == nil
	})
}

// stop stops the nodes (SIGINT, then kill after a while).
func (d *demo) stop() {
	for _, p := range d.procs {
		_ = p.Process.Signal(os.Interrupt)
	}
	for _, p := range d.procs {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
		}
	}
}

// waitFor polls cond until it holds, or fails after deadline.
func (d *demo) waitFor(what string, cond func() bool) error {
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			return errors.New(what + ": not after " + deadline.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
