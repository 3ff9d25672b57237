package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/apijson"
)

func newInviteCmd(g *globals) *cobra.Command {
	var (
		name, role, expires string
		asJSON              bool
	)
	cmd := &cobra.Command{
		Use:   "invite [--name NAME] [--role laptop|office] [--expires D]",
		Short: "Issue a one-time invitation to join this office's network",
		Long: `Issue a one-time invitation on a running office node. It prints one token
carrying the network's swarm key, this office's addresses and a secret; on
the new machine, 'ferry init --join TOKEN' enrols it as a member with this
name and role. The token works once, until it expires (default 24h). Treat
it like a password: whoever holds it can join.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role != node.RoleLaptop && role != node.RoleOffice {
				return usagef("--role %q: want laptop or office", role)
			}
			if d, err := time.ParseDuration(expires); err != nil || d <= 0 {
				return usagef("--expires %q: want a positive duration like 24h or 30m", expires)
			}
			c, err := runningNode(g.dir)
			if err != nil {
				return err
			}
			defer c.Close()
			body, _ := json.Marshal(apijson.InviteRequest{Name: name, Role: role, Expires: expires})
			var resp apijson.InviteResponse
			if err := c.Do(cmd.Context(), "POST", "/v1/invites", bytes.NewReader(body), &resp); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, resp.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "One-time invitation for %q (%s), valid until %s.\nOn the new machine: ferry init --join <the token above>\n",
				resp.Name, resp.Role, resp.Expires.Local().Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "the new member's name")
	f.StringVar(&role, "role", node.RoleLaptop, "the new member's role: laptop or office")
	f.StringVar(&expires, "expires", "24h", "how long the invitation stays valid")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newMembersCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the network's members",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				var ms []apijson.Member
				if err := c.Do(cmd.Context(), "GET", "/v1/members", nil, &ms); err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), ms)
				}
				if len(ms) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "open network: no membership (every peer is accepted)")
					return nil
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "PEER ID\tNAME\tROLE\tSTATUS\tCONNECTED\tCHANNELS")
				for _, m := range ms {
					status := "member"
					switch {
					case m.Founder:
						status = "founder"
					case m.Revoked:
						status = "revoked " + m.RevokedAt.Format(time.RFC3339)
					}
					if m.Self {
						status += " (this node)"
					}
					channels := strings.Join(m.Grants, ",")
					if channels == "*" {
						channels = "every channel"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", m.PeerID, m.Name, m.Role, status, m.Connected, channels)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke PEER|NAME",
		Short: "Revoke a member: its later writes are ignored everywhere and it is disconnected",
		Long: `Revoke a member (office only). Every node ignores the member's operations
written after the revocation (what it wrote before stays), refuses its
connections and streams, and disconnects it. The founding office cannot be
revoked. Enrol the machine again with a new invitation.`,
		Args: exactArgs(1, "PEER|NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				var out map[string]string
				if err := c.Do(cmd.Context(), "POST", "/v1/members/"+url.PathEscape(args[0])+"/revoke", nil, &out); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", out["revoked"])
				return nil
			})
		},
	}
}
