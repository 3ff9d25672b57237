package main

// End-to-end tests of workflows (docs/workflows.md). Skipped with -short.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
)

// workflowScript writes an action that logs "start KEY" and "done KEY" to
// dir/log and saves its payload; its first run ever sleeps a minute
// before it succeeds (long enough to be killed).
func workflowScript(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "action.sh")
	script := fmt.Sprintf(`#!/bin/sh
d='%s'
cat > "$d/payload-$$.json"
echo "start $FERRY_IDEMPOTENCY_KEY" >> "$d/log"
if [ ! -e "$d/slept" ]; then touch "$d/slept"; sleep 60; fi
echo "done $FERRY_IDEMPOTENCY_KEY" >> "$d/log"
`, dir)
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

func readLog(t *testing.T, dir string) []string {
	data, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(string(data), "\n", " \n "))
}

func workflowsOf(t *testing.T, dir string) (apijson.Workflows, result) {
	t.Helper()
	var wf apijson.Workflows
	r := ferry(t, dir, "workflows", "--json")
	if r.Code == 0 {
		if err := json.Unmarshal([]byte(r.Stdout), &wf); err != nil {
			t.Fatalf("workflows --json: %v\n%s", err, r)
		}
	}
	return wf, r
}

// TestWorkflowDealWonOffline: a laptop offline wins a deal and comes back;
// the office's rule fires once for it (and not for the deal still a lead).
// The office is killed (-9) during the action: after the restart the action
// runs again with the same idempotency key, and succeeds once.
func TestWorkflowDealWonOffline(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	actDir := t.TempDir()
	office := initDir(t, root, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)))
	appendConfig(t, office, fmt.Sprintf(`workflows:
  - name: send-quote
    collection: contacts
    when: ["stage = won", "stage changed"]
    command: [%q]
    timeout: 2m
`, workflowScript(t, actDir)))
	op := startNode(t, office)
	laptop := joinDir(t, root, "laptop1", office, "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, office, "schema", "apply", schemaFile)
	lp := startNode(t, laptop)
	waitSchema(t, laptop)

	mustFerry(t, laptop, "offline")
	mustFerry(t, laptop, "put", "contacts", "deal1", "last_name=Doe", "stage=lead")
	mustFerry(t, laptop, "put", "contacts", "deal1", "stage=won", "amount=1200")
	mustFerry(t, laptop, "put", "contacts", "deal2", "last_name=Roe", "stage=lead")
	mustFerry(t, laptop, "online")
	waitRecord(t, office, "contacts", "deal1", map[string]any{"stage": "won"})

	// The action starts; the office dies during it.
	eventually(t, "the action starts", func() (bool, string) {
		l := readLog(t, actDir)
		return len(l) >= 2, strings.Join(l, " ")
	})
	if st := mustStatus(t, office); st.WorkflowsPending == nil || *st.WorkflowsPending != 1 {
		t.Errorf("status during the action: pending %v, want 1", st.WorkflowsPending)
	}
	op.kill()
	op = startNode(t, office)
	eventually(t, "the action ran again and succeeded", func() (bool, string) {
		wf, r := workflowsOf(t, office)
		return len(wf.Rules) == 1 && wf.Rules[0].Done == 1 && len(wf.Pending) == 0, r.String()
	})
	l := strings.Join(readLog(t, actDir), " ")
	wf, _ := workflowsOf(t, office)
	key := wf.Recent[0].Key
	if want := fmt.Sprintf("start %s start %s done %s", key, key, key); l != want {
		t.Fatalf("action log %q, want %q", l, want)
	}
	if r := wf.Recent[0]; r.ID != "deal1" || r.Event != "update" || r.WriterName != "laptop1" || r.Attempts != 2 {
		t.Errorf("run %+v", r)
	}
	// The payload: before and after, writer, key.
	files, _ := filepath.Glob(filepath.Join(actDir, "payload-*.json"))
	if len(files) != 2 {
		t.Fatalf("%d payloads, want 2", len(files))
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		var p apijson.WorkflowPayload
		if err := json.Unmarshal(data, &p); err != nil {
			t.Fatal(err)
		}
		if p.IdempotencyKey != key || p.Before["stage"] != "lead" || p.After["stage"] != "won" || p.After["amount"] != 1200.0 ||
			p.WriterName != "laptop1" || p.Time.IsZero() || strings.Join(p.Changed, ",") != "amount,stage" {
			t.Errorf("payload %s", data)
		}
	}
	// Later changes: one fires (a new win), one does not.
	mustFerry(t, laptop, "put", "contacts", "deal1", "amount=1300")
	mustFerry(t, laptop, "put", "contacts", "deal2", "stage=won")
	eventually(t, "deal2's win ran", func() (bool, string) {
		wf, r := workflowsOf(t, office)
		return len(wf.Rules) == 1 && wf.Rules[0].Done == 2 && len(wf.Pending) == 0, r.String()
	})
	if n := strings.Count(strings.Join(readLog(t, actDir), " "), "done"); n != 2 {
		t.Errorf("%d successful runs, want 2: %v", n, readLog(t, actDir))
	}
	if st := mustStatus(t, office); st.WorkflowsPending == nil || *st.WorkflowsPending != 0 || *st.WorkflowsFailed != 0 {
		t.Errorf("status: pending %v failed %v", st.WorkflowsPending, st.WorkflowsFailed)
	}
	lp.stop()
	op.stop()
}

