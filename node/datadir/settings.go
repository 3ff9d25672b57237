package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// SettingsFile is the node's settings inside the data dir (Settings, in
// YAML).
const SettingsFile = "config.yaml"

// Settings is the YAML form of a node's settings, the content of
// config.yaml. Values are kept as written (durations, sizes and addresses
// as strings); turning them into a node's configuration, and checking
// them, is the reader's job.
type Settings struct {
	Name string `yaml:"name"`
	Role string `yaml:"role"`
	// Listen: the multiaddrs the node listens on.
	Listen []string `yaml:"listen"`
	// Peers: multiaddrs of the peers to dial, each ending in /p2p/<id>.
	Peers []string `yaml:"peers,omitempty"`
	Topic string   `yaml:"topic"`
	// Founder is the peer id of the office that created the network:
	// operations are signed and only members' count (docs/security.md).
	// Empty: an open network (data dirs made before enrolment existed).
	Founder string `yaml:"founder,omitempty"`
	Offline bool   `yaml:"offline,omitempty"`
	// SyncInterval is how often heads are exchanged with every peer (a Go
	// duration, default 30s).
	SyncInterval string `yaml:"sync_interval,omitempty"`
	// MDNS finds nodes of the same topic on the LAN (default off: any
	// node on the LAN with the same topic would sync with this one).
	MDNS bool `yaml:"mdns,omitempty"`
	// DiskReserve is the free space kept on the data dir's disk: below it
	// local writes are refused ("256MiB", "1%", "1%,256MiB" for the
	// smaller of both, "0" for none; default 1%, at most 256 MiB). See
	// disk.ParseReserve.
	DiskReserve string `yaml:"disk_reserve,omitempty"`
	// MemoryLimit is the Go soft memory limit of the node's process
	// ("512MiB"; "0" or "off" for none; default 256 MiB; GOMEMLIMIT in the
	// environment wins). See node.ParseMemoryLimit.
	MemoryLimit string `yaml:"memory_limit,omitempty"`
	// ConflictHook (office only) is offered every open conflict.
	ConflictHook *Hook `yaml:"conflict_hook,omitempty"`
	// Workflows (office only) act on merged changes (docs/workflows.md).
	Workflows []Workflow `yaml:"workflows,omitempty"`
	// Channels (laptop only) narrows the channels taken offline, within
	// the grants (ferry subscribe, ferry unsubscribe); absent: every
	// channel granted; an empty list takes none.
	Channels *[]string `yaml:"channels,omitempty"`
	// AllowDuplicates: puts and imports write likely duplicates instead of
	// refusing them (docs/duplicates.md).
	AllowDuplicates bool `yaml:"allow_duplicates,omitempty"`
	// HistoryKeep is how many superseded values per field each record
	// keeps across a compaction (default 10; 0 keeps none).
	HistoryKeep *int `yaml:"history_keep,omitempty"`
	// CompactEvery (office only): start a new epoch once the current one
	// is older than this (a Go duration like 168h; default never).
	CompactEvery string `yaml:"compact_every,omitempty"`
	// CompactHistoryRatio (office only): start a new epoch once the
	// history holds this many writes per visible one (default never).
	CompactHistoryRatio float64 `yaml:"compact_history_ratio,omitempty"`
	// GUI is the web page the node serves on loopback (default on, at
	// 127.0.0.1:8384; `gui: off` for none). See GUI and docs/gui.md.
	GUI *GUI `yaml:"gui,omitempty"`
}

// Hook is the YAML form of the conflict hook's settings (node.HookConfig):
// a command or a URL.
type Hook struct {
	Command []string `yaml:"command,omitempty"`
	URL     string   `yaml:"url,omitempty"`
	Timeout string   `yaml:"timeout,omitempty"` // a Go duration, default 10s
}

// Workflow is the YAML form of one workflow rule (node/workflow.Rule).
type Workflow struct {
	Name       string   `yaml:"name"`
	Collection string   `yaml:"collection"`
	When       []string `yaml:"when,omitempty"`
	Events     []string `yaml:"events,omitempty"`
	Command    []string `yaml:"command,omitempty"`
	URL        string   `yaml:"url,omitempty"`
	Timeout    string   `yaml:"timeout,omitempty"` // a Go duration, default 30s
	Office     string   `yaml:"office,omitempty"`
	Attempts   int      `yaml:"attempts,omitempty"`
}

// ReadSettings reads dir's config.yaml. A dir without one is not a data
// dir: the error says to run ferry init.
func ReadSettings(dir string) (*Settings, error) {
	data, err := os.ReadFile(filepath.Join(dir, SettingsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is not a Ferry data dir (no %s): run 'ferry --dir %s init' first", dir, SettingsFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var s Settings
	if err := yaml.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read config %s: %w", filepath.Join(dir, SettingsFile), err)
	}
	return &s, nil
}

// Write replaces dir's config.yaml with s (mode 0600), through a temporary
// file synced and renamed into place.
func (s *Settings) Write(dir string) error {
	data, err := yaml.Marshal(s)
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	// The new content is on disk before it replaces the old one, and the
	// rename is on disk before Write returns: a power loss leaves the old
	// file or the new one, never an empty one.
	tmp := filepath.Join(dir, SettingsFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, SettingsFile)); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	syncDir(dir)
	return nil
}
