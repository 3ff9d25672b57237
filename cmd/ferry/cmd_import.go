package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ferry-crm/ferry/node"
)

func newImportCmd(g *globals) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "import COLLECTION FILE",
		Short: "Import JSON Lines records (FILE or - for stdin)",
		Long: `Import records from JSON Lines: one object per line with a string "id" and
field values, e.g. {"id":"c1","last_name":"Smith","amount":12.5}.
Every line is validated first: a bad line fails the import with its line
number and nothing is written. Records are then written in large batched
deltas (about 400 field operations each); a record is never split.`,
		Args: exactArgs(2, "COLLECTION FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			if args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				defer f.Close()
				in = f
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				resp, err := c.send(cmd.Context(), "POST", "/v1/import/"+url.PathEscape(args[0]), in)
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				defer resp.Body.Close()
				var bar *progressbar.ProgressBar
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					var p node.ImportProgress
					if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
						return fmt.Errorf("import: bad progress line: %w", err)
					}
					if bar == nil && !quiet && isTerminal(cmd.ErrOrStderr()) {
						bar = progressbar.NewOptions(p.Total,
							progressbar.OptionSetWriter(cmd.ErrOrStderr()),
							progressbar.OptionSetDescription("importing "+args[0]),
							progressbar.OptionShowCount(),
							progressbar.OptionShowIts(),
							progressbar.OptionSetItsString("records"),
							progressbar.OptionOnCompletion(func() { fmt.Fprintln(cmd.ErrOrStderr()) }),
						)
					}
					if bar != nil {
						_ = bar.Set(p.Done)
					}
					if p.Error != "" {
						return fmt.Errorf("import stopped after %d of %d records: %s", p.Done, p.Total, p.Error)
					}
					if p.Result != nil {
						r := p.Result
						fmt.Fprintf(cmd.OutOrStdout(), "imported %s into %s: %d written, %d unchanged, in %s\n",
							plural(r.Records, "record"), args[0], r.Written, r.Unchanged, plural(r.Deltas, "delta"))
						return nil
					}
				}
				if err := sc.Err(); err != nil {
					return fmt.Errorf("import: %w", err)
				}
				return fmt.Errorf("import: the node ended the answer without a result")
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
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
