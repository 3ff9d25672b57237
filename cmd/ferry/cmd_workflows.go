package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newWorkflowsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "workflows",
		Short: "Show the office's workflows: rules, last runs, pending and failed changes",
		Long: `Show the workflows of this node (config.yaml, office nodes only): each rule,
the changes waiting for their action (pending, with the next attempt), those
given up after every attempt (failed: 'ferry workflows retry'), and the latest
successful runs. docs/workflows.md explains the guarantees.`,
		Args: exactArgs(0, "no argument"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				wf, err := c.Workflows(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), wf)
				}
				out := cmd.OutOrStdout()
				if len(wf.Rules) == 0 {
					fmt.Fprintln(out, "no workflows configured (add workflows: to config.yaml on an office node; see docs/workflows.md)")
					return nil
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "RULE\tCOLLECTION\tWHEN\tACTION\tHERE\tDONE\tPENDING\tFAILED\tLAST RUN")
				for _, r := range wf.Rules {
					last := "-"
					if r.LastRun != nil {
						last = r.LastRun.Local().Format(time.DateTime)
					}
					when := strings.Join(r.When, " and ")
					if when == "" {
						when = "always"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%d\t%d\t%d\t%s\n", r.Name, r.Collection, when, r.Action, r.Here, r.Done, r.Pending, r.Failed, last)
				}
				tw.Flush()
				for _, part := range []struct {
					title string
					runs  int
				}{{"pending", len(wf.Pending)}, {"failed", len(wf.Failed)}} {
					if part.runs == 0 {
						continue
					}
					fmt.Fprintf(out, "\n%s:\n", part.title)
					runs := wf.Pending
					if part.title == "failed" {
						runs = wf.Failed
					}
					for _, r := range runs {
						fmt.Fprintf(out, "  %s %s/%s (%s by %s) key %s, %d attempt(s)", r.Rule, r.Collection, r.ID, r.Event, writerName(r.Writer, r.WriterName), r.Key, r.Attempts)
						if r.NextTry != nil && r.Attempts > 0 {
							fmt.Fprintf(out, ", next %s", r.NextTry.Local().Format(time.TimeOnly))
						}
						if r.LastError != "" {
							fmt.Fprintf(out, ": %s", r.LastError)
						}
						fmt.Fprintln(out)
					}
				}
				if wf.Journal > 0 {
					fmt.Fprintf(out, "\n%d merged change(s) not looked at yet\n", wf.Journal)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	cmd.AddCommand(newWorkflowsRetryCmd(g))
	return cmd
}

func newWorkflowsRetryCmd(g *globals) *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "retry [RULE]",
		Short: "Try failed workflow runs again (all, a rule's, or one with --key)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("workflows retry: want at most one RULE, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rule := ""
			if len(args) == 1 {
				rule = args[0]
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				n, err := c.RetryWorkflows(cmd.Context(), rule, key)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d failed run(s) pending again\n", n)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "only the run with this idempotency key")
	return cmd
}
