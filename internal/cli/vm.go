package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/client"
)

func (a *app) vmCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "vm",
		Short: "Create, run commands in, list and delete VMs",
		Long:  "Commands that manage VMs. `banger vm run` is the one-command way in.",
		Example: `  banger vm run --rm -- make test
  banger vm list
  banger vm delete brave-otter`,
	}
	c.AddCommand(a.vmRunCmd(), a.vmCreateCmd(), a.vmStartCmd(), a.vmStopCmd(), a.vmRestartCmd(), a.vmKillCmd(),
		a.vmExecCmd(), a.vmShowCmd(), a.vmLogsCmd(), a.vmListCmd(), a.vmSetCmd(), a.vmDeleteCmd(), a.vmPruneCmd(), a.vmWatchCmd(),
		a.vmSSHCmd(), a.vmPortsCmd(), a.vmForwardCmd())
	return c
}

// sizeFlags are the resource flags shared by the commands that create VMs.
type sizeFlags struct {
	vcpu   int
	memory string
	disk   string
}

func (f *sizeFlags) register(c *cobra.Command) {
	c.Flags().IntVar(&f.vcpu, "vcpu", 0, "virtual CPUs (default: config, else host CPUs/4, at least 1)")
	c.Flags().StringVar(&f.memory, "memory", "", "memory, e.g. 2G or 512M (default: config, else host RAM/8 up to 8GiB)")
	c.Flags().StringVar(&f.disk, "disk-size", "", "size of the VM's writable disk, e.g. 8G (default: config, else 8GiB)")
}

// apply puts the flags the user set into req; unset flags stay nil for the daemon to resolve.
func (f *sizeFlags) apply(c *cobra.Command, req *api.CreateVMRequest) error {
	if c.Flags().Changed("vcpu") {
		v := f.vcpu
		req.VCPU = &v
	}
	if c.Flags().Changed("memory") {
		n, err := bytesize.Parse(f.memory)
		if err != nil {
			return usagef("--memory: %v", err)
		}
		if n%bytesize.MiB != 0 {
			return usagef("--memory %s is not a whole number of MiB; use e.g. %dM", f.memory, n/bytesize.MiB+1)
		}
		mib := int(n / bytesize.MiB)
		req.MemoryMiB = &mib
	}
	if c.Flags().Changed("disk-size") {
		n, err := bytesize.Parse(f.disk)
		if err != nil {
			return usagef("--disk-size: %v", err)
		}
		req.DiskBytes = &n
	}
	return nil
}

func (a *app) vmRunCmd() *cobra.Command {
	var (
		rm     bool
		noNAT  bool
		name   string
		image  string
		kernel string
		sizes  sizeFlags
	)
	c := &cobra.Command{
		Use:   "run [flags] [-- COMMAND [ARG...]]",
		Short: "Boot a fresh VM and run a command, or a shell, in it",
		Long: `Boot a fresh VM and run COMMAND in it. The command's stdout and stderr stream back as they
are written (stdout to stdout; banger's own messages go to stderr) and banger exits with the
command's status. With --rm the VM is deleted afterwards, whatever happened; without it the
VM keeps running.

Without COMMAND it opens an interactive ssh session instead; leaving it leaves the VM running
(or deletes it, with --rm).

The kernel and the default image are fetched and built on first use, which takes a minute;
later runs only boot. Arguments after -- reach the guest exactly as given (no re-quoting).`,
		Example: `  banger vm run
  banger vm run --rm -- uname -a
  banger vm run --rm -- sh -c 'echo hello from $(hostname); exit 42'; echo $?
  banger vm run --rm --vcpu 2 --memory 2G -- cat /etc/os-release > os-release.txt`,
		RunE: func(c *cobra.Command, args []string) error {
			dash := c.ArgsLenAtDash()
			var pathArgs, command []string
			if dash >= 0 {
				pathArgs, command = args[:dash], args[dash:]
			} else {
				pathArgs = args
			}
			if len(pathArgs) > 0 {
				return usagef("workspace mode (banger vm run %s) is not available yet; run a command with `banger vm run --rm -- COMMAND`", pathArgs[0])
			}

			req := api.CreateVMRequest{Name: name, Image: image, Kernel: kernel, AutoRemove: rm, NoNAT: noNAT, CancelOnDisconnect: true}
			if err := sizes.apply(c, &req); err != nil {
				return err
			}
			return a.run(c.Context(), req, command, rm)
		},
	}
	c.Flags().BoolVar(&rm, "rm", false, "delete the VM when the command ends (also on failure or Ctrl-C)")
	c.Flags().BoolVar(&noNAT, "no-nat", false, "no outbound traffic: the VM reaches the host and other VMs only")
	c.Flags().StringVar(&name, "name", "", "VM name (a DNS label; default: generated, e.g. brave-otter)")
	c.Flags().StringVar(&image, "image", "", "image to boot (default: default_image_name from config, else debian-bookworm)")
	c.Flags().StringVar(&kernel, "kernel", "", "kernel to boot (default: the image's kernel, else default_kernel from config, else debian-6.1)")
	sizes.register(c)
	return c
}

