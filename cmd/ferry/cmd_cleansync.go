package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/datadir"
)

func newCleanSyncCmd(g *globals) *cobra.Command {
	var yes, force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "clean-sync [--yes] [--force]",
		Short: "Discard the local store and copy the office's state (the node must be stopped)",
		Long: `Make this node an exact copy of the office's state: the local store is
discarded (identity and config stay), the office's store is copied (a
consistent snapshot of its replicated state and blocks, checked block by
block), then the node connects, catches up on anything newer, and stops
once its digest equals the office's. It asks for confirmation (--yes skips it)
and refuses while this node holds edits that no office has acknowledged,
unless --force. Stop the node first; start it again afterwards.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := api.Dial(g.dir); err == nil {
				return fmt.Errorf("a node is running in %s: stop it first, then run clean-sync", g.dir)
			}
			fc, err := datadir.ReadSettings(g.dir)
			if err != nil {
				return err
			}
			if !yes {
				ok, err := confirm(cmd, fmt.Sprintf("Discard the local store of %s and copy the office's state? Type yes: ", g.dir))
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("clean sync cancelled")
				}
			}
			return runCleanSync(cmd, g.dir, fc, force, timeout)
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&force, "force", false, "discard local edits that no office holds yet")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long")
	return cmd
}

// confirm asks a yes/no question on the terminal.
func confirm(cmd *cobra.Command, question string) (bool, error) {
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && !isTerminal(f) {
		return false, usagef("no terminal to confirm on: pass --yes")
	}
	fmt.Fprint(cmd.ErrOrStderr(), question)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && err != io.EOF {
		return false, err
	}
	return strings.TrimSpace(strings.ToLower(line)) == "yes", nil
}

// runCleanSync copies the configured office into dir, with progress.
func runCleanSync(cmd *cobra.Command, dir string, fc *datadir.Settings, force bool, timeout time.Duration) error {
	cfg, err := nodeConfig(dir, fc)
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	var bar *progressbar.ProgressBar
	tty := isTerminal(cmd.ErrOrStderr())
	lastPhase := ""
	var copyBar *progressbar.ProgressBar
	res, err := node.CleanSync(ctx, cfg, force, func(p node.CleanSyncProgress) {
		if p.Phase == "copying" && tty {
			if copyBar == nil {
				copyBar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(cmd.ErrOrStderr()),
					progressbar.OptionSetDescription("copying the office's store"), progressbar.OptionShowBytes(true),
					progressbar.OptionOnCompletion(func() { fmt.Fprintln(cmd.ErrOrStderr()) }))
			}
			copyBar.Describe(fmt.Sprintf("copying the office's store: %d entries", p.Entries))
			_ = copyBar.Set64(p.CopyBytes)
			return
		}
		if copyBar != nil && p.Phase != "copying" {
			_ = copyBar.Finish()
			copyBar = nil
		}
		if p.Phase == "fetching" && p.Total > 0 && tty {
			if bar == nil {
				bar = progressbar.NewOptions(p.Total, progressbar.OptionSetWriter(cmd.ErrOrStderr()),
					progressbar.OptionSetDescription("fetching blocks"), progressbar.OptionShowCount(),
					progressbar.OptionShowBytes(false), progressbar.OptionOnCompletion(func() { fmt.Fprintln(cmd.ErrOrStderr()) }))
			}
			_ = bar.Set(p.Blocks)
			return
		}
		if p.Phase != lastPhase {
			lastPhase = p.Phase
			switch p.Phase {
			case "copying":
				fmt.Fprintln(cmd.ErrOrStderr(), "copying the office's store...")
			case "connecting":
				fmt.Fprintln(cmd.ErrOrStderr(), "connecting to the office...")
			case "fetching":
				fmt.Fprintln(cmd.ErrOrStderr(), "fetching blocks...")
			case "merging":
				fmt.Fprintln(cmd.ErrOrStderr(), "merging...")
			}
		}
	})
	if err != nil {
		return err
	}
	if bar != nil {
		_ = bar.Finish()
	}
	fmt.Fprintf(cmd.OutOrStdout(), "copied the state of %s in %s: %d store entries (%.1f MB), then %d blocks; same heads as the office\n",
		shortID(res.Peer.String()), res.Took.Round(time.Millisecond), res.Entries, float64(res.Bytes)/1e6, res.Blocks)
	if res.Discarded > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "discarded %s that no office held\n", plural(res.Discarded, "local edit"))
	}
	return nil
}
