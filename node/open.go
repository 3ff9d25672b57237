package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/disk"
	"github.com/ferry-crm/ferry/node/enrol"
	"github.com/ferry-crm/ferry/schema"
)

// Embedding: a Go program opens a data dir made by `ferry init` (or by
// Init) with Open, and uses the returned node as the daemon does.

// OpenOptions choose how Open starts the node of a data dir.
type OpenOptions struct {
	// Network joins the network as `ferry node` does; false opens only the
	// store (records, conflicts, history: everything local).
	Network bool
	// Logger receives the node's logs (default: warnings and errors to
	// stderr).
	Logger *slog.Logger
}

// Open starts the node of data dir dir with the settings `ferry init`
// wrote (config.yaml). Close it when done. Only one process opens a data
// dir at a time: while `ferry node` runs there, talk to it with api.Dial.
func Open(ctx context.Context, dir string, opts OpenOptions) (*Node, error) {
	cfg, err := ConfigFromDir(dir)
	if err != nil {
		return nil, err
	}
	cfg.Network = opts.Network
	cfg.Logger = opts.Logger
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return Start(ctx, cfg)
}

// ConfigFromDir reads a data dir's settings (config.yaml and swarm key)
// into a Config.
func ConfigFromDir(dir string) (Config, error) {
	s, err := datadir.ReadSettings(dir)
	if err != nil {
		return Config{}, err
	}
	return ConfigFromSettings(dir, s)
}

// ConfigFromSettings turns a data dir's settings into a Config, checking
// every value; an error names the setting.
func ConfigFromSettings(dir string, s *datadir.Settings) (Config, error) {
	cfg := DefaultConfig(dir)
	cfg.Name, cfg.Role, cfg.Offline, cfg.MDNS = s.Name, s.Role, s.Offline, s.MDNS
	if s.Topic != "" {
		cfg.Topic = s.Topic
	}
	if s.Channels != nil {
		for _, c := range *s.Channels {
			if err := schema.CheckChannelName(c); err != nil {
				return cfg, fmt.Errorf("config channels: %w", err)
			}
		}
		cfg.Channels = append([]string{}, *s.Channels...)
	}
	if s.SyncInterval != "" {
		d, err := time.ParseDuration(s.SyncInterval)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("config sync_interval %q: want a duration like 30s", s.SyncInterval)
		}
		cfg.SyncInterval = d
	}
	if s.DiskReserve != "" {
		r, err := disk.ParseReserve(s.DiskReserve)
		if err != nil {
			return cfg, fmt.Errorf("config disk_reserve: %w", err)
		}
		cfg.DiskReserve = &r
	}
	if s.MemoryLimit != "" {
		l, err := ParseMemoryLimit(s.MemoryLimit)
		if err != nil {
			return cfg, fmt.Errorf("config memory_limit %w", err)
		}
		cfg.MemoryLimit = l
	}
	if h := s.ConflictHook; h != nil {
		cfg.ConflictHook = &HookConfig{Command: h.Command, URL: h.URL}
		if h.Timeout != "" {
			d, err := time.ParseDuration(h.Timeout)
			if err != nil || d <= 0 {
				return cfg, fmt.Errorf("config conflict_hook.timeout %q: want a duration like 5s", h.Timeout)
			}
			cfg.ConflictHook.Timeout = d
		}
	}
	if len(s.Workflows) > 0 {
		rules, err := workflowsFromSettings(s.Workflows)
		if err != nil {
			return cfg, err
		}
		cfg.Workflows = rules
	}
	cfg.AllowDuplicates = s.AllowDuplicates
	if s.HistoryKeep != nil {
		if *s.HistoryKeep < 0 || *s.HistoryKeep > 1000 {
			return cfg, fmt.Errorf("config history_keep %d: want 0 to 1000", *s.HistoryKeep)
		}
		cfg.Store.HistoryKeep = *s.HistoryKeep
	}
	if s.CompactEvery != "" {
		d, err := time.ParseDuration(s.CompactEvery)
		if err != nil || d < time.Minute {
			return cfg, fmt.Errorf("config compact_every %q: want a duration of a minute or more, like 168h", s.CompactEvery)
		}
		cfg.CompactEvery = d
	}
	if r := s.CompactHistoryRatio; r != 0 {
		if r < 1.5 || r > 1e6 {
			return cfg, fmt.Errorf("config compact_history_ratio %g: want a number of writes per visible write, 1.5 or more", r)
		}
		cfg.CompactRatio = r
	}
	if (cfg.CompactEvery > 0 || cfg.CompactRatio > 0) && s.Role != RoleOffice {
		return cfg, fmt.Errorf("config compact_every and compact_history_ratio: only an office node compacts (this node is a %s)", s.Role)
	}
	cfg.Founder = s.Founder
	psk, err := datadir.LoadSwarmKey(filepath.Join(dir, datadir.SwarmKeyFile))
	if err != nil {
		return cfg, err
	}
	cfg.SwarmKey = psk
	if cfg.ListenAddrs, err = ParseAddrs(s.Listen, false); err != nil {
		return cfg, fmt.Errorf("config listen: %w", err)
	}
	if cfg.Peers, err = ParseAddrs(s.Peers, true); err != nil {
		return cfg, fmt.Errorf("config peers: %w", err)
	}
	return cfg, nil
}

