package main

// CSV import and export. Users come from CRMs that export CSV: the import
// converts a CSV file row by row to the JSON Lines the node's import
// endpoint takes (typed values, one line per record) as it sends them; the
// node spools the request and writes nothing before it has all of it, so a
// bad row fails the import with its line and column and writes nothing.
// The export writes what 'ferry get' shows, which the import reads back.

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/schema"
)

// utf8BOM is the byte order mark Excel writes at the start of UTF-8 CSV.
const utf8BOM = "\uFEFF"

// csvRecord is one data row of a CSV file, converted.
type csvRecord struct {
	Line   int            // line of the file where the row starts
	ID     string         // the id cell
	Fields map[string]any // canonical values (schema ParseText); empty cells left out
	Row    []string       // the cells as read, kept for a rejects file (csvOptions.Collect)
}

// csvError locates a problem in a CSV file: the line where the row starts
// and, for a cell, the column's header name and the record id.
type csvError struct {
	Line   int
	Column string
	ID     string
	Err    error
}

func (e *csvError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "line %d", e.Line)
	if e.Column != "" {
		fmt.Fprintf(&b, ", column %q", e.Column)
	}
	if e.ID != "" {
		fmt.Fprintf(&b, " (record %q)", e.ID)
	}
	b.WriteString(": ")
	var fe *schema.FieldError
	if errors.As(e.Err, &fe) && fe.Reason != "" && !errors.Is(fe, schema.ErrUnknownField) && !errors.Is(fe, schema.ErrRequired) {
		b.WriteString(fe.Reason) // the line and column already say where
	} else {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *csvError) Unwrap() error { return e.Err }

// parseDelimiter reads a --delimiter value: one character, or \t or "tab"
// for a tab. Quotes, line breaks and the replacement character are refused
// (encoding/csv cannot use them).
func parseDelimiter(s string) (rune, error) {
	switch s {
	case `\t`, "tab", "TAB":
		return '\t', nil
	}
	r, size := utf8.DecodeRuneInString(s)
	if s == "" || size != len(s) {
		return 0, fmt.Errorf("--delimiter %q: want one character, like ';' or '\\t'", s)
	}
	if r == '"' || r == '\r' || r == '\n' || r == utf8.RuneError || r == 0xFEFF {
		return 0, fmt.Errorf("--delimiter %q cannot separate CSV cells", s)
	}
	return r, nil
}

// checkCSVID refuses a record id the import cannot take as it is.
func checkCSVID(id string) error {
	if id == "" {
		return errors.New("empty record id")
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("record id %q is not valid UTF-8", id)
	}
	_, err := crdt.EscapeID(id)
	return err
}

// csvReadError turns an encoding/csv error into a *csvError naming the line
// where the row starts.
func csvReadError(err error) error {
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("read CSV: %w", err)
	}
	at := fmt.Sprintf("byte %d", pe.Column)
	if pe.Line != pe.StartLine {
		at = fmt.Sprintf("line %d, byte %d", pe.Line, pe.Column)
	}
	return &csvError{Line: pe.StartLine, Err: fmt.Errorf(`%w (at %s; a cell holding quotes is quoted and doubles them: "say ""hi""")`, pe.Err, at)}
}

// unknownColumn explains a header name that is no field of coll.
func unknownColumn(coll *schema.Collection, name string) error {
	return fmt.Errorf("unknown column %q: %s has no such field or alias (its fields: %s); map it with --map %q, or leave it out with --ignore-unknown",
		name, collName(coll), strings.Join(coll.FieldNames(), ", "), name+"=FIELD")
}

