package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/spf13/cobra"
)

func newDuplicatesCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "duplicates [COLLECTION]",
		Short: "List likely duplicate records (by unique fields and the schema's duplicate rules)",
		Long: `List groups of records that the schema's duplicate rules (and unique fields,
compared as text ignoring case and spaces) find the same, with the records side
by side and since when. Resolve one with 'ferry merge COLLECTION KEEP OTHER'.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("duplicates: want at most one COLLECTION, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			coll := ""
			if len(args) == 1 {
				coll = args[0]
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				dups, err := c.Duplicates(cmd.Context(), coll)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), dups)
				}
				out := cmd.OutOrStdout()
				if len(dups) == 0 {
					fmt.Fprintln(out, "no duplicates")
					return nil
				}
				for i, d := range dups {
					if i > 0 {
						fmt.Fprintln(out)
					}
					ids := make([]string, len(d.Records))
					for j, r := range d.Records {
						ids[j] = r.ID
					}
					fmt.Fprintf(out, "%s: %s (same %s) since %s\n", d.Collection, strings.Join(ids, " = "), strings.ReplaceAll(d.Rule, "+", ", "), d.Since.Local().Format(time.DateTime))
					printSideBySide(out, d.Records)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	return cmd
}

// printSideBySide prints records as columns, one row per field.
func printSideBySide(out interface{ Write([]byte) (int, error) }, recs []apijson.Record) {
	fields := map[string]bool{}
	for _, r := range recs {
		for k := range r.Fields {
			fields[k] = true
		}
	}
	fmt.Fprintf(out, "  %-14s", "id")
	for _, r := range recs {
		fmt.Fprintf(out, " %-24s", r.ID)
	}
	fmt.Fprintln(out)
	for _, k := range sortedKeys(fields) {
		fmt.Fprintf(out, "  %-14s", k)
		for _, r := range recs {
			v := ""
			if f, ok := r.Fields[k]; ok && f != nil {
				v = fmt.Sprint(f)
			}
			fmt.Fprintf(out, " %-24s", v)
		}
		fmt.Fprintln(out)
	}
}

func newMergeCmd(g *globals) *cobra.Command {
	var prefer string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "merge COLLECTION KEEP OTHER",
		Short: "Merge record OTHER into KEEP: field by field, refs repointed, OTHER deleted",
		Long: `Merge two records (likely duplicates): KEEP gets, per field, the newest
non-empty value of the two (with --prefer KEEP, its own whenever it has one),
every ref field pointing to OTHER is pointed to KEEP, and OTHER is deleted. Its
history stays ('ferry history COLLECTION OTHER'). These are ordinary writes:
every node ends with the same result. A merge cut short is finished by running
it again.`,
		Args: exactArgs(3, "COLLECTION KEEP OTHER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if prefer != "" && prefer != args[1] {
				return usagef("merge: --prefer %q: want the KEEP record %q (or leave it out for the newest value per field)", prefer, args[1])
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				res, err := c.Merge(cmd.Context(), args[0], apijson.MergeRequest{Keep: args[1], Other: args[2], PreferKeep: prefer != ""})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "merged %s/%s into %s/%s", args[0], args[2], args[0], args[1])
				if len(res.Fields) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), " (took %s)", strings.Join(res.Fields, ", "))
				}
				fmt.Fprintln(cmd.OutOrStdout())
				if len(res.Refs) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "repointed %s\n", strings.Join(res.Refs, ", "))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&prefer, "prefer", "", "KEEP: keep KEEP's value of every field it has")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
