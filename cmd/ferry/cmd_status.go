package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show identity, network and replication state",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				var st apijson.Status
				if err := c.Do(cmd.Context(), "GET", "/v1/status", nil, &st); err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), st)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				state := "not running (store opened by this command)"
				if st.Running {
					state = map[bool]string{true: "running, online", false: "running, offline"}[st.Online]
				}
				fmt.Fprintf(tw, "peer id:\t%s\n", st.PeerID)
				fmt.Fprintf(tw, "name:\t%s\n", st.Name)
				fmt.Fprintf(tw, "role:\t%s\n", st.Role)
				fmt.Fprintf(tw, "node:\t%s\n", state)
				fmt.Fprintf(tw, "listen:\t%s\n", strings.Join(st.ListenAddrs, "\n\t"))
				fmt.Fprintf(tw, "connected peers:\t%d\n", st.ConnectedPeers)
				fmt.Fprintf(tw, "heads:\t%d\n", len(st.Heads))
				fmt.Fprintf(tw, "DAG height:\t%d\n", st.DAGHeight)
				fmt.Fprintf(tw, "dirty:\t%t\n", st.Dirty)
				if e := st.Epoch; e != nil {
					writeEpoch(tw, e, st.PeerID, epochNames(cmd.Context(), c, e, st.PeerID))
				}
				if st.RepairReason != "" {
					fmt.Fprintf(tw, "needs repair:\t%s (the node retries by itself; 'ferry check' tells more)\n", st.RepairReason)
				}
				if d := st.Disk; d != nil {
					switch {
					case d.Full:
						fmt.Fprintf(tw, "disk:\tFULL: %s free, under the reserve of %s: local writes are refused\n", humanize.IBytes(d.Free), humanize.IBytes(d.Reserve))
					case d.Low:
						fmt.Fprintf(tw, "disk:\tLOW: %s free (writes are refused under %s)\n", humanize.IBytes(d.Free), humanize.IBytes(d.Reserve))
					default:
						fmt.Fprintf(tw, "disk:\t%s free of %s (reserve %s)\n", humanize.IBytes(d.Free), humanize.IBytes(d.Total), humanize.IBytes(d.Reserve))
					}
				}
				if st.Memory != nil {
					fmt.Fprintf(tw, "memory:\t%s\n", memoryLine(st.Memory))
				}
				if st.Digest == "" && !st.Running {
					fmt.Fprintf(tw, "digest:\t(computed by a running node)\n")
				} else if st.DigestPending {
					fmt.Fprintf(tw, "digest:\t(being computed: the first one reads the whole store)\n")
				} else {
					fmt.Fprintf(tw, "digest:\t%s\n", st.Digest)
				}
				if u := st.Unacked; u != nil {
					switch {
					case !u.Known:
						fmt.Fprintf(tw, "not yet held by an office:\t%s (no office has announced its heads to this node yet)\n", plural(u.Count, "edit"))
					case u.Count == 0:
						fmt.Fprintf(tw, "not yet held by an office:\tnone (as of %s)\n", u.AsOf.Format(time.RFC3339))
					default:
						fmt.Fprintf(tw, "not yet held by an office:\t%s, the oldest from %s (as of %s)\n", plural(u.Count, "edit"), u.Oldest.Format(time.RFC3339), u.AsOf.Format(time.RFC3339))
					}
				}
				if len(st.Channels)+len(st.ChannelsNotTaken)+len(st.ChannelsLeaving) > 0 {
					line := listOrNone(st.Channels)
					if len(st.ChannelsNotTaken) > 0 {
						line += "; granted, not taken offline: " + strings.Join(st.ChannelsNotTaken, ", ")
					}
					if len(st.ChannelsLeaving) > 0 {
						line += "; leaving (handing over, then purging): " + strings.Join(st.ChannelsLeaving, ", ")
					}
					fmt.Fprintf(tw, "channels:\t%s\n", line)
				}
				if c := st.CatchUp; c != nil {
					fmt.Fprintf(tw, "catching up:\t%d blocks received, %d to go (%d bytes) from %s\n", c.Blocks, c.Remaining, c.Bytes, shortID(c.Peer))
				}
				if st.QueuedJobs > 0 {
					fmt.Fprintf(tw, "queued DAG jobs:\t%d\n", st.QueuedJobs)
				}
				switch {
				case st.Secured && st.Member != nil && *st.Member:
					fmt.Fprintf(tw, "network:\t%s, members only; this node is a member\n", privacy(st.Private))
				case st.Secured:
					fmt.Fprintf(tw, "network:\t%s, members only; this node is NOT a member (yet): its writes are refused\n", privacy(st.Private))
				default:
					fmt.Fprintf(tw, "network:\topen (no founder: every peer and every operation accepted)\n")
				}
				if st.WorkflowsPending != nil {
					fmt.Fprintf(tw, "workflows:\t%d pending, %d failed (ferry workflows)\n", *st.WorkflowsPending, *st.WorkflowsFailed)
				}
				if st.Duplicates > 0 {
					fmt.Fprintf(tw, "duplicates:\t%d (ferry duplicates)\n", st.Duplicates)
				}
				if st.IgnoredOps > 0 {
					fmt.Fprintf(tw, "ignored operations:\t%d (failed signature or membership checks; ferry status --json lists them)\n", st.IgnoredOps)
				}
				if st.RefusedStreams > 0 {
					fmt.Fprintf(tw, "refused streams:\t%d (from peers that are not members)\n", st.RefusedStreams)
				}
				if st.MalformedOps > 0 {
					fmt.Fprintf(tw, "ignored malformed ops:\t%d\n", st.MalformedOps)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newPeersCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List configured, connected and known peers",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				var peers []apijson.PeerInfo
				if err := c.Do(cmd.Context(), "GET", "/v1/peers", nil, &peers); err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), peers)
				}
				ours := ""
				for _, p := range peers {
					if p.Epoch != "" {
						var st apijson.Status
						if err := c.Do(cmd.Context(), "GET", "/v1/status", nil, &st); err != nil {
							return err
						}
						if st.Epoch != nil {
							ours = st.Epoch.Epoch
						}
						break
					}
				}
				if err := printPeers(cmd.OutOrStdout(), peers, ours); err != nil {
					return err
				}
				return printIncompatiblePeers(cmd.OutOrStdout(), peers)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// newOfflineCmd builds `ferry offline` and `ferry online`. The setting is
