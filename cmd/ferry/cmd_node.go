package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
)

func newNodeCmd(g *globals) *cobra.Command {
	var logLevel string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run the node until SIGINT or SIGTERM",
		Long: `Run the node: open the store, listen, keep the configured peers connected
(re-dialing with backoff), replicate, serve the local API on
<dir>/api.sock and the web page on loopback (config.yaml's gui key; 'ferry
gui' prints its login link). SIGINT or SIGTERM shuts it down cleanly.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level %q: want debug, info, warn or error", logLevel)
			}
			fc, err := datadir.ReadSettings(g.dir)
			if err != nil {
				return err
			}
			cfg, err := nodeConfig(g.dir, fc)
			if err != nil {
				return err
			}
			web, err := readWebPage(fc)
			if err != nil {
				return err
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			webAddr, waitWeb, err := startWebPage(ctx, g.dir, web, n, cfg.Logger)
			if err != nil {
				stop()
				_ = n.Close()
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ferry node %s (%s) running\n", n.ID(), cfg.Role)
			for _, a := range n.Addrs() {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", a)
			}
			if webAddr != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "  web page: http://%s/ (log in with 'ferry gui')\n", webAddr)
			}
			serveErr := n.Serve(ctx)
			if serveErr != nil && ctx.Err() == nil {
				cfg.Logger.Error("API stopped", "err", serveErr)
			}
			stop()
			waitWeb()
			cfg.Logger.Info("shutting down")
			if err := n.Close(); err != nil {
				return fmt.Errorf("shut down: %w", err)
			}
			if ctx.Err() == nil && serveErr != nil {
				return serveErr
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
