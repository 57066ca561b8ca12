// Command bangerd is banger's daemon. The banger CLI starts it on demand; it can also run as
// a service. It serves the API on the socket named by BANGER_SOCKET or the XDG default.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/banger-dev/banger/internal/daemon"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/userns"
	"github.com/banger-dev/banger/internal/version"
)

func main() {
	// Image builds, OCI pulls and module disks without root re-execute bangerd inside a
	// user namespace: the hidden entry point runs there and never returns.
	userns.Init()
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "--version", "version":
			fmt.Println("bangerd " + version.Get().String())
			return
		default:
			fmt.Fprintf(os.Stderr, "usage: bangerd [--version]\n\nbangerd is started by the banger CLI; it takes its settings from the environment (BANGER_SOCKET, XDG_*) and config.toml.\n")
			os.Exit(2)
		}
	}
	level := slog.LevelInfo
	if os.Getenv("BANGER_DEBUG") != "" {
		level = slog.LevelDebug
	}
	lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	layout, err := paths.FromEnv()
	if err != nil {
		lg.Error("bangerd: " + err.Error())
		os.Exit(1)
	}
	self, err := os.Executable()
	if err != nil {
		lg.Error("bangerd: find own executable: " + err.Error())
		os.Exit(1)
	}
	agentPath, err := paths.Agent(self, os.Getenv)
	if err != nil {
		lg.Error("bangerd: " + err.Error() + "; reinstall banger (make install), or set " + paths.EnvAgent + " to it")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = daemon.Run(ctx, daemon.Options{
		Layout:    layout,
		AgentPath: agentPath,
		CLIPath:   findCLI(),
		TestHooks: os.Getenv("BANGER_TEST_HOOKS") == "1",
		Log:       lg,
	})
	if err != nil {
		lg.Error("bangerd: " + err.Error())
		os.Exit(1)
	}
}

// findCLI locates the banger CLI installed beside this binary ($PREFIX/bin, or a build tree's
// bin/), which banger's ssh_config runs as its ProxyCommand; "banger" from PATH otherwise.
func findCLI() string {
	if self, err := os.Executable(); err == nil {
		self, _ = filepath.EvalSymlinks(self)
		c := filepath.Join(filepath.Dir(self), "banger")
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return c
		}
	}
	return "banger"
}
