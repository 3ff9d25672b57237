package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/schema"
)

func newSchemaCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Apply or show the replicated schema",
	}
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Apply a schema file (YAML or JSON); changes must be additive",
		Long: `Apply a schema file (YAML or JSON). The schema is stored in the replicated
store, so every node gets it with the data. Changes must be additive: new
collections, new fields, new enum values. Anything else is refused.`,
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("schema apply: %w", err)
			}
			if _, err := schema.Parse(data); err != nil { // a clear error before reaching the node
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				var res struct {
					Changed []string `json:"changed"`
				}
				if err := c.Do(cmd.Context(), "POST", "/v1/schema", bytes.NewReader(data), &res); err != nil {
					return err
				}
				if len(res.Changed) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "schema unchanged")
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "schema applied: %s\n", strings.Join(res.Changed, ", "))
				return nil
			})
		},
	}
	var asJSON bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the schema (YAML, or JSON with --json)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				var raw json.RawMessage
				if err := c.Do(cmd.Context(), "GET", "/v1/schema", nil, &raw); err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), raw)
				}
				var sc schema.Schema
				if err := json.Unmarshal(raw, &sc); err != nil {
					return fmt.Errorf("decode schema: %w", err)
				}
				if len(sc.Collections) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "# no schema applied yet: ferry schema apply FILE")
					return nil
				}
				out, err := sc.YAML()
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			})
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(apply, show)
	return cmd
}
