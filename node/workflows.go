package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/workflow"
)

// workflowsFromSettings turns config.yaml's workflows into rules.
func workflowsFromSettings(in []datadir.Workflow) ([]workflow.Rule, error) {
	out := make([]workflow.Rule, 0, len(in))
	for _, w := range in {
		r := workflow.Rule{Name: w.Name, Collection: w.Collection, When: w.When, Events: w.Events,
			Command: w.Command, URL: w.URL, Office: w.Office, Attempts: w.Attempts}
		if w.Timeout != "" {
			d, err := time.ParseDuration(w.Timeout)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("config workflows: workflow %q: timeout %q: want a duration like 30s", w.Name, w.Timeout)
			}
			r.Timeout = d
		}
		out = append(out, r)
	}
	if err := workflow.ValidateRules(out); err != nil {
		return nil, fmt.Errorf("config workflows: %w", err)
	}
	return out, nil
}

// openWorkflows sets up the workflow engine of an office with workflows
// (run once the protocols are up: a CLI command that opened the store
// only reads it).
func (n *Node) openWorkflows() error {
	if len(n.cfg.Workflows) == 0 {
		return nil
	}
	wf, err := workflow.New(n.cfg.Workflows, workflow.Deps{Store: n.router, DS: n.datastore(), Names: n.Names,
		Here: n.runsWorkflow, Log: n.log.With("component", "workflows")})
	if err != nil {
		return fmt.Errorf("workflows: %w", err)
	}
	n.wf = wf
	return nil
}

// runsWorkflow says whether this office runs rule r: the office the rule
// names, or else the office with the smallest peer id among those this
// node knows of (_nodes; by membership in a secured network).
func (n *Node) runsWorkflow(ctx context.Context, r *workflow.Rule) bool {
	if r.Office != "" {
		return r.Office == n.cfg.Name
	}
	self := n.self.String()
	for id, info := range n.Names(ctx) {
		if id >= self {
			continue
		}
		role := info.Role
		if n.cfg.secured() {
			pid, err := peer.Decode(id)
			if err != nil {
				continue
			}
			role = n.roleOf(ctx, pid)
		}
		if role == RoleOffice {
			return false
		}
	}
	return true
}

// Workflows reports the workflows of this node (none configured: empty).
func (n *Node) Workflows(ctx context.Context) (apijson.Workflows, error) {
	if n.wf == nil {
		return apijson.Workflows{Rules: []apijson.WorkflowRule{}, Pending: []apijson.WorkflowRun{}, Failed: []apijson.WorkflowRun{}, Recent: []apijson.WorkflowRun{}}, nil
	}
	return n.wf.Report(ctx)
}

// RetryWorkflows moves failed runs back to pending.
func (n *Node) RetryWorkflows(ctx context.Context, rule, key string) (int, error) {
	if n.wf == nil {
		return 0, fmt.Errorf("retry: no workflows are configured on this node (config.yaml): %w", crdt.ErrNotFound)
	}
	return n.wf.Retry(ctx, rule, key)
}

// AllowDuplicates: this node's puts and imports write likely duplicates
// without being told (config allow_duplicates).
func (n *Node) AllowDuplicates() bool { return n.cfg.AllowDuplicates }

// workflowStatus fills the status's workflow and duplicate counts.
func (n *Node) workflowStatus(ctx context.Context, s *apijson.Status) {
	if n.wf != nil {
		p, f, err := n.wf.Counts(ctx)
		if err != nil {
			n.log.Warn("status: workflow runs", "err", err)
		} else {
			s.WorkflowsPending, s.WorkflowsFailed = &p, &f
		}
	}
	dups := 0
	if err := n.router.Duplicates(ctx, nil, func(crdt.DuplicateGroup) error { dups++; return nil }); err != nil {
		n.log.Warn("status: duplicates", "err", err)
		return
	}
	s.Duplicates = dups
}
