package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/multiformats/go-multiaddr"
	"go.yaml.in/yaml/v3"

	"github.com/ferry-crm/ferry/node"
)

// configFile is the node's settings inside the data dir.
const configFile = "config.yaml"

// fileConfig is the YAML form of a node's settings.
type fileConfig struct {
	Name   string   `yaml:"name"`
	Role   string   `yaml:"role"`
	Listen []string `yaml:"listen"`
	Peers  []string `yaml:"peers,omitempty"`
	Topic  string   `yaml:"topic"`
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
	// smaller of both, "0" for none; default 1%, at most 256 MiB).
	DiskReserve string `yaml:"disk_reserve,omitempty"`
	// ConflictHook (office only) is offered every open conflict.
	ConflictHook *hookConfig `yaml:"conflict_hook,omitempty"`
}

// hookConfig is the YAML form of node.HookConfig.
type hookConfig struct {
	Command []string `yaml:"command,omitempty"`
	URL     string   `yaml:"url,omitempty"`
	Timeout string   `yaml:"timeout,omitempty"` // a Go duration, default 10s
}

func loadConfig(dir string) (*fileConfig, error) {
	data, err := os.ReadFile(filepath.Join(dir, configFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is not a Ferry data dir (no %s): run 'ferry --dir %s init' first", dir, configFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var fc fileConfig
	if err := yaml.Unmarshal(data, &fc); err != nil {
		return nil, fmt.Errorf("read config %s: %w", filepath.Join(dir, configFile), err)
	}
	return &fc, nil
}

func (fc *fileConfig) save(dir string) error {
	data, err := yaml.Marshal(fc)
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	tmp := filepath.Join(dir, configFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, configFile)); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// nodeConfig turns the file settings into a node.Config.
// clockOffsetEnv shifts the clock this process stamps operations with
// (a Go duration, e.g. -10m): for fault runs that skew nodes' clocks.
const clockOffsetEnv = "FERRY_CLOCK_OFFSET"

func (fc *fileConfig) nodeConfig(dir string) (node.Config, error) {
	cfg := node.DefaultConfig(dir)
	cfg.Name, cfg.Role, cfg.Offline, cfg.MDNS = fc.Name, fc.Role, fc.Offline, fc.MDNS
	if fc.Topic != "" {
		cfg.Topic = fc.Topic
	}
	if fc.SyncInterval != "" {
		d, err := time.ParseDuration(fc.SyncInterval)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("config sync_interval %q: want a duration like 30s", fc.SyncInterval)
		}
		cfg.SyncInterval = d
	}
	if fc.DiskReserve != "" {
		r, err := node.ParseDiskReserve(fc.DiskReserve)
		if err != nil {
			return cfg, fmt.Errorf("config disk_reserve: %w", err)
		}
		cfg.DiskReserve = &r
	}
	if h := fc.ConflictHook; h != nil {
		cfg.ConflictHook = &node.HookConfig{Command: h.Command, URL: h.URL}
		if h.Timeout != "" {
			d, err := time.ParseDuration(h.Timeout)
			if err != nil || d <= 0 {
				return cfg, fmt.Errorf("config conflict_hook.timeout %q: want a duration like 5s", h.Timeout)
			}
			cfg.ConflictHook.Timeout = d
		}
	}
	if off := os.Getenv(clockOffsetEnv); off != "" {
		d, err := time.ParseDuration(off)
		if err != nil {
			return cfg, fmt.Errorf("%s %q: want a duration like -10m", clockOffsetEnv, off)
		}
		cfg.Store.Now = func() time.Time { return time.Now().Add(d) }
	}
	cfg.Founder = fc.Founder
	psk, err := node.LoadSwarmKey(filepath.Join(dir, node.SwarmKeyFile))
	if err != nil {
		return cfg, err
	}
	cfg.SwarmKey = psk
	if cfg.ListenAddrs, err = parseAddrs(fc.Listen, false); err != nil {
		return cfg, fmt.Errorf("config listen: %w", err)
	}
	if cfg.Peers, err = parseAddrs(fc.Peers, true); err != nil {
		return cfg, fmt.Errorf("config peers: %w", err)
	}
	return cfg, nil
}

// parseAddrs parses multiaddrs; peer addresses must end in /p2p/<id>.
func parseAddrs(in []string, needPeer bool) ([]multiaddr.Multiaddr, error) {
	out := make([]multiaddr.Multiaddr, 0, len(in))
	for _, s := range in {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", s, err)
		}
		if needPeer {
			if _, err := a.ValueForProtocol(multiaddr.P_P2P); err != nil {
				return nil, fmt.Errorf("peer address %q: must end in /p2p/<peer id>", s)
			}
		}
		out = append(out, a)
	}
	return out, nil
}
