package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/schema"
)

//go:embed demo_schema.yaml
var demoSchema []byte

func newDemoCmd() *cobra.Command {
	var keep, verbose bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show offline edits merging field by field on three local nodes",
		Long: `Start an office node and two laptop nodes on loopback in temporary
directories, take both laptops offline, change the first name of a contact on
one and the last name on the other, bring them back, and print the converged
record from all three nodes (Jeff Smith -> John Rodman everywhere).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelError + 4
			if verbose {
				level = slog.LevelInfo
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return runDemo(ctx, cmd.OutOrStdout(), log, keep)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary data dirs")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "show the nodes' logs")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "give up after this long")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, log *slog.Logger, keep bool) (err error) {
	root, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Fprintf(out, "data dirs kept in %s\n", root)
	} else {
		defer os.RemoveAll(root)
	}
	// A private network founded by the office; the laptops join it with
	// one-time invitations, as `ferry invite` / `ferry init --join` do.
	psk, err := datadir.NewSwarmKey()
	if err != nil {
		return err
	}
	start := func(name, role, founder string, peers []multiaddr.Multiaddr) (*node.Node, error) {
		cfg := node.DefaultConfig(filepath.Join(root, name))
		cfg.Name, cfg.Role, cfg.Peers, cfg.Logger = name, role, peers, log
		cfg.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}
		cfg.SwarmKey, cfg.Founder = psk, founder
		key, err := datadir.LoadOrCreateIdentity(filepath.Join(cfg.Dir, datadir.IdentityFile))
		if err != nil {
			return nil, err
		}
		if cfg.Founder == "" {
			id, err := peer.IDFromPrivateKey(key)
			if err != nil {
				return nil, err
			}
			cfg.Founder = id.String()
		}
		return node.Start(ctx, cfg)
	}
	office, err := start("office", node.RoleOffice, "", nil)
	if err != nil {
		return err
	}
	defer office.Close()
	laptops := make([]*node.Node, 2)
	for i := range laptops {
		name := fmt.Sprintf("laptop%d", i+1)
		tok, err := office.Invite(ctx, name, node.RoleLaptop, 10*time.Minute)
		if err != nil {
			return err
		}
		if laptops[i], err = start(name, node.RoleLaptop, tok.Founder, tok.OfficeAddrs()); err != nil {
			return err
		}
		defer laptops[i].Close()
		if _, _, err := laptops[i].Join(ctx, tok, name); err != nil {
			return fmt.Errorf("%s could not join: %w", name, err)
		}
	}
	all := []*node.Node{office, laptops[0], laptops[1]}
	fmt.Fprintln(out, "Ferry demo: an office node and two laptops on loopback, in a private network")
	fmt.Fprintln(out, "(the laptops joined with one-time invitations; every operation is signed)")
	for _, n := range all {
		fmt.Fprintf(out, "  %-8s %s\n", n.Config().Name, n.Addrs()[0])
	}

	sc, err := schema.Parse(demoSchema)
	if err != nil {
		return err
	}
	if _, err := office.Store().ApplySchema(ctx, sc); err != nil {
		return err
	}
	if _, err := office.Store().Put(ctx, "contacts", "c1", map[string]any{
		"first_name": "Jeff", "last_name": "Smith", "email": "jeff@example.com"}); err != nil {
		return err
	}
	fmt.Fprintln(out, "\n1. The office applies the CRM schema and creates contacts/c1: Jeff Smith")
	t0 := time.Now()
	if err := waitAll(ctx, all, "Jeff Smith"); err != nil {
		return fmt.Errorf("laptops never received the contact: %w", err)
	}
	fmt.Fprintf(out, "   every node has Jeff Smith (%s)\n", time.Since(t0).Round(time.Millisecond))

	fmt.Fprintln(out, "\n2. Both laptops go offline")
	for _, l := range laptops {
		if err := l.SetOffline(true); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "\n3. Offline, laptop1 changes the first name, laptop2 the last name")
	if _, err := laptops[0].Store().Put(ctx, "contacts", "c1", map[string]any{"first_name": "John"}); err != nil {
		return err
	}
	if _, err := laptops[1].Store().Put(ctx, "contacts", "c1", map[string]any{"last_name": "Rodman"}); err != nil {
		return err
	}
	for _, n := range all {
		fmt.Fprintf(out, "   %-8s sees %s\n", n.Config().Name, fullName(ctx, n))
	}

	fmt.Fprintln(out, "\n4. Both laptops come back online")
	t0 = time.Now()
	for _, l := range laptops {
		if err := l.SetOffline(false); err != nil {
			return err
		}
	}
	if err := waitAll(ctx, all, "John Rodman"); err != nil {
		for _, n := range all {
			fmt.Fprintf(out, "   %-8s sees %s\n", n.Config().Name, fullName(ctx, n))
		}
		return fmt.Errorf("nodes did not converge: %w", err)
	}
	fmt.Fprintf(out, "\n5. Converged in %s. The record on each node:\n", time.Since(t0).Round(time.Millisecond))
	for _, n := range all {
		rec, err := n.Store().Get(ctx, "contacts", "c1")
		if err != nil {
			return err
		}
		nodes, err := n.Store().Nodes(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "\n[%s]\n", n.Config().Name)
		printRecord(out, apijson.FromRecord(rec, nodes))
	}
	return nil
}

// fullName renders a contact's first and last name as one node sees them.
func fullName(ctx context.Context, n *node.Node) string {
	rec, err := n.Store().Get(ctx, "contacts", "c1")
	if err != nil {
		if errors.Is(err, crdt.ErrNotFound) {
			return "(no record)"
		}
		return "(" + err.Error() + ")"
	}
	v := rec.Values()
	return fmt.Sprintf("%v %v", v["first_name"], v["last_name"])
}

// waitAll polls until every node shows the name, or ctx ends.
func waitAll(ctx context.Context, nodes []*node.Node, name string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		done := true
		for _, n := range nodes {
			if fullName(ctx, n) != name {
				done = false
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
