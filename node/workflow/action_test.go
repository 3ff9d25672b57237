package workflow

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

func payload() apijson.WorkflowPayload {
	return apijson.WorkflowPayload{Rule: "r", IdempotencyKey: "k1", Collection: "contacts", ID: "c1", Event: "update"}
}

// A command that exits 0 but leaves a child holding its output delivered:
// it is not tried again.
func TestCommandExitZeroWithChildIsDone(t *testing.T) {
	r := &Rule{Name: "r", Command: []string{"sh", "-c", "sleep 5 & exit 0"}, Timeout: 10 * time.Second}
	start := time.Now()
	if err := deliver(context.Background(), r, payload()); err != nil {
		t.Fatalf("deliver: %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("deliver took %s: it waited for the child", d)
	}
}

// At the timeout the command's whole process group is killed, its
// children with it.
func TestCommandTimeoutKillsItsChildren(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	r := &Rule{Name: "r", Command: []string{"sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait"}, Timeout: 300 * time.Millisecond}
	err := deliver(context.Background(), r, payload())
	if err == nil || !strings.Contains(err.Error(), "no exit within") {
		t.Fatalf("deliver: %v", err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the action's child %d still runs after the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A webhook that redirects did not get the change: an error, not a
// delivery through a GET without the body.
func TestWebhookRedirectIsNotDelivered(t *testing.T) {
	got := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/moved" {
			got++
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, req, "/moved", http.StatusFound)
	}))
	defer srv.Close()
	r := &Rule{Name: "r", URL: srv.URL + "/hook", Timeout: 5 * time.Second}
	err := deliver(context.Background(), r, payload())
	if err == nil || !strings.Contains(err.Error(), "302") {
		t.Fatalf("deliver: %v", err)
	}
	if got != 0 {
		t.Errorf("the redirect was followed %d times", got)
	}
}
