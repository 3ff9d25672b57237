package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/gui"
)

// webPageSettings is the gui key of config.yaml, checked: the address to
// listen on ("" when off) and whether config.yaml names it.
type webPageSettings struct {
	listen   string
	explicit bool
}

// readWebPage checks the gui key of config.yaml: an address that is not
// loopback is refused, before the node starts.
func readWebPage(s *datadir.Settings) (webPageSettings, error) {
	switch {
	case s.GUI != nil && s.GUI.Off:
		return webPageSettings{}, nil
	case s.GUI == nil || s.GUI.Listen == "":
		return webPageSettings{listen: gui.DefaultListen}, nil
	}
	addr, err := gui.CheckListen(s.GUI.Listen)
	if err != nil {
		return webPageSettings{}, fmt.Errorf("config.yaml: %w", err)
	}
	return webPageSettings{listen: addr, explicit: true}, nil
}

// startWebPage serves the node's web page until ctx is done and returns
// its address ("" when none); wait waits for it to stop. The default address taken by another program (another
// node, say) is a warning; an address config.yaml names is an error.
func startWebPage(ctx context.Context, dir string, ws webPageSettings, n *node.Node, log *slog.Logger) (addr string, wait func(), err error) {
	gui.RemoveAddr(dir) // a crashed node's, or a page now off
	if ws.listen == "" {
		return "", func() {}, nil
	}
	s, err := gui.Listen(gui.Config{Listen: ws.listen, Dir: dir, API: n.Handler(), Watch: n.Watch, Logger: log})
	if err != nil {
		if !ws.explicit && errors.Is(err, syscall.EADDRINUSE) {
			log.Warn("web page not served: its default address is in use; set gui: {listen: 127.0.0.1:PORT} in config.yaml", "addr", ws.listen)
			return "", func() {}, nil
		}
		return "", nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(ctx); err != nil {
			log.Error("web page stopped", "err", err)
		}
	}()
	return s.Addr(), func() { <-done }, nil
}
