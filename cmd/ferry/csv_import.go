package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/ferry-crm/ferry/schema"
)

// csvOptions say how to read a CSV export as it comes from another CRM or
// from Excel. The zero value reads Ferry's own CSV: UTF-8, header names
// that are field names (or aliases) and "id".
type csvOptions struct {
	// Comma separates cells; 0 detects it from the header row (the most
	// frequent of ',', ';' and tab outside quotes).
	Comma rune
	// Encoding is "utf-8", "windows-1252" or "utf-16"; "" detects it: a
	// BOM says UTF-8 or UTF-16, text that is not valid UTF-8 is read as
	// Windows-1252 (what older Excel writes).
	Encoding string
	// Map maps header names (as written, surrounding spaces ignored,
	// compared case-insensitively) to field names, or to "id"; an empty
	// field ignores the column. It wins over names and aliases.
	Map map[string]string
	// IgnoreUnknown leaves out columns that map to no field instead of
	// failing; they are listed in csvReader.Ignored.
	IgnoreUnknown bool
	// IDColumn names the column that holds the record ids (default: the
	// column named "id").
	IDColumn string
	// IDFrom derives each record's id from these fields' values (trimmed,
	// lowercased): the same values give the same id, so importing a file
	// again updates its records instead of adding them.
	IDFrom []string
	// NewIDs gives every row a new random id (a second import adds the
	// records again).
	NewIDs bool
	// Format reads numbers and dates written for a locale.
	Format schema.TextFormat
	// Collect leaves out a row that cannot be read (a csvRejection of
	// csvReader.next) instead of failing; a bad header still fails.
	Collect bool
}

// csvResult is a whole file read (readCSVWith): its records and what
// reading found besides.
type csvResult struct {
	Records  []csvRecord
	Comma    rune
	Encoding string   // how the bytes were decoded
	Ignored  []string // columns left out (IgnoreUnknown, or mapped to "")
	Header   []string // the header row as read
	// Rejected are the rows left out (csvOptions.Collect).
	Rejected []csvRejection
}

// readCSV reads Ferry's own CSV with the given delimiter (see readCSVWith).
func readCSV(r io.Reader, coll *schema.Collection, comma rune) ([]csvRecord, error) {
	res, err := readCSVWith(r, coll, csvOptions{Comma: comma, Encoding: "utf-8"})
	return res.Records, err
}

// readCSVWith converts a whole CSV file, in memory, to records of coll
// (see csvReader; the import streams instead: writeCSVImport). The first
// problem is returned as a *csvError (or an I/O error) and no record.
func readCSVWith(r io.Reader, coll *schema.Collection, opts csvOptions) (csvResult, error) {
	var res csvResult
	raw, err := io.ReadAll(r)
	if err != nil {
		return res, fmt.Errorf("read CSV: %w", err)
	}
	rd, err := newCSVReader(bytes.NewReader(raw), coll, opts)
	if rd != nil {
		res.Encoding, res.Comma, res.Header, res.Ignored = rd.Encoding, rd.Comma, rd.Header, rd.Ignored
	}
	if err != nil {
		return res, err
	}
	for {
		rec, rej, err := rd.next()
		switch {
		case err == io.EOF:
			return res, nil
		case err != nil:
			res.Records = nil
			return res, err
		case rej != nil:
			res.Rejected = append(res.Rejected, *rej)
		default:
			res.Records = append(res.Records, *rec)
		}
	}
}

// csvReader reads the records of a CSV file one at a time. The first row
// is the header: each column maps, in this order, through opts.Map, to the
// id (opts.IDColumn, or a column named "id"), or to a field by its name or
// one of its aliases (schema.Collection.Column: case and spaces do not
// count). Every later row is one record: an empty cell leaves its field
// out, every other cell is parsed by its field's type like 'ferry put'
// parses FIELD=VALUE, in opts.Format. Rows whose cells are all empty are
// skipped.
type csvReader struct {
	Comma    rune
	Encoding string   // how the bytes are decoded
	Ignored  []string // columns left out (IgnoreUnknown, or mapped to "")
	Header   []string // the header row as read

	cr    *csv.Reader
	coll  *schema.Collection
	opts  csvOptions
	cols  []string
	idCol int
	ids   *idMaker
}

