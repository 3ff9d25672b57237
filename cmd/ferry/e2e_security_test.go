package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// members runs `ferry members --json`.
func members(t *testing.T, dir string) []apijson.Member {
	t.Helper()
	r := mustFerry(t, dir, "members", "--json")
	var ms []apijson.Member
	if err := json.Unmarshal([]byte(r.Stdout), &ms); err != nil {
		t.Fatalf("members --json: %v\n%s", err, r)
	}
	return ms
}

func memberNamed(ms []apijson.Member, name string) (apijson.Member, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m, true
		}
	}
	return apijson.Member{}, false
}

// TestEnrolmentAndRevocation runs the security features through the
// binary: invitations work once, bad tokens change nothing, a laptop cannot
// change the schema or an office-only collection, another network's node
// cannot connect, and a revoked laptop is refused by everyone.
func TestEnrolmentAndRevocation(t *testing.T) {
	e2e(t)
	c := startCluster(t)
	root := filepath.Dir(c.officeDir)

	ms := members(t, c.officeDir)
	if len(ms) != 3 {
		t.Fatalf("members: want office, laptop1, laptop2:\n%+v", ms)
	}
	if m, ok := memberNamed(ms, "office"); !ok || !m.Founder || m.Role != "office" || !m.Self {
		t.Errorf("office member: %+v", m)
	}
	if m, ok := memberNamed(ms, "laptop1"); !ok || m.Role != "laptop" || m.Revoked {
		t.Errorf("laptop1 member: %+v", m)
	}
	if st := mustStatus(t, c.l1Dir); !st.Secured || !st.Private || st.Member == nil || !*st.Member {
		t.Errorf("laptop1 status: secured %t private %t member %v", st.Secured, st.Private, st.Member)
	}

	// An invitation works once; a bad token is a usage error; neither
	// leaves a data dir behind.
	tok := invite(t, c.officeDir, "laptop3", "laptop")
	mustFerry(t, filepath.Join(root, "laptop3"), "init", "--join", tok, "--listen", "/ip4/127.0.0.1/tcp/0")
	again := filepath.Join(root, "again")
	if r := ferry(t, again, "init", "--join", tok); r.Code != 1 || !strings.Contains(r.Stderr, "invitation refused") {
		t.Errorf("second use of a token: want exit 1, invitation refused:\n%s", r)
	}
	if r := ferry(t, again, "init", "--join", tok[:len(tok)-8]+"AAAAAAAA"); r.Code != 2 || !strings.Contains(r.Stderr, "bad invitation token") {
		t.Errorf("damaged token: want exit 2:\n%s", r)
	}
	if _, err := os.Stat(again); !os.IsNotExist(err) {
		t.Errorf("a failed join left %s behind (%v)", again, err)
	}
	if r := ferry(t, c.l1Dir, "invite", "--name", "x"); r.Code != 1 || !strings.Contains(r.Stderr, "office") {
		t.Errorf("invite on a laptop: want exit 1:\n%s", r)
	}

	// Write rights: the schema and office-only collections.
	base, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	prices := filepath.Join(root, "prices.yaml")
	if err := os.WriteFile(prices, append(base, "  prices:\n    writers: office\n    fields:\n      amount: {type: number}\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ferry(t, c.l1Dir, "schema", "apply", prices); r.Code != 1 || !strings.Contains(r.Stderr, "not allowed") {
		t.Errorf("laptop applies a schema: want exit 1, not allowed:\n%s", r)
	}
	mustFerry(t, c.officeDir, "schema", "apply", prices)
	mustFerry(t, c.officeDir, "put", "prices", "p1", "amount=10")
	waitRecord(t, c.l1Dir, "prices", "p1", map[string]any{"amount": 10.0})
	if r := ferry(t, c.l1Dir, "put", "prices", "p1", "amount=1"); r.Code != 1 || !strings.Contains(r.Stderr, "not allowed") {
		t.Errorf("laptop writes an office-only collection: want exit 1, not allowed:\n%s", r)
	}

	// A node of another network (its own swarm key) cannot connect.
	port := freePort(t)
	strangerDir := initDir(t, root, "stranger", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port),
		"--peer", mustStatus(t, c.officeDir).ListenAddrs[0])
	stranger := startNode(t, strangerDir)
	if r := ferry(t, strangerDir, "sync", "--wait", "--timeout", "3s"); r.Code != 3 || !strings.Contains(r.Stdout, "no peer connected") {
		t.Errorf("sync of another network's node: want exit 3, no peer connected:\n%s", r)
	}
	stranger.stop()

	// Revocation: both the office and laptop2 drop laptop1 and refuse it.
	mustFerry(t, c.l1Dir, "put", "contacts", "early", "last_name=Before")
	waitRecord(t, c.l2Dir, "contacts", "early", map[string]any{"last_name": "Before"})
	if r := ferry(t, c.officeDir, "revoke", "nobody"); r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
		t.Errorf("revoke an unknown member: want exit 1:\n%s", r)
	}
	if r := mustFerry(t, c.officeDir, "revoke", "laptop1"); !strings.Contains(r.Stdout, "revoked") {
		t.Errorf("revoke: %s", r)
	}
	eventually(t, "laptop2 knows laptop1 is revoked and nobody is connected to it", func() (bool, string) {
		m, _ := memberNamed(members(t, c.l2Dir), "laptop1")
		o, _ := memberNamed(members(t, c.officeDir), "laptop1")
		return m.Revoked && !m.Connected && !o.Connected, fmt.Sprintf("on laptop2 %+v, on the office %+v", m, o)
	})
	// laptop1 may have heard of its revocation before it was dropped (then
	// its own store refuses the write) or not (then nobody takes it).
	if r := ferry(t, c.l1Dir, "put", "contacts", "late", "last_name=After"); r.Code != 0 && !strings.Contains(r.Stderr, "revoked") {
		t.Errorf("put on the revoked laptop: want exit 0, or a refusal saying it was revoked:\n%s", r)
	}
	if r := ferry(t, c.l1Dir, "sync", "--wait", "--timeout", "3s"); r.Code != 3 {
		t.Errorf("sync of a revoked laptop: want exit 3:\n%s", r)
	}
	for _, d := range []string{c.officeDir, c.l2Dir} {
		if _, _, r, ok := getRecord(t, d, "contacts", "late"); ok {
			t.Errorf("%s shows the revoked laptop's later write:\n%s", filepath.Base(d), r)
		}
		waitRecord(t, d, "contacts", "early", map[string]any{"last_name": "Before"})
	}
	c.stop()
}

// TestSecretsAndAPIOwnerOnly: the data dir, the identity and swarm keys and
// the API socket are the owner's only, and the API listens on no network
// address.
func TestSecretsAndAPIOwnerOnly(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	dir := initDir(t, root, "office", "--office", "--listen", "/ip4/127.0.0.1/tcp/0")
	n := startNode(t, dir)
	for name, want := range map[string]os.FileMode{"": 0o700, datadir.IdentityFile: 0o600, datadir.SwarmKeyFile: 0o600, datadir.SocketFile: 0o600, datadir.SettingsFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", filepath.Join(dir, name), got, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, datadir.SocketFile)); fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s is not a Unix socket", datadir.SocketFile)
	}
	// The node announces its libp2p address only (the API is the socket).
	st := mustStatus(t, dir)
	if len(st.ListenAddrs) != 1 || !strings.HasPrefix(st.ListenAddrs[0], "/ip4/127.0.0.1/tcp/") {
		t.Errorf("listen addrs %v", st.ListenAddrs)
	}
	n.stop()
}
