// Command ferry is Ferry's one binary: the node daemon and the CLI that
// talks to it. Run `ferry --help` for the commands.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// usageError marks a command line the user got wrong (exit code 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// globals are the root flags.
type globals struct {
	dir string
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(os.Stderr, "ferry:", err)
	var ee *codedError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintln(os.Stderr, "Run 'ferry --help' for usage.")
		return exitUsage
	}
	return exitFailed
}

// isCobraUsage recognises cobra's own command-line errors.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "requires at most"} {
		if strings.HasPrefix(msg, p) || strings.Contains(msg, " "+p) {
			return true
		}
	}
	return false
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "ferry",
		Short: "Offline-first, peer-to-peer replication of business records",
		Long: `Ferry keeps a local, durable store of records on every machine and
replicates it peer to peer (a Merkle-CRDT over libp2p): edits work offline,
merge field by field, and every node converges without a central server.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.dir == "" {
				g.dir = defaultDir()
			}
			abs, err := filepath.Abs(g.dir)
			if err != nil {
				return fmt.Errorf("data dir %q: %w", g.dir, err)
			}
			g.dir = abs
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.dir, "dir", "", "data dir (default $FERRY_DIR, then ~/.ferry)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newInitCmd(g), newNodeCmd(g), newDemoCmd(),
		newSchemaCmd(g), newPutCmd(g), newGetCmd(g), newListCmd(g), newDeleteCmd(g),
		newImportCmd(g), newExportCmd(g), newStatusCmd(g), newPeersCmd(g),
		newConflictsCmd(g), newResolveCmd(g), newHistoryCmd(g),
		newSyncCmd(g), newDiffCmd(g), newCleanSyncCmd(g),
		newOfflineCmd(g, true), newOfflineCmd(g, false),
		newInviteCmd(g), newMembersCmd(g), newRevokeCmd(g),
		newChannelsCmd(g), newGrantCmd(g, true), newGrantCmd(g, false), newSubscribeCmd(g, true), newSubscribeCmd(g, false),
		newCheckCmd(g), newCompactCmd(g), newGUICmd(g),
		newWorkflowsCmd(g), newDuplicatesCmd(g), newMergeCmd(g),
	)
	return root
}

func defaultDir() string {
	if d := os.Getenv("FERRY_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".ferry"
	}
	return filepath.Join(home, ".ferry")
}

// minArgs is cobra.MinimumNArgs with a usage error naming the arguments.
func minArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s: want %s, got %d argument(s)", cmd.Name(), names, len(args))
		}
		return nil
	}
}

// exactArgs is cobra.ExactArgs with a usage error naming the arguments.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s: want %s, got %d argument(s)", cmd.Name(), names, len(args))
		}
		return nil
	}
}