// newCSVReader decodes the text of in (see decodeCSV), detects its
// delimiter unless opts gives it, and reads and maps the header. On an
// error past decoding it returns what it found with the error.
func newCSVReader(in io.ReadSeeker, coll *schema.Collection, opts csvOptions) (*csvReader, error) {
	text, enc, err := decodeCSV(in, opts.Encoding)
	if err != nil {
		return nil, err
	}
	rd := &csvReader{Encoding: enc, Comma: opts.Comma, coll: coll, opts: opts}
	if rd.Comma == 0 {
		var head string
		if head, text, err = peekHeader(text); err != nil {
			return rd, err
		}
		rd.Comma = detectComma(head)
	}
	rd.cr = csv.NewReader(text)
	rd.cr.Comma = rd.Comma
	rd.cr.FieldsPerRecord = -1 // checked here, with a better message

	header, err := rd.cr.Read()
	if err == io.EOF {
		return rd, &csvError{Line: 1, Err: errors.New(`the file is empty: want a header row naming the columns, one of them the id`)}
	}
	if err != nil {
		return rd, csvReadError(err)
	}
	line, _ := rd.cr.FieldPos(0)
	rd.Header = header
	cols, idCol, ignored, err := mapColumns(header, coll, opts)
	if err != nil {
		return rd, &csvError{Line: line, Err: err}
	}
	rd.cols, rd.idCol, rd.Ignored = cols, idCol, ignored
	if rd.ids, err = newIDMaker(coll, opts, idCol, header); err != nil {
		return rd, &csvError{Line: line, Err: err}
	}
	return rd, nil
}

// next returns the next record, or with opts.Collect a row that cannot be
// read, left out; io.EOF at the end. Without opts.Collect such a row is
// an error (a *csvError).
func (rd *csvReader) next() (*csvRecord, *csvRejection, error) {
	for {
		row, err := rd.cr.Read()
		if err == io.EOF {
			return nil, nil, io.EOF
		}
		var pe *csv.ParseError
		if err != nil && !(rd.opts.Collect && errors.As(err, &pe)) {
			return nil, nil, csvReadError(err)
		}
		if err != nil {
			// A broken quote: encoding/csv has read past it to what it
			// could, and goes on from there.
			return nil, &csvRejection{Line: pe.StartLine, Row: row, Reason: csvReadError(err).Error()}, nil
		}
		rec, err := readRow(rd.cr, row, rd.Header, rd.cols, rd.idCol, rd.coll, rd.ids, rd.opts, rd.Comma)
		if err != nil {
			var ce *csvError
			if !rd.opts.Collect || !errors.As(err, &ce) {
				return nil, nil, err
			}
			return nil, &csvRejection{Line: ce.Line, Row: row, Reason: ce.Error()}, nil
		}
		if rec != nil {
			return rec, nil, nil
		}
	}
}

// rows calls fn with every data row as read, and the line where it starts
// (the rows encoding/csv cannot read are left out).
func (rd *csvReader) rows(fn func(line int, row []string) error) error {
	for {
		row, err := rd.cr.Read()
		if err == io.EOF {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			continue
		}
		if err != nil {
			return csvReadError(err)
		}
		line, _ := rd.cr.FieldPos(0)
		if err := fn(line, row); err != nil {
			return err
		}
	}
}

// readRow converts one data row (nil for a row whose cells are all empty).
func readRow(cr *csv.Reader, row, header, cols []string, idCol int, coll *schema.Collection, ids *idMaker, opts csvOptions, comma rune) (*csvRecord, error) {
	line, _ := cr.FieldPos(0)
	if allEmpty(row) {
		return nil, nil
	}
	if len(row) != len(cols) {
		err := fmt.Errorf("%s, but the header has %s", plural(len(row), "cell"), plural(len(cols), "column"))
		if len(row) > len(cols) {
			err = fmt.Errorf("%w (a cell holding %q must be quoted)", err, comma)
		}
		return nil, &csvError{Line: line, Err: err}
	}
	rec := csvRecord{Line: line, Fields: make(map[string]any, len(row))}
	if opts.Collect {
		rec.Row = row
	}
	for i, cell := range row {
		if cols[i] == "" || i == idCol || cell == "" {
			continue
		}
		v, err := coll.ParseTextIn(cols[i], cell, opts.Format)
		if err != nil {
			return nil, &csvError{Line: line, Column: strings.TrimSpace(header[i]), ID: cellAt(row, idCol), Err: err}
		}
		rec.Fields[cols[i]] = v
	}
	var err error
	if rec.ID, err = ids.id(row, rec.Fields); err != nil {
		return nil, &csvError{Line: line, Column: ids.column, Err: err}
	}
	return &rec, nil
}

func cellAt(row []string, i int) string {
	if i < 0 || i >= len(row) {
		return ""
	}
	return row[i]
}

