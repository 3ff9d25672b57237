package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ferry-crm/ferry/crdt"
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
	var dryRun, allowDup bool
	var rejects string
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
(about 400 field operations each); a record is never split. The file is
streamed to the node, which keeps a copy in the data dir's tmp/ while the
import runs (1 GiB at most: split larger files); neither holds the records
in memory, whatever the file's size.

--dry-run validates everything and prints how many records would be
created, updated, left unchanged and rejected, writing nothing. --rejects
FILE (CSV) imports the good records instead of none and writes each bad row
to FILE (a new CSV: "line" and "reason", then the row's own columns), so
that 39,990 good rows of 40,000 go in and the 10 others can be fixed and
imported again (--ignore-unknown leaves the two added columns out).`,
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
				for _, f := range []string{"delimiter", "map", "ignore-unknown", "id-column", "id-from", "new-ids", "decimal-comma", "date-format", "encoding", "rejects"} {
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
			if rejects != "" {
				if _, err := os.Stat(rejects); err == nil {
					return usagef("import: --rejects %s exists: give a new file", rejects)
				}
			}
			// A dry run reports every bad row; --rejects sets them aside.
			opts.Collect = rejects != "" || dryRun
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
				if allowDup {
					c = &client{Client: c.Client.AllowingDuplicates(), local: c.local}
				}
				run := importRun{cmd: cmd, c: c, collection: collection, quiet: quiet,
					opts: crdt.ImportOptions{DryRun: dryRun, SkipInvalid: rejects != "" || dryRun}}
				if format == formatJSONL {
					r, err := run.post(in)
					if err != nil {
						return err
					}
					rej := make([]csvRejection, 0, len(r.Rejected))
					for _, x := range r.Rejected {
						rej = append(rej, csvRejection{Line: x.Line, Reason: x.Reason})
					}
					listRejections(cmd.ErrOrStderr(), name, rej)
					run.report(r, len(rej), "")
					return nil
				}
				coll, err := fetchCollection(cmd.Context(), c, collection)
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				if err := checkMapTargets(coll, opts.Map); err != nil {
					return usageError{fmt.Errorf("import: %w", err)}
				}
				// The file is read as it is sent, and again for the rows
				// the node leaves out (--rejects): stdin is copied to a
				// temporary file first.
				src, start, done, err := seekableInput(in)
				if err != nil {
					return fmt.Errorf("import: %s: %w", name, err)
				}
				defer done()
				rd, err := newCSVReader(src, coll, opts)
				if err != nil {
					return fmt.Errorf("import: %s: %w", name, err)
				}
				if len(rd.Ignored) > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: columns left out: %s\n", name, quoteList(rd.Ignored))
				}
				var ci csvImport
				body := newBodyStream(func(w io.Writer) error {
					if err := writeCSVImport(w, rd, &ci); err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					return nil
				})
				run.finish = body.finish
				run.relocate = func(msg string) string { return name + ": " + relocateLine(msg, &ci.Lines) }
				r, err := run.post(body)
				if err != nil {
					return err
				}
				rejected := ci.Rejected
				for _, x := range r.Rejected {
					if line, ok := ci.Lines.line(x.Line); ok {
						rejected = append(rejected, csvRejection{Line: line, Reason: x.Reason})
					}
				}
				if rejects != "" {
					if err := rejectedRows(src, start, coll, opts, rd, rejected[len(ci.Rejected):]); err != nil {
						return fmt.Errorf("import: %s: rejects: %w", name, err)
					}
					if err := writeRejects(rejects, rd.Header, rejected); err != nil {
						return fmt.Errorf("import: %w", err)
					}
				} else {
					listRejections(cmd.ErrOrStderr(), name, rejected)
				}
				run.report(r, len(rejected), rejects)
				return nil
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
	f.BoolVar(&allowDup, "allow-duplicate", false, "write records that are likely duplicates of others (docs/duplicates.md) instead of refusing them")
	f.BoolVar(&dryRun, "dry-run", false, "validate and count what would be created, updated, unchanged and rejected; write nothing")
	f.StringVar(&rejects, "rejects", "", "CSV: import the good records and write each bad row, with its line and reason, to this new file")
	return cmd
}

// importRun is one import: where its records go and how.
type importRun struct {
	cmd        *cobra.Command
	c          *client
	collection string
	quiet      bool
	opts       crdt.ImportOptions
	// relocate, when set, rewrites the node's error messages (the lines it
	// names are lines of the request body).
	relocate func(string) string
	// finish, when set, ends what writes the request body once the node
	// has answered, and returns its error (which explains the node's).
	finish func() error
}

// post sends JSON Lines to the node's import endpoint, follows its progress
// and returns its result.
func (ir importRun) post(body io.Reader) (crdt.ImportResult, error) {
	relocate := ir.relocate
	if relocate == nil {
		relocate = func(msg string) string { return msg }
	}
	cmd := ir.cmd
	var bar *progressbar.ProgressBar
	r, err := ir.c.Import(cmd.Context(), ir.collection, body, ir.opts, func(p apijson.ImportProgress) {
		if bar == nil && !ir.quiet && !ir.opts.DryRun && isTerminal(cmd.ErrOrStderr()) {
			bar = progressbar.NewOptions(p.Total,
				progressbar.OptionSetWriter(cmd.ErrOrStderr()),
				progressbar.OptionSetDescription("importing "+ir.collection),
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
	if ir.finish != nil {
		if werr := ir.finish(); werr != nil {
			return crdt.ImportResult{}, fmt.Errorf("import: %w", werr)
		}
	}
	var ae *api.Error
	var ie *api.ImportError
	switch {
	case errors.As(err, &ie):
		return r, fmt.Errorf("import stopped after %d of %d records: %s", ie.Done, ie.Total, relocate(ie.Msg))
	case errors.As(err, &ae):
		return r, fmt.Errorf("import: %w", &api.Error{Status: ae.Status, Msg: relocate(ae.Msg)})
	case err != nil:
		return r, fmt.Errorf("import: %w", err)
	}
	return r, nil
}

// report prints what an import did, or would do; rejected counts the
// records left out (on this side and by the node).
func (ir importRun) report(r crdt.ImportResult, rejected int, rejects string) {
	out := ir.cmd.OutOrStdout()
	left := ""
	switch {
	case rejected > 0 && rejects != "":
		left = fmt.Sprintf(", %d rejected (in %s)", rejected, rejects)
	case rejected > 0:
		left = fmt.Sprintf(", %d rejected", rejected)
	}
	if ir.opts.DryRun {
		fmt.Fprintf(out, "dry run of %s into %s: %d would be created, %d updated, %d unchanged%s; nothing written\n",
			plural(r.Records+rejected-len(r.Rejected), "record"), ir.collection, r.Created, r.Written-r.Created, r.Unchanged, left)
		return
	}
	created := ""
	if r.Created > 0 {
		created = fmt.Sprintf(" (%d created)", r.Created)
	}
	fmt.Fprintf(out, "imported %s into %s: %d written%s, %d unchanged%s, in %s\n",
		plural(r.Records+rejected-len(r.Rejected), "record"), ir.collection, r.Written, created, r.Unchanged, left, plural(r.Deltas, "delta"))
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

// listRejections prints the rows a dry run would leave out, by line.
func listRejections(w io.Writer, name string, rej []csvRejection) {
	slices.SortFunc(rej, func(a, b csvRejection) int { return a.Line - b.Line })
	const most = 50
	for i, r := range rej {
		if i == most {
			fmt.Fprintf(w, "%s: and %d more rejected rows (--rejects FILE lists them all)\n", name, len(rej)-most)
			break
		}
		reason := r.Reason
		if !strings.HasPrefix(reason, "line ") {
			reason = fmt.Sprintf("line %d: %s", r.Line, reason)
		}
		fmt.Fprintf(w, "%s: rejected: %s\n", name, reason)
	}
}

// bodyStream is a request body written by a goroutine as it is sent.
type bodyStream struct {
	pr   *io.PipeReader
	done chan struct{}
	err  error // the writer's, once done is closed
}

func newBodyStream(write func(io.Writer) error) *bodyStream {
	pr, pw := io.Pipe()
	b := &bodyStream{pr: pr, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = write(pw)
		pw.CloseWithError(b.err) // nil: the reader sees the end
	}()
	return b
}

func (b *bodyStream) Read(p []byte) (int, error) { return b.pr.Read(p) }

// finish stops the writer if the request ended before it did (the node
// answered, or the request failed), waits for it and returns its error;
// a write cut short by the end of the request is no error of its own.
func (b *bodyStream) finish() error {
	_ = b.pr.Close()
	<-b.done
	if errors.Is(b.err, io.ErrClosedPipe) {
		return nil
	}
	return b.err
}

// seekableInput returns in as a reader that can be read again, and the
// offset it starts at: in itself when it can seek (a file, stdin
// redirected from a file), else a copy in a temporary file (a pipe),
// removed by done.
func seekableInput(in io.Reader) (src io.ReadSeeker, start int64, done func(), err error) {
	if rs, ok := in.(io.ReadSeeker); ok {
		if start, err := rs.Seek(0, io.SeekCurrent); err == nil {
			return rs, start, func() {}, nil
		}
	}
	f, err := os.CreateTemp("", "ferry-import-*.csv")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("copy the input: %w", err)
	}
	done = func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	if _, err := io.Copy(f, in); err != nil {
		done()
		return nil, 0, nil, fmt.Errorf("copy the input: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		done()
		return nil, 0, nil, fmt.Errorf("copy the input: %w", err)
	}
	return f, 0, done, nil
}

// rejectedRows reads the file again from start, as rd read it, and gives
// each rejection of rej the cells of the row on its line (what the node
// left out is known by line only).
func rejectedRows(in io.ReadSeeker, start int64, coll *schema.Collection, opts csvOptions, rd *csvReader, rej []csvRejection) error {
	if len(rej) == 0 {
		return nil
	}
	want := make(map[int]int, len(rej)) // line -> rejection
	for i, r := range rej {
		want[r.Line] = i
	}
	if _, err := in.Seek(start, io.SeekStart); err != nil {
		return fmt.Errorf("read the file again: %w", err)
	}
	opts.Comma, opts.Encoding = rd.Comma, rd.Encoding
	again, err := newCSVReader(in, coll, opts)
	if err != nil {
		return err
	}
	return again.rows(func(line int, row []string) error {
		if i, ok := want[line]; ok {
			rej[i].Row = row
		}
		return nil
	})
}
