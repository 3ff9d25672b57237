package datadir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGUISettings(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want *GUI
	}{
		{"name: a\n", nil},
		{"gui: {listen: 127.0.0.1:9000}\n", &GUI{Listen: "127.0.0.1:9000"}},
		{"gui:\n  listen: '[::1]:0'\n", &GUI{Listen: "[::1]:0"}},
		{"gui: off\n", &GUI{Off: true}},
		{"gui: false\n", &GUI{Off: true}},
		{"gui: {listen: off}\n", &GUI{Off: true}},
		{"gui: on\n", &GUI{}},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, SettingsFile), []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := ReadSettings(dir)
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if (s.GUI == nil) != (tc.want == nil) || (s.GUI != nil && *s.GUI != *tc.want) {
			t.Errorf("%q: gui = %+v, want %+v", tc.yaml, s.GUI, tc.want)
		}
		// Written back and read again: the same.
		if err := s.Write(dir); err != nil {
			t.Fatal(err)
		}
		back, err := ReadSettings(dir)
		if err != nil {
			t.Fatal(err)
		}
		if (back.GUI == nil) != (tc.want == nil) || (back.GUI != nil && *back.GUI != *tc.want) {
			t.Errorf("%q: written and read back: gui = %+v, want %+v", tc.yaml, back.GUI, tc.want)
		}
	}
	dir := t.TempDir()
	for _, bad := range []string{"gui: maybe\n", "gui: [1, 2]\n", "gui: {listen: [a]}\n"} {
		if err := os.WriteFile(filepath.Join(dir, SettingsFile), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadSettings(dir); err == nil || !strings.Contains(err.Error(), "gui") {
			t.Errorf("%q: err %v, want one naming gui", bad, err)
		}
	}
}
