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
delimiters, doubled quotes ("") or line breaks are fine. --delimiter ';' reads
the semicolon files of Excel in Europe (--delimiter '\t' for tabs).
  id,last_name,first_name,amount,met_on
  c1,Smith,Jeff,12.5,2024-03-01

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
			comma, err := parseDelimiter(delimiter)
			if err != nil {
				return usagef("import: %v", err)
			}
			if format != formatCSV && cmd.Flags().Changed("delimiter") {
				return usagef("import: --delimiter is for CSV (a FILE ending in .csv, or --format csv)")
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
				body, recs, err := csvImportBody(in, name, coll, comma)
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				return postImport(cmd, c, collection, bytes.NewReader(body), quiet, func(msg string) string {
					return name + ": " + relocateImportError(msg, recs)
				})
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	cmd.Flags().StringVar(&format, "format", "", "jsonl or csv (default: csv for a FILE ending in .csv, else jsonl)")
	cmd.Flags().StringVar(&delimiter, "delimiter", ",", `CSV cell delimiter: one character, e.g. ';' ('\t' for tab)`)
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