// ParseAddrs parses multiaddrs; peer addresses must end in /p2p/<id>.
func ParseAddrs(in []string, needPeer bool) ([]multiaddr.Multiaddr, error) {
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

// InitOptions say what kind of data dir Init makes.
type InitOptions struct {
	// Name is shown to other nodes (default: the data dir's base name).
	Name string
	// Office founds a new network with this node as its office: a new
	// swarm key, this node its founder.
	Office bool
	// Join, if set, prepares to join the network of the invitation: its
	// swarm key, founder, topic, role and the office's addresses (redeem it
	// with Node.Join once started).
	Join *enrol.Token
	// Listen and Peers are multiaddrs (default listen: every interface, a
	// random TCP port, and QUIC in an open network).
	Listen, Peers []string
	// Topic of an open network or an office (default "ferry").
	Topic string
}

// Init makes dir a data dir (mode 0700): an identity key, config.yaml and,
// for an office or a joining node, the swarm key. It refuses a dir that is
// already initialised. Without Office or Join the node is in an open
// network (nothing signed): only for trying Ferry out.
func Init(dir string, opts InitOptions) (*datadir.Settings, peer.ID, error) {
	if opts.Office && opts.Join != nil {
		return nil, "", errors.New("init: found a network (office) or join one, not both")
	}
	if _, err := ParseAddrs(opts.Listen, false); err != nil {
		return nil, "", fmt.Errorf("init: listen: %w", err)
	}
	if _, err := ParseAddrs(opts.Peers, true); err != nil {
		return nil, "", fmt.Errorf("init: peer: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, datadir.SettingsFile)); err == nil {
		return nil, "", fmt.Errorf("%s is already initialised", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create data dir: %w", err)
	}
	key, err := datadir.LoadOrCreateIdentity(filepath.Join(dir, datadir.IdentityFile))
	if err != nil {
		return nil, "", err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, "", err
	}
	s := &datadir.Settings{Name: opts.Name, Role: RoleLaptop, Listen: opts.Listen, Peers: opts.Peers, Topic: opts.Topic}
	if s.Name == "" {
		s.Name = filepath.Base(dir)
	}
	if s.Topic == "" {
		s.Topic = "ferry"
	}
	if len(s.Listen) == 0 {
		s.Listen = []string{"/ip4/0.0.0.0/tcp/0"}
		if !opts.Office && opts.Join == nil {
			s.Listen = append(s.Listen, "/ip4/0.0.0.0/udp/0/quic-v1")
		}
	}
	swarmKey := filepath.Join(dir, datadir.SwarmKeyFile)
	switch {
	case opts.Office:
		psk, err := datadir.NewSwarmKey()
		if err != nil {
			return nil, "", err
		}
		if err := datadir.SaveSwarmKey(swarmKey, psk); err != nil {
			return nil, "", err
		}
		s.Role, s.Founder = RoleOffice, id.String()
	case opts.Join != nil:
		t := opts.Join
		psk, err := t.PSK()
		if err != nil {
			return nil, "", err
		}
		if err := datadir.SaveSwarmKey(swarmKey, psk); err != nil {
			return nil, "", err
		}
		s.Founder, s.Topic, s.Role = t.Founder, t.Topic, t.Role
		s.Peers = append(append([]string{}, t.Addrs...), opts.Peers...)
	}
	if err := s.Write(dir); err != nil {
		return nil, "", err
	}
	return s, id, nil
}
