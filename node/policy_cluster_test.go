package node

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/testnet"
)

// Policy scenarios on real nodes: the office and two laptops edit the same
// field while apart; after they meet, the policy decides the same way on
// every node.

func policyClusterSchema(policy string) string {
	return `
collections:
  contacts:
    policy: ` + policy + `
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      phone:      {type: string}
`
}

// concurrentPhoneEdits makes the office edit c1's phone at 10:00 and laptop1
// at 11:00 while apart, then reconnects everyone.
func concurrentPhoneEdits(t *testing.T, c *cluster) {
	t.Helper()
	put(t, c.nodes[0], "c1", map[string]any{"last_name": "Smith", "phone": "0"})
	c.waitConverged()
	c.setOffline(true, 1)
	c.nodes[0].clock.Set(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	put(t, c.nodes[0], "c1", map[string]any{"phone": "office"})
	c.nodes[1].clock.Set(time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC))
	put(t, c.nodes[1], "c1", map[string]any{"phone": "laptop"})
	c.setOffline(false, 1)
	c.waitConverged()
}

func phoneOn(t *testing.T, n *clusterNode) crdt.FieldValue {
	t.Helper()
	rec, err := n.Store().Get(context.Background(), "contacts", "c1")
	if err != nil {
		t.Fatal(err)
	}
	return rec.Fields["phone"]
}

func TestClusterOfficeWins(t *testing.T) {
	c := newClusterWith(t, 2, policyClusterSchema("office"), nil)
	concurrentPhoneEdits(t, c)
	for _, n := range c.nodes {
		if f := phoneOn(t, n); f.Value != "office" || f.Open {
			t.Errorf("%s: phone %v open=%t, want the office's older value", n.cfg.Name, f.Value, f.Open)
		}
	}
}

func TestClusterLaptopWins(t *testing.T) {
	c := newClusterWith(t, 2, policyClusterSchema("laptop"), nil)
	c.setOffline(true, 1)
	put(t, c.nodes[0], "c1", map[string]any{"last_name": "Smith"})
	c.nodes[1].clock.Set(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	put(t, c.nodes[1], "c1", map[string]any{"last_name": "FromLaptop"})
	c.nodes[0].clock.Set(time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC))
	put(t, c.nodes[0], "c1", map[string]any{"last_name": "FromOffice"})
	c.setOffline(false, 1)
	c.waitConverged()
	for _, n := range c.nodes {
		rec, err := n.Store().Get(context.Background(), "contacts", "c1")
		if err != nil {
			t.Fatal(err)
		}
		if v := rec.Fields["last_name"].Value; v != "FromLaptop" {
			t.Errorf("%s: last_name %v, want the laptop's older value", n.cfg.Name, v)
		}
	}
}

func TestClusterManualConflictResolvedOnALaptop(t *testing.T) {
	c := newClusterWith(t, 2, policyClusterSchema("manual"), nil)
	concurrentPhoneEdits(t, c)
	for _, n := range c.nodes {
		if f := phoneOn(t, n); f.Value != "laptop" || !f.Open || len(f.Candidates) != 2 {
			t.Fatalf("%s: phone %v open=%t candidates=%d, want an open conflict showing the newest", n.cfg.Name, f.Value, f.Open, len(f.Candidates))
		}
	}
	// laptop2, which wrote neither value, resolves it.
	if _, err := c.nodes[2].Store().Resolve(context.Background(), "contacts", "c1", "phone", crdt.Resolution{Value: "agreed"}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged()
	for _, n := range c.nodes {
		if f := phoneOn(t, n); f.Value != "agreed" || f.Conflicted() {
			t.Errorf("%s: phone %v candidates %v after resolution", n.cfg.Name, f.Value, f.Candidates)
		}
	}
}

// writeHook writes an executable hook script and returns its path.
func writeHook(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestClusterConflictHookResolves(t *testing.T) {
	dir := t.TempDir()
	seen := filepath.Join(dir, "request.json")
	// The hook keeps the request it got and picks candidate 2 (the office's
	// older value; the newest shows first).
	hook := writeHook(t, "cat > "+seen+"\necho '{\"pick\": 2}'\n")
	c := newClusterWith(t, 2, policyClusterSchema("manual"), &HookConfig{Command: []string{hook}, Timeout: 5 * time.Second})
	concurrentPhoneEdits(t, c)
	testnet.WaitFor(t, 20*time.Second, func() bool {
		for _, n := range c.nodes {
			if f := phoneOn(t, n); f.Value != "office" || f.Conflicted() {
				return false
			}
		}
		return true
	})
	req, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"field":"phone"`, `"policy":"manual"`, `"value":"laptop"`, `"value":"office"`, `"writer_name":"laptop1"`} {
		if !strings.Contains(string(req), want) {
			t.Errorf("hook request lacks %s: %s", want, req)
		}
	}
}

func TestClusterConflictHookFailuresLeaveTheConflictOpen(t *testing.T) {
	cases := map[string]HookConfig{
		"exit 1":         {Command: []string{writeHook(t, "echo broken >&2; exit 1\n")}, Timeout: 5 * time.Second},
		"garbage":        {Command: []string{writeHook(t, "echo 'take the second one'\n")}, Timeout: 5 * time.Second},
		"out of range":   {Command: []string{writeHook(t, "echo '{\"pick\": 7}'\n")}, Timeout: 5 * time.Second},
		"wrong type":     {Command: []string{writeHook(t, "echo '{\"value\": 12}'\n")}, Timeout: 5 * time.Second},
		"hangs":          {Command: []string{writeHook(t, "sleep 30\n")}, Timeout: 300 * time.Millisecond},
		"no such binary": {Command: []string{filepath.Join(t.TempDir(), "missing")}, Timeout: time.Second},
		"http down":      {URL: "http://127.0.0.1:1/resolve", Timeout: time.Second},
	}
	for name, hook := range cases {
		t.Run(name, func(t *testing.T) {
			c := newClusterWith(t, 1, policyClusterSchema("manual"), &hook)
			concurrentPhoneEdits(t, c)
			// Wait until the office logged why the hook's answer was not
			// used; then the office goes on working and the conflict is
			// still open everywhere.
			testnet.WaitFor(t, 20*time.Second, func() bool {
				return c.officeLog.Has(slog.LevelWarn, "conflict hook failed: the conflict stays open") ||
					c.officeLog.Has(slog.LevelWarn, "conflict hook answer refused: the conflict stays open")
			})
			put(t, c.nodes[0], "marker", map[string]any{"last_name": "M"})
			c.waitConverged()
			for _, n := range c.nodes {
				if f := phoneOn(t, n); !f.Open || len(f.Candidates) != 2 {
					t.Errorf("%s: phone %v open=%t after a failing hook", n.cfg.Name, f.Value, f.Open)
				}
			}
		})
	}
}