// mapColumns maps the header's columns to fields: cols[i] is column i's
// field ("" for an ignored column, and for the id column idCol, -1 if
// none).
func mapColumns(header []string, coll *schema.Collection, opts csvOptions) (cols []string, idCol int, ignored []string, err error) {
	mapped := make(map[string]string, len(opts.Map))
	for h, f := range opts.Map {
		mapped[strings.ToLower(strings.TrimSpace(h))] = f
	}
	cols, idCol = make([]string, len(header)), -1
	from := map[string]int{} // field -> column
	seen := map[string]int{} // header name -> column
	for i, h := range header {
		name := strings.TrimSpace(h)
		if name == "" {
			return nil, -1, nil, fmt.Errorf("column %d has no name in the header", i+1)
		}
		if j, dup := seen[name]; dup {
			return nil, -1, nil, fmt.Errorf("column %q appears twice in the header (columns %d and %d)", name, j+1, i+1)
		}
		seen[name] = i
		field, ok := mapped[strings.ToLower(name)]
		switch {
		case ok && field == "":
			ignored = append(ignored, name)
			continue
		case ok:
		case opts.IDColumn != "" && strings.EqualFold(name, strings.TrimSpace(opts.IDColumn)):
			field = schema.ReservedIDField
		default:
			if field, ok = coll.Column(name); !ok {
				if opts.IgnoreUnknown {
					ignored = append(ignored, name)
					continue
				}
				return nil, -1, nil, unknownColumn(coll, name)
			}
		}
		if field == schema.ReservedIDField && opts.IDColumn != "" && !strings.EqualFold(name, strings.TrimSpace(opts.IDColumn)) {
			// --id-column names the id: another column that says "id" is
			// data this collection does not hold.
			if opts.IgnoreUnknown {
				ignored = append(ignored, name)
				continue
			}
			return nil, -1, nil, fmt.Errorf("column %q would be the id, but --id-column names %q (--ignore-unknown leaves it out)", name, opts.IDColumn)
		}
		if j, dup := from[field]; dup {
			return nil, -1, nil, fmt.Errorf("columns %q and %q both map to %q (--map %q= leaves one out)", strings.TrimSpace(header[j]), name, field, name)
		}
		from[field] = i
		if field == schema.ReservedIDField {
			idCol = i
			continue
		}
		cols[i] = field
	}
	if opts.IDColumn != "" && idCol < 0 {
		return nil, -1, nil, fmt.Errorf("--id-column %q: no such column in the header (it has %s)", opts.IDColumn, quoteList(trimmed(header)))
	}
	return cols, idCol, ignored, nil
}

func trimmed(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.TrimSpace(s)
	}
	return out
}

// idMaker gives each row its record id.
type idMaker struct {
	col    int      // the id column, or -1
	from   []string // fields the id is derived from
	fresh  bool     // a new random id per row
	column string   // what errors name
}

func newIDMaker(coll *schema.Collection, opts csvOptions, idCol int, header []string) (*idMaker, error) {
	sources := 0
	for _, set := range []bool{idCol >= 0, len(opts.IDFrom) > 0, opts.NewIDs} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		return nil, fmt.Errorf(`no "id" column in the header (it has %s): name the column that holds the ids (--id-column "Contact ID"), derive ids from fields (--id-from email), or give every row a new id (--new-ids)`, quoteList(trimmed(header)))
	case sources > 1 && idCol >= 0:
		return nil, fmt.Errorf("the header has an id column (%q): --id-from and --new-ids are for files without one", strings.TrimSpace(header[idCol]))
	case sources > 1:
		return nil, errors.New("--id-from and --new-ids: give one of them")
	}
	m := &idMaker{col: idCol, fresh: opts.NewIDs}
	if idCol >= 0 {
		m.column = strings.TrimSpace(header[idCol])
	}
	for _, f := range opts.IDFrom {
		if coll.Field(f) == nil {
			return nil, fmt.Errorf("--id-from %q: %s has no such field (its fields: %s)", f, collName(coll), strings.Join(coll.FieldNames(), ", "))
		}
		m.from = append(m.from, f)
	}
	return m, nil
}

// id returns the record id of a row whose fields were read.
func (m *idMaker) id(row []string, fields map[string]any) (string, error) {
	switch {
	case m.col >= 0:
		id := row[m.col]
		return id, checkCSVID(id)
	case m.fresh:
		return newRecordID()
	}
	h := sha256.New()
	empty := true
	for _, f := range m.from {
		v := strings.ToLower(strings.TrimSpace(fmt.Sprint(fields[f])))
		if fields[f] == nil {
			v = ""
		}
		empty = empty && v == ""
		fmt.Fprintf(h, "%d:%s;", len(v), v)
	}
	if empty {
		return "", fmt.Errorf("--id-from %s: every one of them is empty in this row", strings.Join(m.from, ","))
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}

// newRecordID is a random record id (--new-ids).
func newRecordID() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new record id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// csvRejection is a row left out of an import, and why.
type csvRejection struct {
	Line   int
	Row    []string // the row's cells as read
	Reason string
}

// writeRejects writes the rows left out to a new CSV file: "line" and
// "reason", then the file's own columns; by line.
func writeRejects(path string, header []string, rej []csvRejection) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("rejects: %w", err)
	}
	slices.SortFunc(rej, func(a, b csvRejection) int { return a.Line - b.Line })
	w := csv.NewWriter(f)
	_ = w.Write(append([]string{"line", "reason"}, header...))
	for _, r := range rej {
		_ = w.Write(append([]string{strconv.Itoa(r.Line), r.Reason}, r.Row...))
	}
	w.Flush()
	err = w.Error()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("rejects %s: %w", path, err)
	}
	return nil
}