// kept in config.yaml, so it survives restarts.
func newOfflineCmd(g *globals, offline bool) *cobra.Command {
	use, short := "online", "Reconnect to peers and resume syncing"
	if offline {
		use, short = "offline", "Drop all peer connections and stop dialing (kept across restarts)"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fc, err := datadir.ReadSettings(g.dir)
			if err != nil {
				return err
			}
			fc.Offline = offline
			if err := fc.Write(g.dir); err != nil {
				return err
			}
			if c, err := api.Dial(g.dir); err == nil {
				if err := c.SetOffline(cmd.Context(), offline); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node is %s\n", use)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "no node running: it will start %s\n", use)
			return nil
		},
	}
}

// memoryLine describes a node's memory: "84 MiB resident (peak 212 MiB),
// Go heap 40 MiB, limit 256 MiB" (no RSS where the OS does not say).
func memoryLine(m *apijson.Memory) string {
	var parts []string
	if m.RSS > 0 {
		parts = append(parts, fmt.Sprintf("%s resident (peak %s)", humanize.IBytes(m.RSS), humanize.IBytes(m.PeakRSS)))
	}
	parts = append(parts, "Go heap "+humanize.IBytes(m.Heap))
	if m.Limit > 0 {
		parts = append(parts, "limit "+humanize.IBytes(m.Limit))
	} else {
		parts = append(parts, "no limit")
	}
	return strings.Join(parts, ", ")
}

// howKnown says how this node knows a peer.
func howKnown(p apijson.PeerInfo) string {
	switch {
	case p.Configured:
		return "configured"
	case p.Learned:
		return "discovered"
	case p.Connected:
		return "connected to us"
	}
	return "wrote data"
}

func privacy(private bool) string {
	if private {
		return "private (swarm key)"
	}
	return "no swarm key"
}

// writeEpoch writes the epoch lines of `ferry status` (tab-separated, for
// its table): the epoch, since when and by which office; whether the node
// is moving to a later one, or heard of one; why the last move failed.
// names maps writer ids to node names (may be nil).
func writeEpoch(w io.Writer, e *apijson.Epoch, self string, names map[string]string) {
	if e.Number == 0 && (e.Epoch == "" || e.Epoch == "0") {
		fmt.Fprintf(w, "epoch:\t0 (the first: never compacted)\n")
	} else {
		line := e.Epoch
		if !e.StartedAt.IsZero() {
			line += ", since " + e.StartedAt.Format(time.RFC3339)
		}
		switch e.StartedBy {
		case "":
		case self:
			line += ", started by this node"
		default:
			line += ", started by " + writerName(e.StartedBy, names[e.StartedBy])
		}
		fmt.Fprintf(w, "epoch:\t%s\n", line)
	}
	switch {
	case e.Adopting && e.Later != "":
		fmt.Fprintf(w, "\tmoving to epoch %s now\n", e.Later)
	case e.Adopting:
		fmt.Fprintf(w, "\tmoving to a later epoch now\n")
	case e.Later != "":
		fmt.Fprintf(w, "\ta peer is in a later epoch %s: this node moves to it as soon as it can\n", e.Later)
	}
	if e.LastError != "" {
		fmt.Fprintf(w, "\tthe last move to a later epoch failed (tried again by itself): %s\n", e.LastError)
	}
}

// epochNames names the office that started the node's epoch, from the
// members list (nil when it is this node, none started it, or the list
// cannot be read: the id is shown then).
func epochNames(ctx context.Context, c *client, e *apijson.Epoch, self string) map[string]string {
	if e.StartedBy == "" || e.StartedBy == self {
		return nil
	}
	ms, err := c.Members(ctx)
	if err != nil {
		return nil
	}
	names := map[string]string{}
	for _, m := range ms {
		if m.Name != "" {
			names[m.PeerID] = m.Name
		}
	}
	return names
}

// epochRelation says how a peer's epoch stands to this node's: "" when
// they are the same (or either is not known), else the peer's epoch
// and which node moves: "2-ab12cd34… (later: this node moves to it)" or
// "1-0f3e2d1c… (earlier: it will move to ours)".
func epochRelation(ours, theirs string) string {
	if theirs == "" || ours == "" || theirs == ours {
		return ""
	}
	o, err1 := crdt.ParseEpoch(ours)
	p, err2 := crdt.ParseEpoch(theirs)
	switch {
	case err1 != nil || err2 != nil:
		return shortEpoch(theirs)
	case p.After(o):
		return shortEpoch(theirs) + " (later: this node moves to it)"
	default:
		return shortEpoch(theirs) + " (earlier: it will move to ours)"
	}
}

// shortEpoch abbreviates an epoch for tables: "2-ab12cd34…".
func shortEpoch(e string) string {
	if num, id, ok := strings.Cut(e, "-"); ok && len(id) > 8 {
		return num + "-" + id[:8] + "…"
	}
	return e
}
