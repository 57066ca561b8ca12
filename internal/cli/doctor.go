package cli

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/doctor"
	"github.com/banger-dev/banger/internal/paths"
)

// useColor says whether output to w may be coloured: only on a terminal, never with NO_COLOR
// set (https://no-color.org) or TERM=dumb.
func useColor(w any) bool {
	return isTerminal(w) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
}

func (a *app) doctorCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "doctor [--json]",
		Short: "Check the host, the configuration and the daemon",
		Long: `Check everything banger depends on and print one line per check: PASS, WARN or FAIL, what was
found, and for anything that is not a PASS the exact command or setting that fixes it. It checks
the architecture, who banger runs as (root: one process; any other user: the groups banger and
kvm, banger's root helper on its socket, subordinate ids and user namespaces for image builds),
KVM (hardware virtualization or only software emulation), the VMM banger would
pick and why, Firecracker and its jailer, QEMU, the host tools (mkfs.ext4, mmdebstrap or
debootstrap, ssh, git, depmod), tun, bridging and nftables, free space in the state directory,
the daemon, the configuration with the effective VM size and where each value comes from, the
default image and kernel, the ssh_config include, DNS for .vm names and the host settings that
cost Firecracker boot latency on 6.1+ kernels.

doctor never changes anything and never starts the daemon; as a user other than root it asks
the root helper hello (which changes nothing; systemd may start the helper for it). It exits 1
when any check fails, 0 otherwise (warnings included).`,
		Example: `  banger doctor
  banger doctor --json | jq -r '.checks[] | select(.status != "PASS") | .check + ": " + .fix'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			l, err := paths.FromEnv()
			if err != nil {
				return err
			}
			ctx := c.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			results := doctor.Check(doctor.Gather(ctx, doctor.Env{Layout: l, UID: os.Getuid()}))
			if asJSON {
				err = doctor.WriteJSON(a.stdout, results)
			} else {
				err = doctor.WriteText(a.stdout, results, useColor(a.stdout))
			}
			if err != nil {
				return err
			}
			if doctor.Failed(results) {
				return &exitError{ExitError}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the checks as JSON (ok, summary, checks: check, status, detail, fix)")
	return c
}