// run is `vm run … -- COMMAND`: create, exec, and delete when asked.
func (a *app) run(parent context.Context, req api.CreateVMRequest, command []string, rm bool) error {
	if parent == nil {
		parent = context.Background()
	}
	// Ctrl-C while the VM is being made cancels the create (the daemon undoes it).
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	cl, err := a.connect(ctx)
	if err != nil {
		stop()
		return err
	}
	r := newRenderer(a.stderr)
	start := time.Now()
	vm, err := cl.CreateVM(ctx, req, r.Event)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		r.Finish("")
		if interrupted {
			fmt.Fprintln(a.stderr, "banger: interrupted; the VM being created was removed")
			return &exitError{130}
		}
		return err
	}
	r.Finish(fmt.Sprintf("vm %s ready in %.1fs", vm.Name, time.Since(start).Seconds()))

	var (
		code    int
		execErr error
	)
	if len(command) == 0 {
		// No command: an interactive shell over ssh.
		code, execErr = a.ssh(parent, cl, vm.Name, nil)
	} else {
		code, execErr = a.exec(cl, vm.Name, command)
	}
	if rm {
		// The delete must happen even if the user presses Ctrl-C again now.
		hold := make(chan os.Signal, 1)
		signal.Notify(hold, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(hold)
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cl.DeleteVM(dctx, vm.ID); err != nil {
			fmt.Fprintf(a.stderr, "banger: could not delete vm %s: %v\nhint: delete it with `banger vm delete %s`\n", vm.Name, err, vm.Name)
			if execErr == nil && code == 0 {
				code = ExitError
			}
		}
	} else {
		fmt.Fprintf(a.stderr, "banger: vm %s keeps running; stop it with `banger vm stop %s`, delete it with `banger vm delete %s`\n", vm.Name, vm.Name, vm.Name)
	}
	if execErr != nil {
		return execErr
	}
	if code != 0 {
		return &exitError{code}
	}
	return nil
}

func (a *app) vmListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Long:    "List every VM with its state, image, size and age.",
		Example: `  banger vm list
  banger ps --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			vms, err := cl.ListVMs(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, vms)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tIP\tIMAGE\tVCPU\tMEM\tDISK\tCREATED")
			for _, vm := range vms {
				ip := vm.IP
				if ip == "" {
					ip = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", vm.Name, vm.State, ip, vm.Image, vm.VCPU,
					bytesize.Format(int64(vm.MemoryMiB)*bytesize.MiB), bytesize.Format(vm.DiskBytes), ago(vm.CreatedAt))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) vmDeleteCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "delete VM...",
		Aliases: []string{"rm"},
		Short:   "Delete VMs with their disks",
		Long:    "Stop each VM if it runs and delete it with its disk and record. Each VM is named by its name, id or a unique prefix of either.",
		Example: `  banger vm delete brave-otter
  banger vm rm dev test`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			return a.eachVM(c.Context(), refs, func(cl *client.Client, ref string) (string, error) {
				if err := cl.DeleteVM(c.Context(), ref); err != nil {
					return "", err
				}
				return "deleted " + ref, nil
			})
		},
	}
	return c
}

// ago renders a creation time for tables.
func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
