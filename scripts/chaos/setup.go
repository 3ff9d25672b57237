package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// freePort returns a loopback TCP port nobody listens on now, outside the
// usual ephemeral range so that outgoing connections do not take it while
// its node is down.
func freePort(r *rand.Rand, taken map[int]bool) (int, error) {
	for range 200 {
		p := 20000 + r.IntN(12000)
		if taken[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		taken[p] = true
		return p, nil
	}
	return 0, errors.New("no free loopback port found")
}

// listenAddr is the address node n listens on.
func (n *node) listenAddr() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", n.port) }

// schemaYAML is the schema of every schedule: a few fields of each type,
// one field decided by a person (manual: its conflicts stay open until
// resolved) and one where the office wins; contacts are routed by
// territory into channels (channels.go).
const schemaYAML = `collections:
  contacts:
    channel: {field: territory}
    fields:
      name:   {type: string}
      email:  {type: string}
      city:   {type: string}
      phone:  {type: string, policy: manual}
      stage:  {type: enum, values: [lead, qualified, won, lost], policy: manual}
      amount: {type: number, policy: office}
      score:  {type: number}
      active: {type: bool}
      territory: {type: enum, values: [east, west]}
`

// setupCluster creates every data dir and starts every node: the office,
// the schema applied on it, then the laptops. All enrollment lives here:
// with a binary that has `ferry invite`, laptops join with an invite
// token; otherwise they are given the office's address with --peer.
func (c *cluster) setupCluster(ctx context.Context, r *rand.Rand) error {
	taken := map[int]bool{}
	for _, n := range c.nodes {
		p, err := freePort(r, taken)
		if err != nil {
			return err
		}
		n.port = p
	}
	office := c.nodes[0]
	res := c.ferry(ctx, office, "init", "--office", "--name", office.name, "--listen", office.listenAddr())
	if !res.ok() {
		return fmt.Errorf("init %s: %s", office.name, res.brief())
	}
	if err := c.learnPeerID(ctx, office, res); err != nil {
		return err
	}
	if err := c.configureWorkflows(office); err != nil {
		return err
	}
	if err := c.startNode(ctx, office); err != nil {
		return err
	}
	schemaFile := filepath.Join(c.root, "schema.yaml")
	if err := os.WriteFile(schemaFile, []byte(schemaYAML), 0o600); err != nil {
		return err
	}
	if res := c.ferry(ctx, office, "schema", "apply", schemaFile); !res.ok() {
		return fmt.Errorf("schema apply on %s: %s", office.name, res.brief())
	}
	officeAddr := fmt.Sprintf("%s/p2p/%s", office.listenAddr(), office.peerID)
	for _, n := range c.nodes[1:] {
		var res result
		if c.h.joinMode {
			inv := c.ferry(ctx, office, "invite", "--name", n.name, "--role", "laptop", "--json")
			if !inv.ok() {
				return fmt.Errorf("invite %s: %s", n.name, inv.brief())
			}
			var tok struct {
				Token string `json:"token"`
			}
			if err := json.Unmarshal([]byte(inv.stdout), &tok); err != nil || tok.Token == "" {
				return fmt.Errorf("invite --json for %s has no token: %q", n.name, inv.stdout)
			}
			res = c.ferry(ctx, n, "init", "--join", tok.Token, "--name", n.name, "--listen", n.listenAddr())
		} else {
			res = c.ferry(ctx, n, "init", "--name", n.name, "--listen", n.listenAddr(), "--peer", officeAddr)
		}
		if !res.ok() {
			return fmt.Errorf("init %s: %s", n.name, res.brief())
		}
		if err := c.learnPeerID(ctx, n, res); err != nil {
			return err
		}
		if err := c.startNode(ctx, n); err != nil {
			return err
		}
	}
	for _, n := range c.nodes[1:] {
		err := poll(ctx, startWithin, func() (bool, string) {
			r := c.ferry(ctx, n, "schema", "show", "--json")
			var sc struct {
				Collections map[string]struct {
					Fields map[string]any `json:"fields"`
				} `json:"collections"`
			}
			if !r.ok() || json.Unmarshal([]byte(r.stdout), &sc) != nil {
				return false, r.brief()
			}
			return len(sc.Collections["contacts"].Fields) == strings.Count(schemaYAML, "{type:"), r.stdout
		})
		if err != nil {
			return fmt.Errorf("%s never got the schema: %w", n.name, err)
		}
	}
	return c.setupChannels(ctx)
}

// learnPeerID reads the peer id from init's output, or from status.
func (c *cluster) learnPeerID(ctx context.Context, n *node, res result) error {
	for _, line := range strings.Split(res.stdout, "\n") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "peer id:"); ok {
			n.peerID = strings.TrimSpace(id)
			return nil
		}
	}
	st, _, err := c.status(ctx, n)
	if err != nil {
		return err
	}
	if st.PeerID == "" {
		return fmt.Errorf("no peer id for %s", n.name)
	}
	n.peerID = st.PeerID
	return nil
}
