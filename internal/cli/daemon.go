package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/version"
)

// daemonStatus is what `banger daemon status --json` prints.
type daemonStatus struct {
	Running   bool          `json:"running"`
	Socket    string        `json:"socket"`
	Daemon    *version.Info `json:"daemon,omitempty"` // the running daemon's build
	CLI       version.Info  `json:"cli"`              // this CLI's build
	SameBuild bool          `json:"same_build"`
	PID       int           `json:"pid,omitempty"`
	StateDir  string        `json:"state_dir,omitempty"`
}

func (a *app) daemonCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "daemon",
		Short: "Inspect or stop the banger daemon",
		Long: `bangerd is started automatically by the first command that needs it and restarted when it is
a different build than the CLI. Stopping it leaves VMs running; the next command starts it
again and it finds them.`,
		Example: `  banger daemon status
  banger daemon stop`,
	}
	var statusJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether the daemon runs, its version and socket",
		Long: `Show whether the daemon runs, its version (the same one-line form as banger --version) and
whether it is the same build as this CLI, its pid, socket and state directory. It never starts
the daemon.`,
		Example: "  banger daemon status\n  banger daemon status --json | jq .running",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			l, err := paths.FromEnv()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), 5*time.Second)
			defer cancel()
			v, err := client.New(l.Socket).Version(ctx)
			if err != nil && !errors.Is(err, client.ErrNoDaemon) {
				return err
			}
			st := daemonStatus{Running: err == nil, Socket: l.Socket, CLI: version.Get()}
			if st.Running {
				d := version.Info{Version: v.Version, Commit: v.Commit, Date: v.Date}
				st.Daemon, st.PID, st.StateDir, st.SameBuild = &d, v.PID, v.StateDir, d.Same(st.CLI)
			}
			if statusJSON {
				return printJSON(a.stdout, st)
			}
			if !st.Running {
				fmt.Fprintf(a.stdout, "daemon: not running (socket %s); the next banger command starts it\n", l.Socket)
				return nil
			}
			same := "yes"
			if !st.SameBuild {
				same = "no (" + st.CLI.String() + "); the next banger command restarts it"
			}
			fmt.Fprintf(a.stdout, "daemon: running, pid %d\nversion: %s\nsame build as this CLI: %s\nsocket: %s\nstate: %s\n", v.PID, st.Daemon, same, l.Socket, v.StateDir)
			return nil
		},
	}
	status.Flags().BoolVar(&statusJSON, "json", false, "print JSON (running, socket, daemon and cli builds, same_build, pid, state_dir)")
	stop := &cobra.Command{
		Use:     "stop",
		Short:   "Stop the daemon (VMs keep running)",
		Long:    "Ask the daemon to exit. VMs keep running; the next banger command starts the daemon again, which adopts them.",
		Example: "  banger daemon stop",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			l, err := paths.FromEnv()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), 15*time.Second)
			defer cancel()
			cl := client.New(l.Socket)
			v, err := cl.Version(ctx)
			if errors.Is(err, client.ErrNoDaemon) {
				fmt.Fprintln(a.stdout, "daemon: not running")
				return nil
			}
			if err != nil {
				return err
			}
			if err := cl.Shutdown(ctx); err != nil {
				return err
			}
			if err := cl.WaitGone(ctx, v.PID); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "daemon: stopped (pid %d)\n", v.PID)
			return nil
		},
	}
	c.AddCommand(status, stop)
	return c
}

func (a *app) systemCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "system",
		Short:   "Host-level state banger manages",
		Long:    "Commands for what banger changes on the host as a whole, beyond single VMs.",
		Example: `  banger system teardown`,
	}
	teardown := &cobra.Command{
		Use:   "teardown",
		Short: "Remove banger's bridge, NAT rules and DNS routing",
		Long: `Remove everything banger added to the host's network: the nftables table "banger", IP
forwarding if banger turned it on, the systemd-resolved routing of .vm, the DNS listeners and
the bridge. It is refused while VMs run. Starting a VM later sets it all up again.`,
		Example: "  banger vm stop dev && banger system teardown",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			if err := cl.TeardownNetwork(c.Context()); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "removed banger's bridge, NAT rules and DNS routing")
			return nil
		},
	}
	c.AddCommand(teardown)
	return c
}
