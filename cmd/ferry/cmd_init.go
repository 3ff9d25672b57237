package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/node"
)

func newInitCmd(g *globals) *cobra.Command {
	var (
		office bool
		name   string
		listen []string
		peers  []string
		topic  string
		from   bool
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a data dir: identity key, config and store",
		Long: `Create a data dir: an Ed25519 identity key, config.yaml and an empty store.
--office marks the office anchor peer; --peer adds a peer to keep connected
(a multiaddr ending in /p2p/<peer id>, repeatable); --listen sets the
addresses to listen on (repeatable; default every interface, random TCP and
QUIC ports).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := parseAddrs(listen, false); err != nil {
				return usageError{fmt.Errorf("--listen: %w", err)}
			}
			if _, err := parseAddrs(peers, true); err != nil {
				return usageError{fmt.Errorf("--peer: %w", err)}
			}
			if from && len(peers) == 0 {
				return usagef("--from-office needs --peer (the office's address)")
			}
			if _, err := os.Stat(filepath.Join(g.dir, configFile)); err == nil {
				return fmt.Errorf("%s is already initialised", g.dir)
			}
			if err := os.MkdirAll(g.dir, 0o700); err != nil {
				return fmt.Errorf("create data dir: %w", err)
			}
			if err := os.Chmod(g.dir, 0o700); err != nil {
				return fmt.Errorf("create data dir: %w", err)
			}
			key, err := node.LoadOrCreateIdentity(filepath.Join(g.dir, node.IdentityFile))
			if err != nil {
				return err
			}
			id, err := peer.IDFromPrivateKey(key)
			if err != nil {
				return err
			}
			role := node.RoleLaptop
			if office {
				role = node.RoleOffice
			}
			if name == "" {
				name = filepath.Base(g.dir)
			}
			if len(listen) == 0 {
				listen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
			}
			fc := &fileConfig{Name: name, Role: role, Listen: listen, Peers: peers, Topic: topic}
			if err := fc.save(g.dir); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "initialised %s\n  peer id: %s\n  role:    %s\n  name:    %s\n", g.dir, id, role, name)
			for _, a := range listen {
				fmt.Fprintf(out, "  listen:  %s\n", a)
			}
			if from {
				if err := runCleanSync(cmd, g.dir, fc, false, 10*time.Minute); err != nil {
					return err
				}
			}
			fmt.Fprintf(out, "Start it with: ferry --dir %s node\n", g.dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&office, "office", false, "make this node the office anchor peer")
	f.StringVar(&name, "name", "", "a name shown to other nodes (default: the data dir's name)")
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (repeatable)")
	f.StringArrayVar(&peers, "peer", nil, "peer multiaddr ending in /p2p/<id> to keep connected (repeatable)")
	f.StringVar(&topic, "topic", "ferry", "replication topic: nodes of one Ferry network share it")
	f.BoolVar(&from, "from-office", false, "copy the office's state now (clean sync from the --peer)")
	return cmd
}
