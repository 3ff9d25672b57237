package datadir

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSwarmKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SwarmKeyFile)
	if psk, err := LoadSwarmKey(path); psk != nil || err != nil {
		t.Fatalf("no file: %v, %v; want nil, nil (an open network)", psk, err)
	}
	psk, err := NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(psk) != 32 {
		t.Fatalf("key of %d bytes", len(psk))
	}
	if err := SaveSwarmKey(path, psk); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %o, want 600", perm)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "/key/swarm/psk/1.0.0/\n/base16/\n") {
		t.Errorf("not the go-libp2p format: %q", data)
	}
	back, err := LoadSwarmKey(path)
	if err != nil || !bytes.Equal(back, psk) {
		t.Fatalf("read back %x, %v; want %x", back, err, psk)
	}

	if err := os.WriteFile(path, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSwarmKey(path); err == nil || !strings.Contains(err.Error(), "read swarm key "+path) {
		t.Errorf("junk swarm key: %v", err)
	}
}

func TestExists(t *testing.T) {
	dir := t.TempDir()
	if Exists(dir) {
		t.Error("empty dir exists")
	}
	if _, err := LoadOrCreateIdentity(filepath.Join(dir, IdentityFile)); err != nil {
		t.Fatal(err)
	}
	if !Exists(dir) {
		t.Error("dir with an identity does not exist")
	}
}
