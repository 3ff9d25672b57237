package main

import (
	"bytes"
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

// decodeCSV turns the file's bytes into text: a BOM decides (UTF-8, UTF-16
// LE or BE), else enc, else UTF-8 when the bytes are valid UTF-8 and
// Windows-1252 when not. It returns the encoding used.
func decodeCSV(raw []byte, enc string) (string, string, error) {
	switch {
	case bytes.HasPrefix(raw, []byte(utf8BOM)):
		if enc != "" && !strings.EqualFold(enc, "utf-8") {
			return "", "", fmt.Errorf("the file starts with a UTF-8 byte order mark, but --encoding says %s", enc)
		}
		raw, enc = raw[len(utf8BOM):], "utf-8"
	case bytes.HasPrefix(raw, []byte{0xFF, 0xFE}), bytes.HasPrefix(raw, []byte{0xFE, 0xFF}):
		enc = "utf-16"
	}
	var dec *encoding.Decoder
	switch strings.ToLower(enc) {
	case "":
		if utf8.Valid(raw) {
			return string(raw), "utf-8", nil
		}
		enc, dec = "windows-1252", charmap.Windows1252.NewDecoder()
	case "utf-8", "utf8":
		// Bytes that are not UTF-8 are refused cell by cell, with their
		// line and column.
		return string(raw), "utf-8", nil
	case "windows-1252", "cp1252", "latin1", "iso-8859-1":
		enc, dec = "windows-1252", charmap.Windows1252.NewDecoder()
	case "utf-16", "utf16":
		// Excel's "Unicode text": little-endian unless its BOM says otherwise.
		enc, dec = "utf-16", unicode.UTF16(unicode.LittleEndian, unicode.UseBOM).NewDecoder()
	default:
		return "", "", fmt.Errorf("--encoding %q: want utf-8, windows-1252 or utf-16", enc)
	}
	out, err := dec.Bytes(raw)
	if err != nil {
		return "", "", fmt.Errorf("decode %s: %w", enc, err)
	}
	return strings.TrimPrefix(string(out), utf8BOM), enc, nil
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
