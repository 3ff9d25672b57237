package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/spf13/cobra"
)

// Exit codes of sync and diff.
const (
	exitSyncTimeout = 3 // sync --wait: not in sync when the timeout passed
	exitDiffer      = 4 // diff: the nodes show different states
)

// codedError carries a specific exit code.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func newSyncCmd(g *globals) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "sync [--wait] [--timeout D]",
		Short: "Exchange heads with every connected peer now; --wait until all show the same state",
		Long: `Exchange heads with every connected peer now (nodes also do it when a
connection forms, when their heads change, and every sync interval). With
--wait, wait until this node and every connected peer show the same state
(equal digests of the visible records), printing progress; exit code 3 when
the timeout passes first (also when no peer is connected).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := runningNode(g.dir)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			var res struct {
				Peers []apijson.PeerSync `json:"peers"`
			}
			if err := c.Do(ctx, "POST", "/v1/sync", nil, &res); err != nil {
				return err
			}
			for _, p := range res.Peers {
				if p.Error != "" {
					fmt.Fprintf(out, "sync with %s failed: %s\n", shortID(p.Peer), p.Error)
				}
			}
			fmt.Fprintf(out, "heads exchanged with %s\n", plural(len(res.Peers), "peer"))
			if !wait {
				return nil
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			last := ""
			var lastErr error // the last failure to read the sync state, if any
			for {
				var st apijson.SyncState
				err := c.Do(ctx, "GET", "/v1/sync", nil, &st)
				if err != nil && ctx.Err() == nil {
					lastErr = err
				}
				if err == nil {
					behind := 0
					for _, p := range st.Peers {
						if !p.InSync {
							behind++
						}
					}
					line := fmt.Sprintf("%d of %d peers show the same state (digest %s)", len(st.Peers)-behind, len(st.Peers), short(st.Digest))
					if len(st.Peers) == 0 {
						line = "no peer connected: waiting for one"
					}
					if line != last {
						fmt.Fprintln(out, line)
						last = line
					}
					if behind == 0 && len(st.Peers) > 0 {
						fmt.Fprintln(out, "in sync")
						return nil
					}
				}
				select {
				case <-ctx.Done():
					err := fmt.Errorf("not in sync after %s", timeout)
					if lastErr != nil {
						err = fmt.Errorf("%w (last error: %v)", err, lastErr)
					}
					return &codedError{code: exitSyncTimeout, err: err}
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every connected peer shows the same state")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "with --wait: give up after this long (exit code 3)")
	return cmd
}

func newDiffCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff PEER [--json]",
		Short: "Compare this node's visible state with a connected peer's (exit 0 identical, 4 different)",
		Long: `Compare this node's visible state with a connected peer's (PEER is a peer id
or a node name) through digests exchanged over the sync protocol; when they
differ, list the records that differ. Exit code 0 when identical, 4 when not.`,
		Args: exactArgs(1, "PEER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := runningNode(g.dir)
			if err != nil {
				return err
			}
			var res apijson.DiffResult
			if err := c.Do(cmd.Context(), "GET", "/v1/diff/"+url.PathEscape(args[0]), nil, &res); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, res); err != nil {
					return err
				}
			} else {
				who := writerName(res.Peer, res.PeerName)
				if res.Identical {
					fmt.Fprintf(out, "identical to %s (digest %s)\n", who, res.Digest)
				} else {
					fmt.Fprintf(out, "differs from %s: %s here, %s there; %s differ:\n", who, short(res.Digest), short(res.PeerDigest), plural(len(res.Records), "record"))
					for _, r := range res.Records {
						where := "different"
						switch {
						case r.Here && !r.There:
							where = "only here"
						case !r.Here && r.There:
							where = "only there"
						}
						fmt.Fprintf(out, "  %s/%s  %s\n", r.Collection, r.ID, where)
					}
				}
				if line := diffEpochs(res); line != "" {
					fmt.Fprintln(out, line)
				}
			}
			if !res.Identical {
				return &codedError{code: exitDiffer, err: errors.New("the nodes differ")}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// short abbreviates a digest for text output.
func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// diffEpochs says, when this node and the peer are in different epochs of
// history, which epoch each is in and which node moves (the digests compare
// what both show, whatever their epochs); "" when the epochs are the same
// or the peer's is not known.
func diffEpochs(res apijson.DiffResult) string {
	rel := epochRelation(res.Epoch, res.PeerEpoch)
	if rel == "" {
		return ""
	}
	return fmt.Sprintf("epochs differ: here %s, there %s", shortEpoch(res.Epoch), rel)
}