func collName(coll *schema.Collection) string {
	if coll.Name == "" {
		return "the collection"
	}
	return coll.Name
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

func allEmpty(row []string) bool {
	for _, c := range row {
		if c != "" {
			return false
		}
	}
	return true
}

// writeImportLines writes recs as the JSON Lines the import endpoint reads:
// exactly one line per record, in order, so that line K of the request is
// recs[K-1] (see relocateImportError).
func writeImportLines(w io.Writer, recs []csvRecord) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for _, r := range recs {
		if err := writeImportLine(enc, r); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// writeImportLine writes one record as one JSON line.
func writeImportLine(enc *json.Encoder, r csvRecord) error {
	obj := make(map[string]any, len(r.Fields)+1)
	for k, v := range r.Fields {
		obj[k] = v
	}
	obj[schema.ReservedIDField] = r.ID
	if err := enc.Encode(obj); err != nil { // ends each object with one '\n'
		return fmt.Errorf("line %d: %w", r.Line, err)
	}
	return nil
}

// csvImport is what streaming a CSV file to the node keeps: the file line
// of each line sent, and the rows left out on this side (csvOptions.Collect).
type csvImport struct {
	Lines    lineMap
	Rejected []csvRejection
}

// writeCSVImport reads the records of rd one at a time and writes each as
// one JSON line to w (line K of w is the K-th record), noting in ci where
// each comes from and the rows left out.
func writeCSVImport(w io.Writer, rd *csvReader, ci *csvImport) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for {
		rec, rej, err := rd.next()
		switch {
		case err == io.EOF:
			return bw.Flush()
		case err != nil:
			return err
		case rej != nil:
			ci.Rejected = append(ci.Rejected, *rej)
			continue
		}
		if err := writeImportLine(enc, *rec); err != nil {
			return err
		}
		ci.Lines.add(rec.Line)
	}
}

// lineMap maps the lines of an import request (one record each) to the
// lines of the file where the records start. It keeps one entry per run of
// records on consecutive lines, not one per record.
type lineMap struct {
	n    int       // lines mapped
	runs []lineRun // by k
}

// lineRun: request line k is file line line, and the lines after it follow
// one to one up to the next run.
type lineRun struct{ k, line int }

// add maps the next request line to file line line.
func (m *lineMap) add(line int) {
	m.n++
	if len(m.runs) > 0 {
		if last := m.runs[len(m.runs)-1]; last.line+(m.n-last.k) == line {
			return
		}
	}
	m.runs = append(m.runs, lineRun{k: m.n, line: line})
}

// line returns the file line of request line k.
func (m *lineMap) line(k int) (int, bool) {
	if k < 1 || k > m.n {
		return 0, false
	}
	i := sort.Search(len(m.runs), func(i int) bool { return m.runs[i].k > k }) - 1
	return m.runs[i].line + k - m.runs[i].k, true
}

// importLineRE matches the "line K: " the node puts before an import error.
var importLineRE = regexp.MustCompile(`^line ([0-9]+): `)

// relocateImportError rewrites the node's "line K: ..." (K counts the JSON
// lines sent) to the line of the CSV file where record K starts.
func relocateImportError(msg string, recs []csvRecord) string {
	var m lineMap
	for _, r := range recs {
		m.add(r.Line)
	}
	return relocateLine(msg, &m)
}

// relocateLine is relocateImportError with the lines of a lineMap.
func relocateLine(msg string, m *lineMap) string {
	sub := importLineRE.FindStringSubmatch(msg)
	if sub == nil {
		return msg
	}
	k, err := strconv.Atoi(sub[1])
	if err != nil {
		return msg
	}
	line, ok := m.line(k)
	if !ok {
		return msg
	}
	return fmt.Sprintf("line %d: %s", line, msg[len(sub[0]):])
}

// csvExporter writes records as CSV: a header row (id, then the fields of
// the collection in schema order) and one row per record, each value as
// 'ferry get' shows it (schema.FormatText), which readCSV parses back.
type csvExporter struct {
	w      *csv.Writer
	coll   *schema.Collection
	format schema.TextFormat
	index  map[string]int // field -> column
	fields []string       // column -> field
	row    []string
	header bool
}

// exportOptions say how a CSV export is written, for a spreadsheet or
// another program: the same options read it back (csvOptions).
type exportOptions struct {
	Comma rune
	// Format writes numbers with a decimal comma and times in a layout.
	Format schema.TextFormat
	// Aliases heads each column with the field's first alias (its name
	// when it has none).
	Aliases bool
	// IDHeader heads the id column (default "id").
	IDHeader string
}

func newCSVExporter(w io.Writer, coll *schema.Collection, comma rune) *csvExporter {
	return newCSVExporterWith(w, coll, exportOptions{Comma: comma})
}

func newCSVExporterWith(w io.Writer, coll *schema.Collection, opts exportOptions) *csvExporter {
	cw := csv.NewWriter(w)
	cw.Comma = opts.Comma
	fields := coll.FieldNames()
	e := &csvExporter{w: cw, coll: coll, format: opts.Format, index: make(map[string]int, len(fields)),
		fields: make([]string, len(fields)+1), row: make([]string, len(fields)+1)}
	e.row[0] = schema.ReservedIDField
	if opts.IDHeader != "" {
		e.row[0] = opts.IDHeader
	}
	for i, f := range fields {
		e.index[f] = i + 1
		e.fields[i+1] = f
		e.row[i+1] = f
		if fd := coll.Fields[f]; opts.Aliases && fd != nil && len(fd.Aliases) > 0 {
			e.row[i+1] = fd.Aliases[0]
		}
	}
	return e
}

// writeHeader writes the header row (once).
func (e *csvExporter) writeHeader() error {
	if e.header {
		return nil
	}
	e.header = true
	return e.w.Write(e.row)
}

// write writes one record. A field the schema does not define is an error:
// there is no column for it.
func (e *csvExporter) write(id string, values map[string]any) error {
	if err := e.writeHeader(); err != nil {
		return err
	}
	clear(e.row)
	e.row[0] = id
	for k, v := range values {
		i, ok := e.index[k]
		if !ok {
			return fmt.Errorf("%s/%s has a field %q the schema does not define: export it as JSON Lines", e.coll.Name, id, k)
		}
		e.row[i] = e.coll.FormatTextIn(k, v, e.format)
	}
	return e.w.Write(e.row)
}

// writeLine writes one line of the node's export stream ({"id": ..., fields}).
func (e *csvExporter) writeLine(line []byte) error {
	var obj map[string]any
	if err := json.Unmarshal(line, &obj); err != nil {
		return fmt.Errorf("decode exported record: %w", err)
	}
	id, ok := obj[schema.ReservedIDField].(string)
	if !ok {
		return fmt.Errorf("exported record without a string id: %s", line)
	}
	delete(obj, schema.ReservedIDField)
	return e.write(id, obj)
}

// flush writes what is buffered (the header even with no records).
func (e *csvExporter) flush() error {
	if err := e.writeHeader(); err != nil {
		return err
	}
	e.w.Flush()
	return e.w.Error()
}

// fetchCollection reads the schema of a collection from the node.
func fetchCollection(ctx context.Context, c *client, name string) (*schema.Collection, error) {
	var sc schema.Schema
	if err := c.Do(ctx, "GET", "/v1/schema", nil, &sc); err != nil {
		return nil, err
	}
	coll, err := sc.Collection(name)
	if err != nil {
		return nil, err
	}
	coll.Name = name
	return coll, nil
}
