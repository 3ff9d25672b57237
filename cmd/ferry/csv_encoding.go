package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// The bytes of CSV files: encodings (BOMs, UTF-16, Windows-1252) and the
// delimiter, read and written as Excel and other CRMs do.

// decodeCSV returns the text of a CSV file, read from in from where it
// stands, as it is read: a BOM decides (UTF-8, UTF-16 LE or BE), else enc,
// else UTF-8 when the bytes are valid UTF-8 and Windows-1252 when not (to
// tell, the file is read once before, and in sought back). It returns the
// encoding used.
func decodeCSV(in io.ReadSeeker, enc string) (io.Reader, string, error) {
	start, err := in.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, "", fmt.Errorf("read CSV: %w", err)
	}
	br := bufio.NewReaderSize(in, 64<<10)
	head, err := br.Peek(len(utf8BOM))
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, "", fmt.Errorf("read CSV: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, []byte(utf8BOM)):
		if enc != "" && !strings.EqualFold(enc, "utf-8") {
			return nil, "", fmt.Errorf("the file starts with a UTF-8 byte order mark, but --encoding says %s", enc)
		}
		_, _ = br.Discard(len(utf8BOM))
		return br, "utf-8", nil
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE}), bytes.HasPrefix(head, []byte{0xFE, 0xFF}):
		enc = "utf-16"
	}
	var dec *encoding.Decoder
	switch strings.ToLower(enc) {
	case "":
		valid, err := validUTF8(br)
		if err != nil {
			return nil, "", fmt.Errorf("read CSV: %w", err)
		}
		if _, err := in.Seek(start, io.SeekStart); err != nil {
			return nil, "", fmt.Errorf("read CSV: %w", err)
		}
		br.Reset(in)
		if valid {
			return br, "utf-8", nil
		}
		enc, dec = "windows-1252", charmap.Windows1252.NewDecoder()
	case "utf-8", "utf8":
		// Bytes that are not UTF-8 are refused cell by cell, with their
		// line and column.
		return br, "utf-8", nil
	case "windows-1252", "cp1252", "latin1", "iso-8859-1":
		enc, dec = "windows-1252", charmap.Windows1252.NewDecoder()
	case "utf-16", "utf16":
		// Excel's "Unicode text": little-endian unless its BOM says otherwise.
		enc, dec = "utf-16", unicode.UTF16(unicode.LittleEndian, unicode.UseBOM).NewDecoder()
	default:
		return nil, "", fmt.Errorf("--encoding %q: want utf-8, windows-1252 or utf-16", enc)
	}
	out := bufio.NewReaderSize(decodeErrors{transform.NewReader(br, dec), enc}, 64<<10)
	if head, _ := out.Peek(len(utf8BOM)); bytes.Equal(head, []byte(utf8BOM)) {
		_, _ = out.Discard(len(utf8BOM))
	}
	return out, enc, nil
}

// decodeErrors names the encoding in the errors of a decoding reader.
type decodeErrors struct {
	r   io.Reader
	enc string
}

func (d decodeErrors) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("decode %s: %w", d.enc, err)
	}
	return n, err
}

// validUTF8 reads r to its end and tells whether it is valid UTF-8.
func validUTF8(r io.Reader) (bool, error) {
	buf := make([]byte, 64<<10)
	carry := 0 // bytes of a rune cut by the previous read
	for {
		n, err := r.Read(buf[carry:])
		n += carry
		end := n
		if err == nil {
			// Keep a rune the read cut for the next one.
			for k := 1; k < utf8.UTFMax && k <= n; k++ {
				if utf8.RuneStart(buf[n-k]) {
					if !utf8.FullRune(buf[n-k : n]) {
						end = n - k
					}
					break
				}
			}
		}
		if !utf8.Valid(buf[:end]) {
			return false, nil
		}
		carry = copy(buf, buf[end:n])
		switch {
		case err == io.EOF:
			return true, nil
		case err != nil:
			return false, err
		}
	}
}

// csvHeaderMax bounds what is read to detect the delimiter.
const csvHeaderMax = 1 << 20

// peekHeader returns the first line of a CSV text (up to the first line
// break outside quotes, at most csvHeaderMax bytes) and a reader of the
// whole text, that line included.
func peekHeader(r io.Reader) (string, io.Reader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	var head []byte
	quoted := false
	for len(head) < csvHeaderMax {
		c, err := br.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, fmt.Errorf("read CSV: %w", err)
		}
		head = append(head, c)
		if c == '"' {
			quoted = !quoted
		} else if c == '\n' && !quoted {
			break
		}
	}
	return string(head), io.MultiReader(bytes.NewReader(head), br), nil
}

// detectComma picks the delimiter of a CSV text: the most frequent of ',',
// ';' and tab in its first line, outside quotes (',' when none appears).
func detectComma(text string) rune {
	counts := map[rune]int{}
	quoted := false
	for _, r := range text {
		if r == '"' {
			quoted = !quoted
			continue
		}
		if quoted {
			continue
		}
		if r == '\n' {
			break
		}
		if r == ',' || r == ';' || r == '\t' {
			counts[r]++
		}
	}
	best := ','
	for _, r := range []rune{';', '\t'} {
		if counts[r] > counts[best] {
			best = r
		}
	}
	return best
}

// encodeOutput wraps w to write in encoding: "utf-8" as it is,
// "windows-1252" (a character it lacks is an error), "utf-16" little-endian
// with a BOM (Excel's "Unicode text"). finish flushes what the encoder holds.
func encodeOutput(w io.Writer, enc string) (io.Writer, func() error, error) {
	var e *encoding.Encoder
	switch strings.ToLower(enc) {
	case "", "utf-8", "utf8":
		return w, func() error { return nil }, nil
	case "windows-1252", "cp1252":
		e = charmap.Windows1252.NewEncoder()
	case "utf-16", "utf16":
		e = unicode.UTF16(unicode.LittleEndian, unicode.UseBOM).NewEncoder()
	default:
		return nil, nil, fmt.Errorf("--encoding %q: want utf-8, windows-1252 or utf-16", enc)
	}
	tw := transform.NewWriter(w, e)
	return tw, tw.Close, nil
}
