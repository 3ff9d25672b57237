package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/schema"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Import formats.
const (
	formatJSONL = "jsonl"
	formatCSV   = "csv"
)

func newImportCmd(g *globals) *cobra.Command {
	var quiet bool
	var format, delimiter string
	var opts csvOptions
	var maps, idFrom []string
	cmd := &cobra.Command{
		Use:   "import COLLECTION FILE",
		Short: "Import records from JSON Lines or CSV (FILE or - for stdin)",
		Long: `Import records from JSON Lines or CSV (FILE, or - for stdin).

JSON Lines (the default, and what 'ferry export' writes): one object per line
with a string "id" and field values, e.g.
  {"id":"c1","last_name":"Smith","amount":12.5}

CSV (a FILE ending in .csv, or --format csv; stdin needs --format csv): the
first row names the columns, "id" and fields of the collection, in any order,
each once. Every later row is one record. Cells are text, parsed by the
field's type exactly like 'ferry put FIELD=VALUE' parses VALUE (numbers,
true/false, enum values, RFC 3339 times or dates, ids for refs). An empty cell
leaves its field out: it is neither written nor cleared. Rows whose cells are
all empty are skipped. A UTF-8 BOM, CRLF line ends and quoted cells holding
delimiters, doubled quotes ("") or line breaks are fine.
  id,last_name,first_name,amount,met_on
  c1,Smith,Jeff,12.5,2024-03-01

CSV exported by another CRM or by Excel, as it comes:
  columns   a header matches a field by its name or one of its schema
            aliases, case and spaces aside ("Last Name" = last_name when the
            field lists it; examples/crm.yaml has the aliases of SugarCRM,
            Outlook, Dynamics, Salesforce and HubSpot exports);
            --map "E-mail Address=email" maps one column (--map "Notes=" leaves
            it out); --ignore-unknown leaves out every column that maps to no
            field and lists them.
  ids       --id-column "Contact ID" takes the ids from that column;
            --id-from email (or email,last_name) derives the id from the
            fields' values, so importing the file again updates the same
            records; --new-ids gives every row a new random id (importing
            again adds them again).
  locale    --delimiter is detected from the header row when not given (',',
            ';' or tab); --decimal-comma reads 12,5 and 1.234,56;
            --date-format 02.01.2006 (a Go layout) reads 01.03.2024.
  encoding  UTF-8, UTF-8 or UTF-16 with a BOM (Excel's "Unicode text"), and
            Windows-1252 (older Excel) are detected; --encoding forces one.

Every record is validated before anything is written: a bad one fails the
import with its line (for CSV, the line where its row starts, and the column)
and nothing is written. Records are then written in large batched deltas
(about 400 field operations each); a record is never split.`,
		Args: exactArgs(2, "COLLECTION FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			collection, file := args[0], args[1]
			switch format = strings.ToLower(format); format {
			case "":
				format = formatJSONL
				if file != "-" && strings.EqualFold(filepath.Ext(file), ".csv") {
					format = formatCSV
				}
			case formatJSONL, formatCSV:
			default:
				return usagef("import: --format %q: want jsonl or csv", format)
			}
			if format != formatCSV {
				for _, f := range []string{"delimiter", "map", "ignore-unknown", "id-column", "id-from", "new-ids", "decimal-comma", "date-format", "encoding"} {
					if cmd.Flags().Changed(f) {
						return usagef("import: --%s is for CSV (a FILE ending in .csv, or --format csv)", f)
					}
				}
			}
			if cmd.Flags().Changed("delimiter") {
				comma, err := parseDelimiter(delimiter)
				if err != nil {
					return usagef("import: %v", err)
				}
				opts.Comma = comma
			}
			for _, m := range maps {
				header, field, ok := strings.Cut(m, "=")
				if !ok || strings.TrimSpace(header) == "" {
					return usagef("import: --map %q: want \"Column Header=field\" (or \"Column Header=\" to leave it out)", m)
				}
				if opts.Map == nil {
					opts.Map = map[string]string{}
				}
				opts.Map[header] = strings.TrimSpace(field)
			}
			for _, f := range idFrom {
				for _, name := range strings.Split(f, ",") {
					if name = strings.TrimSpace(name); name != "" {
						opts.IDFrom = append(opts.IDFrom, name)
					}
				}
			}
			var in io.Reader = cmd.InOrStdin()
			name := "stdin"
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				defer f.Close()
				in, name = f, file
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				if format == formatJSONL {
					return postImport(cmd, c, collection, in, quiet, nil)
				}
				coll, err := fetchCollection(cmd.Context(), c, collection)
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				if err := checkMapTargets(coll, opts.Map); err != nil {
					return usageError{fmt.Errorf("import: %w", err)}
				}
				body, res, err := csvImportBody(in, name, coll, opts)
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				if len(res.Ignored) > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: columns left out: %s\n", name, quoteList(res.Ignored))
				}
				return postImport(cmd, c, collection, bytes.NewReader(body), quiet, func(msg string) string {
					return name + ": " + relocateImportError(msg, res.Records)
				})
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	cmd.Flags().StringVar(&format, "format", "", "jsonl or csv (default: csv for a FILE ending in .csv, else jsonl)")
	f := cmd.Flags()
	f.StringVar(&delimiter, "delimiter", ",", `CSV cell delimiter: one character, e.g. ';' ('\t' for tab); detected when not given`)
	f.StringArrayVar(&maps, "map", nil, `CSV: "Column Header=field" (repeatable; "Column Header=" leaves the column out)`)
	f.BoolVar(&opts.IgnoreUnknown, "ignore-unknown", false, "CSV: leave out columns that map to no field (they are listed)")
	f.StringVar(&opts.IDColumn, "id-column", "", "CSV: the column that holds the record ids (default: the column named id)")
	f.StringArrayVar(&idFrom, "id-from", nil, "CSV: derive each record's id from these fields (comma-separated or repeated)")
	f.BoolVar(&opts.NewIDs, "new-ids", false, "CSV: give every row a new random id")
	f.BoolVar(&opts.Format.DecimalComma, "decimal-comma", false, "CSV: numbers use a decimal comma (12,5 and 1.234,56)")
	f.StringVar(&opts.Format.DateLayout, "date-format", "", "CSV: dates and times in this Go layout, e.g. 02.01.2006")
	f.StringVar(&opts.Encoding, "encoding", "", "CSV: utf-8, windows-1252 or utf-16 (default: detected)")
	return cmd
}

// postImport sends JSON Lines to the node's import endpoint and follows its
// progress. relocate, when set, rewrites the node's error messages (the
// lines it names are lines of body).
func postImport(cmd *cobra.Command, c *client, collection string, body io.Reader, quiet bool, relocate func(string) string) error {
	if relocate == nil {
		relocate = func(msg string) string { return msg }
	}
	var bar *progressbar.ProgressBar
	r, err := c.Import(cmd.Context(), collection, body, func(p apijson.ImportProgress) {
		if bar == nil && !quiet && isTerminal(cmd.ErrOrStderr()) {
			bar = progressbar.NewOptions(p.Total,
				progressbar.OptionSetWriter(cmd.ErrOrStderr()),
				progressbar.OptionSetDescription("importing "+collection),
				progressbar.OptionShowCount(),
				progressbar.OptionShowIts(),
				progressbar.OptionSetItsString("records"),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(cmd.ErrOrStderr()) }),
			)
		}
		if bar != nil {
			_ = bar.Set(p.Done)
		}
	})
	var ae *api.Error
	var ie *api.ImportError
	switch {
	case errors.As(err, &ie):
		return fmt.Errorf("import stopped after %d of %d records: %s", ie.Done, ie.Total, relocate(ie.Msg))
	case errors.As(err, &ae):
		return fmt.Errorf("import: %w", &api.Error{Status: ae.Status, Msg: relocate(ae.Msg)})
	case err != nil:
		return fmt.Errorf("import: %w", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "imported %s into %s: %d written, %d unchanged, in %s\n",
		plural(r.Records, "record"), collection, r.Written, r.Unchanged, plural(r.Deltas, "delta"))
	return nil
}

// isTerminal reports whether w (or r) is a terminal (progress bars and
// questions only go there).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// checkMapTargets refuses a --map to a field the collection does not have.
func checkMapTargets(coll *schema.Collection, m map[string]string) error {
	for header, field := range m {
		if field != "" && field != schema.ReservedIDField && coll.Field(field) == nil {
			return fmt.Errorf("--map %q: %s has no field %q (its fields: %s)", header+"="+field, collName(coll), field, strings.Join(coll.FieldNames(), ", "))
		}
	}
	return nil
}
