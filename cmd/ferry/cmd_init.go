package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/enrol"
)

// joinTimeout bounds `init --join`: reach the office, redeem the
// invitation, receive the membership.
const joinTimeout = 2 * time.Minute

func newInitCmd(g *globals) *cobra.Command {
	var (
		office bool
		name   string
		listen []string
		peers  []string
		topic  string
		from   bool
		join   string
	)
	cmd := &cobra.Command{
		Use:   "init (--office | --join TOKEN)",
		Short: "Create a data dir: a new network's office, or a node joining one",
		Long: `Create a data dir: an Ed25519 identity key, config.yaml and an empty store.

--office founds a new network: it creates the network's swarm key (a libp2p
private network: nodes without it cannot even connect) and makes this node
its founding office. Issue invitations on it with 'ferry invite'.

--join TOKEN enrols this machine with the office that printed the token: it
stores the network's swarm key, reaches the office, redeems the one-time
invitation (the office records this node as a member, with the name and role
of the invitation) and waits until the membership has synced here.

Without either, the node is in an open network (no swarm key, nothing
signed): only for trying Ferry out; such a node cannot talk to a network
founded with --office.

--listen sets the addresses to listen on (repeatable; default every
interface, a random TCP port); --peer adds a peer to keep connected (a
multiaddr ending in /p2p/<peer id>, repeatable).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if office && join != "" {
				return usagef("--office founds a network, --join joins one: give one of them")
			}
			var tok enrol.Token
			if join != "" {
				var err error
				if tok, err = enrol.ParseToken(join); err != nil {
					return usageError{err}
				}
			}
			if _, err := node.ParseAddrs(listen, false); err != nil {
				return usageError{fmt.Errorf("--listen: %w", err)}
			}
			if _, err := node.ParseAddrs(peers, true); err != nil {
				return usageError{fmt.Errorf("--peer: %w", err)}
			}
			if from && len(peers) == 0 && join == "" {
				return usagef("--from-office needs --peer (the office's address) or --join")
			}
			if (office || join != "") && hasQUIC(listen) {
				return usagef("--listen: a private network works over TCP only (QUIC cannot carry its key)")
			}
			_, statErr := os.Stat(g.dir)
			created := errors.Is(statErr, os.ErrNotExist)
			ok := false
			defer func() {
				if !ok && created {
					_ = os.RemoveAll(g.dir) // a failed init leaves nothing behind
				}
			}()
			opts := node.InitOptions{Name: name, Office: office, Listen: listen, Peers: peers, Topic: topic}
			if join != "" {
				opts.Join = &tok
			}
			fc, id, err := node.Init(g.dir, opts)
			if err != nil {
				return err
			}
			name, listen = fc.Name, fc.Listen
			out := cmd.OutOrStdout()
			if join != "" {
				member, err := runJoin(cmd.Context(), g.dir, fc, tok)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "joined the network of office %s as %q (%s)\n", shortID(tok.Office), member, tok.Role)
			}
			fmt.Fprintf(out, "initialised %s\n  peer id: %s\n  role:    %s\n  name:    %s\n", g.dir, id, fc.Role, name)
			for _, a := range listen {
				fmt.Fprintf(out, "  listen:  %s\n", a)
			}
			switch {
			case office:
				fmt.Fprintf(out, "  network: new, private (swarm key in %s); invite machines with: ferry --dir %s invite --name NAME\n", datadir.SwarmKeyFile, g.dir)
			case join == "":
				fmt.Fprintf(out, "  network: open (no swarm key, nothing signed)\n")
			}
			if from {
				if err := runCleanSync(cmd, g.dir, fc, false, 10*time.Minute); err != nil {
					return err
				}
			}
			ok = true
			fmt.Fprintf(out, "Start it with: ferry --dir %s node\n", g.dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&office, "office", false, "found a new network with this node as its office (creates the swarm key)")
	f.StringVar(&join, "join", "", "join a network with the token 'ferry invite' printed on its office")
	f.StringVar(&name, "name", "", "a name shown to other nodes (default: the data dir's name)")
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (repeatable)")
	f.StringArrayVar(&peers, "peer", nil, "peer multiaddr ending in /p2p/<id> to keep connected (repeatable)")
	f.StringVar(&topic, "topic", "ferry", "replication topic: nodes of one Ferry network share it")
	f.BoolVar(&from, "from-office", false, "copy the office's state now (clean sync from the --peer or the joined office)")
	return cmd
}

// runJoin starts the new node just long enough to redeem its invitation
// and receive its membership. It returns the name the office recorded.
func runJoin(ctx context.Context, dir string, fc *datadir.Settings, tok enrol.Token) (string, error) {
	cfg, err := nodeConfig(dir, fc)
	if err != nil {
		return "", err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	cfg.ListenAddrs = nil // nobody needs to reach it yet
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return "", err
	}
	name, _, err := n.Join(ctx, tok, fc.Name)
	if cerr := n.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return name, nil
}

func hasQUIC(addrs []string) bool {
	for _, s := range addrs {
		if a, err := multiaddr.NewMultiaddr(s); err == nil {
			for _, c := range a {
				if c.Protocol().Code == multiaddr.P_QUIC_V1 || c.Protocol().Code == multiaddr.P_QUIC {
					return true
				}
			}
		}
	}
	return false
}
