package datadir

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// existing is a config.yaml as ferry init and earlier versions wrote it:
// it must keep reading the same.
const existing = `name: office
role: office
listen:
    - /ip4/0.0.0.0/tcp/4001
    - /ip4/0.0.0.0/udp/4001/quic-v1
peers:
    - /ip4/10.0.0.2/tcp/4001/p2p/12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2
topic: ferry-acme
founder: 12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2
offline: true
sync_interval: 10s
mdns: true
disk_reserve: 1%,256MiB
conflict_hook:
    command:
        - /usr/local/bin/resolve
        - --quiet
    url: http://127.0.0.1:9000/hook
    timeout: 5s
`

func TestReadSettings(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SettingsFile), []byte(existing), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ReadSettings(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &Settings{
		Name: "office", Role: "office",
		Listen:       []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
		Peers:        []string{"/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2"},
		Topic:        "ferry-acme",
		Founder:      "12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2",
		Offline:      true,
		SyncInterval: "10s",
		MDNS:         true,
		DiskReserve:  "1%,256MiB",
		ConflictHook: &Hook{Command: []string{"/usr/local/bin/resolve", "--quiet"}, URL: "http://127.0.0.1:9000/hook", Timeout: "5s"},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("read %+v\nwant %+v", s, want)
	}

	// Written back, byte for byte the same file.
	if err := s.Write(dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, SettingsFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != existing {
		t.Errorf("written:\n%s\nwant:\n%s", data, existing)
	}
}

func TestWriteSettings(t *testing.T) {
	dir := t.TempDir()
	s := &Settings{Name: "laptop1", Role: "field", Listen: []string{"/ip4/0.0.0.0/tcp/0"}, Topic: "ferry"}
	if err := s.Write(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, SettingsFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %o, want 600", perm)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("leftover files: %v", entries)
	}
	// Unset optional settings are left out of the file.
	data, _ := os.ReadFile(path)
	if want := "name: laptop1\nrole: field\nlisten:\n    - /ip4/0.0.0.0/tcp/0\ntopic: ferry\n"; string(data) != want {
		t.Errorf("written:\n%s\nwant:\n%s", data, want)
	}
	back, err := ReadSettings(dir)
	if err != nil || !reflect.DeepEqual(back, s) {
		t.Fatalf("read back %+v, %v", back, err)
	}

	if err := s.Write(filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "write config: ") {
		t.Errorf("write into a missing dir: %v", err)
	}
}

func TestReadSettingsErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadSettings(dir)
	if want := dir + " is not a Ferry data dir (no config.yaml): run 'ferry --dir " + dir + " init' first"; err == nil || err.Error() != want {
		t.Errorf("no config.yaml: %v\nwant %s", err, want)
	}
	path := filepath.Join(dir, SettingsFile)
	if err := os.WriteFile(path, []byte("name: [unclosed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSettings(dir); err == nil || !strings.HasPrefix(err.Error(), "read config "+path+": ") {
		t.Errorf("bad YAML: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSettings(dir); err == nil || !strings.HasPrefix(err.Error(), "read config: ") {
		t.Errorf("config.yaml a dir: %v", err)
	}
}
