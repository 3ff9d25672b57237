package main

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

// The office's workflow rule and its action: this harness binary, run
// again in its helper mode (see workflows.go).

// workflowConfig is the office's config.yaml addition: the rule, run by
// this harness binary in its helper mode.
func (c *cluster) workflowConfig() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("workflow action: %w", err)
	}
	return fmt.Sprintf(`
workflows:
  - name: %s
    collection: %s
    when: ["score > %d"]
    command: [%q, %q, %q]
    timeout: 20s
    attempts: %d
`, wfRule, collection, wfThreshold, self, wfActionArg, filepath.Join(c.root, wfLogName), wfAttempts), nil
}

// configureWorkflows appends the rule to the office's config.yaml (before
// its first start, so that every change is journalled).
func (c *cluster) configureWorkflows(office *node) error {
	text, err := c.workflowConfig()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(office.dir, "config.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("office config: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("office config: %w", err)
	}
	c.logf("%s: workflow %s on %s when score > %d (action log %s)", office.name, wfRule, collection, wfThreshold, filepath.Join(c.root, wfLogName))
	return f.Close()
}

// wfHash is the deterministic draw of an attempt.
func wfHash(key string, attempt int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", key, attempt)
	return h.Sum64()
}

// workflowAction is the helper mode: the action of wfRule, logging to
// logPath. It returns the exit code.
func workflowAction(logPath string) int {
	ppid := os.Getppid()
	key := os.Getenv("FERRY_IDEMPOTENCY_KEY")
	logLine := func(verb, rest string) bool {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return false
		}
		_, err = fmt.Fprintf(f, "%s %s ppid=%d t=%d%s\n", verb, key, ppid, time.Now().UnixNano(), rest)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		return err == nil
	}
	if key == "" || strings.ContainsAny(key, " \n") {
		key = "-"
		logLine("bad", " reason=no-key")
		return 1
	}
	if !logLine("start", "") {
		return 1
	}
	var p apijson.WorkflowPayload
	data, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = json.Unmarshal(data, &p)
	}
	if err != nil {
		// A killed office closes the pipe before the kernel gives its
		// children a new parent: wait a little for that.
		for i := 0; i < 100 && os.Getppid() == ppid && ppid != 1; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err != nil && (os.Getppid() != ppid || ppid == 1) {
		// Its office was killed while it wrote the payload (or before
		// the action read its parent: init's pid 1 then): a cut payload,
		// not a bad one (the checker accepts the line only if the
		// harness killed that office, or one at that time).
		logLine("orphan", " reason=cut-payload")
		return 1
	}
	if err != nil || p.IdempotencyKey != key {
		logLine("bad", fmt.Sprintf(" reason=payload-key:%q", p.IdempotencyKey))
		return 1
	}
	score := "-"
	if v, ok := p.After["score"]; ok {
		if f, ok := v.(float64); ok {
			score = strconv.FormatFloat(f, 'f', -1, 64)
		} else {
			score = fmt.Sprintf("?%v", v)
		}
	}
	rest := fmt.Sprintf(" attempt=%d id=%s event=%s score=%s", p.Attempt, p.ID, p.Event, score)
	h := wfHash(key, p.Attempt)
	if (h>>8)%8 == 0 {
		// Some actions take a while: a kill of the office lands in them.
		time.Sleep(time.Duration(50+(h>>16)%200) * time.Millisecond)
	}
	if h%wfFailOneIn == 0 {
		logLine("fail", rest)
		fmt.Fprintln(os.Stderr, "chaos: this attempt fails on purpose")
		return 1
	}
	if !logLine("done", rest) {
		return 1
	}
	return 0
}
