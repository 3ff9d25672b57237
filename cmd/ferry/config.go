package main

import (
	"fmt"
	"os"
	"time"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
)

// clockOffsetEnv shifts the clock this process stamps operations with
// (a Go duration, e.g. -10m): for fault runs that skew nodes' clocks.
const clockOffsetEnv = "FERRY_CLOCK_OFFSET"

// nodeConfig turns a data dir's settings into a node.Config, with the
// clock offset of the environment.
func nodeConfig(dir string, s *datadir.Settings) (node.Config, error) {
	cfg, err := node.ConfigFromSettings(dir, s)
	if err != nil {
		return cfg, err
	}
	if off := os.Getenv(clockOffsetEnv); off != "" {
		d, err := time.ParseDuration(off)
		if err != nil {
			return cfg, fmt.Errorf("%s %q: want a duration like -10m", clockOffsetEnv, off)
		}
		cfg.Store.Now = func() time.Time { return time.Now().Add(d) }
	}
	return cfg, nil
}
