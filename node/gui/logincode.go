package gui

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// One-time login codes: `ferry gui` opens the browser with a code instead
// of the login token, because a browser's command line (where the link
// goes) is readable by every local user in /proc, and the token never
// expires. A code is a file in the data dir (mode 0700: only its owner
// can make one), good for one login within codeTTL.

// CodeDir holds the one-time login codes, one empty file each.
const CodeDir = "gui-login"

// codeTTL is how long a code is good for.
const codeTTL = 2 * time.Minute

// NewLoginCode makes a one-time login code in dir and returns the link
// that uses it (the page's address is read from AddrFile).
func NewLoginCode(dir string) (string, error) {
	addr, err := os.ReadFile(filepath.Join(dir, AddrFile))
	if err != nil {
		return "", fmt.Errorf("gui address: %w", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("login code: %w", err)
	}
	code := hex.EncodeToString(b)
	codes := filepath.Join(dir, CodeDir)
	if err := os.MkdirAll(codes, 0o700); err != nil {
		return "", fmt.Errorf("login code: %w", err)
	}
	if err := os.WriteFile(filepath.Join(codes, code), nil, 0o600); err != nil {
		return "", fmt.Errorf("login code: %w", err)
	}
	return "http://" + strings.TrimSpace(string(addr)) + "/login?code=" + code, nil
}

// useLoginCode reports whether code is a live one-time code of dir, and
// removes it (a second use fails). Expired codes found on the way go too.
func useLoginCode(dir, code string) bool {
	if len(code) != 32 || strings.Trim(code, "0123456789abcdef") != "" {
		return false
	}
	path := filepath.Join(dir, CodeDir, code)
	info, err := os.Stat(path)
	if err != nil {
		return false
	}
	// Removing it is what makes it one-time: of two logins with the same
	// code, only the one whose remove succeeds gets in.
	if err := os.Remove(path); err != nil {
		return false
	}
	sweepLoginCodes(dir)
	return info.Mode().IsRegular() && time.Since(info.ModTime()) < codeTTL
}

// sweepLoginCodes removes expired codes.
func sweepLoginCodes(dir string) {
	entries, err := os.ReadDir(filepath.Join(dir, CodeDir))
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) >= codeTTL {
			_ = os.Remove(filepath.Join(dir, CodeDir, e.Name()))
		}
	}
}
