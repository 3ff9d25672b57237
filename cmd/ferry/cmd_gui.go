package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/gui"
)

func newGUICmd(g *globals) *cobra.Command {
	var open, noOpen, asJSON bool
	cmd := &cobra.Command{
		Use:   "gui [--open | --no-open] [--json]",
		Short: "Print the login link of the running node's web page (and open it)",
		Long: `Print the login link of the web page the running node serves on loopback
(http://127.0.0.1:8384/login?token=... by default; config.yaml's gui key).
The link logs the browser in: keep it to yourself. In a terminal of a
desktop session the link is also opened in the browser (--no-open: never;
--open: always try). See docs/gui.md.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if open && noOpen {
				return usagef("gui: --open and --no-open exclude each other")
			}
			if _, err := api.Dial(g.dir); err != nil {
				return fmt.Errorf("no node is running in %s: start it with 'ferry node' (the node serves the web page)", g.dir)
			}
			link, err := gui.ReadLogin(g.dir)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("the node running in %s serves no web page: gui is off in its config.yaml, or the address was in use (see the node's log)", g.dir)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, map[string]string{"url": strings.SplitN(link, "/login?", 2)[0] + "/", "login": link}); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(out, link)
			}
			if noOpen || !(open || canOpenBrowser(out)) {
				return nil
			}
			// The browser gets a one-time code, not the token: its command
			// line is readable by every local user.
			once, err := gui.NewLoginCode(g.dir)
			if err != nil {
				return err
			}
			if err := openBrowser(once); err != nil {
				if open {
					return fmt.Errorf("open the browser: %w (open the link above by hand)", err)
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "could not open a browser:", err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&open, "open", false, "open the link in the browser")
	cmd.Flags().BoolVar(&noOpen, "no-open", false, "do not open a browser")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"url", "login"} as JSON`)
	return cmd
}

// canOpenBrowser: the command runs in a terminal of a desktop session
// (never in a script, CI or over ssh without a display).
func canOpenBrowser(out any) bool {
	f, ok := out.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	switch runtime.GOOS {
	case "darwin", "windows":
		return true
	}
	return os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != ""
}

// openBrowser opens url in the desktop's browser, without waiting for it.
func openBrowser(url string) error {
	var c *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		c = exec.Command("open", url)
	case "windows":
		c = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		c = exec.Command("xdg-open", url)
	}
	if err := c.Start(); err != nil {
		return err
	}
	go func() { _ = c.Wait() }()
	return nil
}
