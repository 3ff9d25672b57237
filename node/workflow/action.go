package workflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/ferry-crm/ferry/node/apijson"
)

// deliver runs the rule's action once with payload p, bounded by the
// rule's timeout: a command must exit 0, a URL answer 2xx.
func deliver(ctx context.Context, r *Rule, p apijson.WorkflowPayload) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	switch {
	case len(r.Command) > 0:
		cmd := exec.CommandContext(ctx, r.Command[0], r.Command[1:]...)
		cmd.Stdin = bytes.NewReader(body)
		cmd.Env = append(os.Environ(), "FERRY_IDEMPOTENCY_KEY="+p.IdempotencyKey, "FERRY_WORKFLOW="+r.Name)
		var out limited
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = time.Second
		// Its own process group: at the timeout the whole group is
		// killed (a script's children with it).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		err := cmd.Run()
		if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
			// It exited 0 and left a child holding its output: done.
			err = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: no exit within %s", r.Command[0], r.Timeout)
			}
			return fmt.Errorf("%s: %w: %s", r.Command[0], err, strings.TrimSpace(out.String()))
		}
		return nil
	case r.URL != "":
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", p.IdempotencyKey)
		resp, err := noRedirects.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: no answer within %s", r.URL, r.Timeout)
			}
			return err
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s answered %s: %s", r.URL, resp.Status, strings.TrimSpace(string(msg)))
		}
		return nil
	}
	return errNoAction
}

// limited keeps the first 2 KiB of an action's output, for the error.
type limited struct{ b bytes.Buffer }

func (l *limited) Write(p []byte) (int, error) {
	if room := 2048 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limited) String() string { return l.b.String() }

// Report lists the rules, the pending and failed runs, and the latest done.
func (e *Engine) Report(ctx context.Context) (apijson.Workflows, error) {
	out := apijson.Workflows{Rules: []apijson.WorkflowRule{}, Pending: []apijson.WorkflowRun{}, Failed: []apijson.WorkflowRun{}, Recent: []apijson.WorkflowRun{}}
	byName := map[string]*apijson.WorkflowRule{}
	for i := range e.rules {
		r := &e.rules[i]
		action := r.URL
		if len(r.Command) > 0 {
			action = strings.Join(r.Command, " ")
		}
		out.Rules = append(out.Rules, apijson.WorkflowRule{Name: r.Name, Collection: r.Collection, When: r.When, Events: r.Events,
			Action: action, Office: r.Office, Here: e.d.Here(ctx, r)})
	}
	for i := range out.Rules {
		byName[out.Rules[i].Name] = &out.Rules[i]
	}
	for _, part := range []struct {
		root  ds.Key
		state string
		list  *[]apijson.WorkflowRun
	}{{pendingRoot, statePending, &out.Pending}, {failedRoot, stateFailed, &out.Failed}, {doneRoot, stateDone, &out.Recent}} {
		runs, err := e.list(ctx, part.root)
		if err != nil {
			return out, err
		}
		for _, s := range runs {
			w := toJSON(s.run, part.state)
			if r := byName[s.Rule]; r != nil {
				switch part.state {
				case statePending:
					r.Pending++
				case stateFailed:
					r.Failed++
				case stateDone:
					r.Done++
					if r.LastRun == nil || s.Finished.After(*r.LastRun) {
						t := s.Finished
						r.LastRun = &t
					}
				}
			}
			*part.list = append(*part.list, w)
		}
	}
	sort.Slice(out.Recent, func(i, j int) bool { return out.Recent[i].Finished.After(*out.Recent[j].Finished) })
	if len(out.Recent) > 20 {
		out.Recent = out.Recent[:20]
	}
	js, err := e.d.Store.Journal(ctx, 0)
	if err != nil {
		return out, err
	}
	out.Journal = len(js)
	out.Unreadable = e.Unreadable()
	return out, nil
}

func toJSON(r run, state string) apijson.WorkflowRun {
	p := r.Payload
	w := apijson.WorkflowRun{Rule: r.Rule, Key: p.IdempotencyKey, Collection: p.Collection, ID: p.ID, Event: p.Event,
		Writer: p.Writer, WriterName: p.WriterName, State: state, Attempts: r.Attempts, LastError: r.LastError, Queued: r.Queued}
	if state == statePending {
		t := r.NextTry
		w.NextTry = &t
	}
	if !r.Finished.IsZero() {
		t := r.Finished
		w.Finished = &t
	}
	return w
}

// noRedirects posts without following redirects: a 3xx would turn the
// POST into a GET without its body, and a 2xx at the end would count as
// delivered. A redirect is an error (the status is not 2xx).
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
