package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/spf13/cobra"
)

func newPutCmd(g *globals) *cobra.Command {
	var unset []string
	var asJSON, allowDup bool
	cmd := &cobra.Command{
		Use:   "put COLLECTION ID FIELD=VALUE...",
		Short: "Create or update a record (all fields in one atomic write)",
		Long: `Create or update a record. Values are parsed by the field's type: numbers,
true/false, enum values, RFC 3339 times or dates (2024-03-01), ids for refs.
--unset FIELD clears a field. All fields of one put are one atomic delta.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || (len(args) == 2 && len(unset) == 0) {
				return usagef("put: want COLLECTION ID FIELD=VALUE...")
			}
			return checkRecordArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := apijson.PutRequest{Text: map[string]string{}, Fields: map[string]any{}}
			for _, kv := range args[2:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("put: %q is not FIELD=VALUE", kv)
				}
				if _, dup := req.Text[k]; dup {
					return usagef("put: field %q given twice", k)
				}
				req.Text[k] = v
			}
			for _, k := range unset {
				if _, dup := req.Text[k]; dup {
					return usagef("put: field %q both set and unset", k)
				}
				req.Fields[k] = nil
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				req.AllowDuplicate = allowDup
				res, err := c.PutWith(cmd.Context(), args[0], args[1], req)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), res)
				}
				switch {
				case len(res.Fields) == 0:
					fmt.Fprintf(cmd.OutOrStdout(), "%s/%s unchanged\n", args[0], args[1])
				case res.Created:
					fmt.Fprintf(cmd.OutOrStdout(), "created %s/%s (%s)\n", args[0], args[1], strings.Join(res.Fields, ", "))
				default:
					fmt.Fprintf(cmd.OutOrStdout(), "updated %s/%s (%s)\n", args[0], args[1], strings.Join(res.Fields, ", "))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVar(&unset, "unset", nil, "clear this field (repeatable)")
	cmd.Flags().BoolVar(&allowDup, "allow-duplicate", false, "write the record even if it is likely a duplicate of another (docs/duplicates.md)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newGetCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get COLLECTION ID",
		Short: "Show a record (conflicted fields are marked with !)",
		Args:  recordArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				rec, err := c.Get(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), rec)
				}
				printRecord(cmd.OutOrStdout(), rec)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the record as JSON")
	return cmd
}

func newListCmd(g *globals) *cobra.Command {
	var asJSON bool
	var where string
	cmd := &cobra.Command{
		Use:   "list COLLECTION",
		Short: "List the records of a collection",
		Long: `List the records of a collection, one per line (with --json, one JSON
object per line). --where FIELD=VALUE keeps records whose field equals VALUE.`,
		Args: exactArgs(1, "COLLECTION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if where != "" && !strings.Contains(where, "=") {
				return usagef("--where %q: want FIELD=VALUE", where)
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				return c.List(cmd.Context(), args[0], api.ListOptions{Where: where}, func(line []byte) error {
					if asJSON {
						_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s\n", line)
						return err
					}
					var rec apijson.Record
					if err := json.Unmarshal(line, &rec); err != nil {
						return fmt.Errorf("decode record: %w", err)
					}
					_, err := fmt.Fprintln(cmd.OutOrStdout(), recordLine(rec))
					return err
				})
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON Lines")
	cmd.Flags().StringVar(&where, "where", "", "FIELD=VALUE filter")
	return cmd
}

func newDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete COLLECTION ID",
		Short: "Delete a record",
		Long: `Delete a record. An edit made elsewhere concurrently (without having seen
the delete) and newer than it brings the record back; see docs/merge-rules.md.`,
		Args: recordArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				if _, err := c.Delete(cmd.Context(), args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s/%s\n", args[0], args[1])
				return nil
			})
		},
	}
}

func newExportCmd(g *globals) *cobra.Command {
	var format, delimiter, headers, encoding string
	var opts exportOptions
	cmd := &cobra.Command{
		Use:   "export COLLECTION",
		Short: "Write a collection as JSON Lines or CSV (what import reads)",
		Long: `Write every record of a collection to stdout, in a form 'ferry import'
reads back. JSON Lines by default: one object per line, "id" and the fields.
--format csv writes a header row (id, then the collection's fields in schema
order, as 'ferry schema show' lists them) and one row per record, each value
as 'ferry get' shows it; absent fields (and empty strings) are empty cells.
--delimiter ';' for Excel in Europe ('\t' for tabs).

For a spreadsheet, or the program the file goes back to, the CSV can be
written as 'ferry import' reads exports of other CRMs: --headers aliases
heads each column with the field's first schema alias ("Last Name"),
--id-column "Contact ID" names the id column, --decimal-comma writes
1234,5, --date-format 02.01.2006 writes times in a Go layout (a layout
without hours writes the date only), --encoding windows-1252 or utf-16
(Excel's "Unicode text", with a BOM). Imported with the same options, such a
file changes nothing.`,
		Args: exactArgs(1, "COLLECTION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format = strings.ToLower(format); format {
			case formatJSONL, formatCSV:
			default:
				return usagef("export: --format %q: want jsonl or csv", format)
			}
			comma, err := parseDelimiter(delimiter)
			if err != nil {
				return usagef("export: %v", err)
			}
			if format != formatCSV {
				for _, f := range []string{"delimiter", "headers", "id-column", "decimal-comma", "date-format", "encoding"} {
					if cmd.Flags().Changed(f) {
						return usagef("export: --%s is for --format csv", f)
					}
				}
			}
			switch headers {
			case "names":
			case "aliases":
				opts.Aliases = true
			default:
				return usagef("export: --headers %q: want names or aliases", headers)
			}
			if err := opts.Format.Validate(); err != nil {
				return usagef("export: --date-format: %v", err)
			}
			opts.Comma = comma
			out, finish, err := encodeOutput(cmd.OutOrStdout(), encoding)
			if err != nil {
				return usagef("export: %v", err)
			}
			w := bufio.NewWriterSize(out, 64<<10)
			err = withClient(cmd.Context(), g.dir, func(c *client) error {
				export := api.ListOptions{Export: true}
				if format == formatJSONL {
					return c.List(cmd.Context(), args[0], export, func(line []byte) error {
						w.Write(line)
						return w.WriteByte('\n')
					})
				}
				coll, err := fetchCollection(cmd.Context(), c, args[0])
				if err != nil {
					return err
				}
				ex := newCSVExporterWith(w, coll, opts)
				if err := c.List(cmd.Context(), args[0], export, ex.writeLine); err != nil {
					return err
				}
				return ex.flush()
			})
			if ferr := w.Flush(); err == nil {
				err = ferr
			}
			if ferr := finish(); err == nil {
				err = ferr
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", formatJSONL, "jsonl or csv")
	f.StringVar(&delimiter, "delimiter", ",", `CSV cell delimiter: one character, e.g. ';' ('\t' for tab)`)
	f.StringVar(&headers, "headers", "names", "CSV column headers: names (the fields') or aliases (each field's first alias)")
	f.StringVar(&opts.IDHeader, "id-column", "", `CSV: the id column's header (default "id")`)
	f.BoolVar(&opts.Format.DecimalComma, "decimal-comma", false, "CSV: numbers with a decimal comma (1234,5)")
	f.StringVar(&opts.Format.DateLayout, "date-format", "", "CSV: times in this Go layout, e.g. 02.01.2006")
	f.StringVar(&encoding, "encoding", "utf-8", "CSV: utf-8, windows-1252 or utf-16 (with a BOM)")
	return cmd
}

// recordArgs accepts exactly COLLECTION ID.
func recordArgs(cmd *cobra.Command, args []string) error {
	if err := exactArgs(2, "COLLECTION ID")(cmd, args); err != nil {
		return err
	}
	return checkRecordArgs(cmd, args)
}

// checkRecordArgs refuses an empty collection or record id.
func checkRecordArgs(cmd *cobra.Command, args []string) error {
	if args[0] == "" || args[1] == "" {
		return usagef("%s: the collection and the record id must not be empty", cmd.Name())
	}
	return nil
}