// TestWorkflowFailsThenRetry: an action that keeps failing is listed as
// failed after its attempts; retry runs it again. Bad configs are refused.
func TestWorkflowFailsThenRetry(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	actDir := t.TempDir()
	office := initDir(t, root, "office", "--office", "--listen", "/ip4/127.0.0.1/tcp/0")
	flag := filepath.Join(actDir, "ok")
	script := filepath.Join(actDir, "fail.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\ncat >/dev/null\n[ -e '%s' ] || { echo refused >&2; exit 3; }\n", flag)), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("workflows:\n  - name: billing\n    collection: contacts\n    command: [%q]\n    attempts: 2\n", script)
	// A bad rule: the node refuses to start, naming it.
	bad := initDir(t, root, "bad", "--office", "--listen", "/ip4/127.0.0.1/tcp/0")
	appendConfig(t, bad, "workflows:\n  - name: x\n    collection: contacts\n    when: [\"stage ~ won\"]\n    command: [/bin/true]\n")
	if r := ferry(t, bad, "status"); r.Code == 0 || !strings.Contains(r.Stderr, `workflow "x": when "stage ~ won"`) {
		t.Errorf("a bad condition is not refused clearly:\n%s", r)
	}
	appendConfig(t, office, cfg)
	op := startNode(t, office)
	mustFerry(t, office, "schema", "apply", schemaFile)
	mustFerry(t, office, "put", "contacts", "c1", "last_name=Doe")
	eventually(t, "the run fails", func() (bool, string) {
		wf, r := workflowsOf(t, office)
		return len(wf.Failed) == 1 && strings.Contains(wf.Failed[0].LastError, "refused"), r.String()
	})
	if r := mustFerry(t, office, "status"); !strings.Contains(r.Stdout, "0 pending, 1 failed") {
		t.Errorf("status does not count the failed run:\n%s", r)
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := mustFerry(t, office, "workflows", "retry", "billing"); !strings.Contains(r.Stdout, "1 failed run(s) pending again") {
		t.Errorf("retry:\n%s", r)
	}
	eventually(t, "the retried run succeeds", func() (bool, string) {
		wf, r := workflowsOf(t, office)
		return len(wf.Failed) == 0 && len(wf.Rules) == 1 && wf.Rules[0].Done == 1, r.String()
	})
	if r := ferry(t, office, "workflows", "retry", "nope"); r.Code == 0 {
		t.Errorf("retry of an unknown rule succeeded:\n%s", r)
	}
	op.stop()
}
