package cli

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/client"
)

func (a *app) vmCreateCmd() *cobra.Command {
	var (
		name, image, kernel string
		noStart, noNAT      bool
		sizes               sizeFlags
		start               startFlags
	)
	c := &cobra.Command{
		Use:   "create [flags]",
		Short: "Create a VM and boot it",
		Long: `Create a VM — its record and its own disk — and boot it until its agent answers. The spec line
says what size it got and where each value came from. The VM's name goes to stdout, so scripts
can capture it. With --no-start the VM is only created (state created); start it with
` + "`banger vm start`" + `. If anything fails, nothing is left behind.`,
		Example: `  banger vm create --name dev --vcpu 2 --memory 4G
  vm=$(banger vm create) && banger vm exec "$vm" -- uname -a
  banger vm create --name later --no-start`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			req := api.CreateVMRequest{Name: name, Image: image, Kernel: kernel, NoStart: noStart, NoNAT: noNAT, CancelOnDisconnect: true}
			if err := sizes.apply(c, &req); err != nil {
				return err
			}
			if err := start.apply(c, &req); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cl, err := a.connect(ctx)
			if err != nil {
				return err
			}
			vm, err := a.createVM(ctx, cl, req, func(vm api.VM, took time.Duration) string {
				if noStart {
					return fmt.Sprintf("vm %s created (not started)", vm.Name)
				}
				return fmt.Sprintf("vm %s ready in %.1fs", vm.Name, took.Seconds())
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, vm.Name)
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "VM name (a DNS label; default: generated, e.g. brave-otter)")
	c.Flags().StringVar(&image, "image", "", "image to boot (default: default_image_name from config, else debian-bookworm)")
	c.Flags().StringVar(&kernel, "kernel", "", "kernel to boot (default: the image's kernel, else default_kernel from config, else debian-6.1)")
	c.Flags().BoolVar(&noStart, "no-start", false, "only create the VM; do not boot it")
	c.Flags().BoolVar(&noNAT, "no-nat", false, "no outbound traffic: the VM reaches other VMs and banger's DNS only")
	sizes.register(c)
	start.register(c)
	return c
}

// createVM creates a VM with progress on stderr, ending after a success with the line done
// makes. When ctx is cancelled meanwhile (Ctrl-C), the daemon removes the VM again and banger
// says so and exits 130.
func (a *app) createVM(ctx context.Context, cl *client.Client, req api.CreateVMRequest, done func(vm api.VM, took time.Duration) string) (api.VM, error) {
	r := newRenderer(a.stderr)
	start := time.Now()
	vm, err := cl.CreateVM(ctx, req, r.Event)
	if err != nil {
		interrupted := ctx.Err() != nil
		r.Finish("")
		if interrupted {
			fmt.Fprintln(a.stderr, "banger: interrupted; the VM being created was removed")
			return vm, &exitError{130}
		}
		return vm, err
	}
	r.Finish(done(vm, time.Since(start)))
	return vm, nil
}

// eachVM runs fn for every ref in the order given. A ref that fails (missing, ambiguous, in
// the wrong state) is reported on stderr and the others still run; the exit status is 1 when
// any failed.
func (a *app) eachVM(ctx context.Context, refs []string, fn func(cl *client.Client, ref string) (string, error)) error {
	cl, err := a.connect(ctx)
	if err != nil {
		return err
	}
	failed := 0
	for _, ref := range refs {
		msg, err := fn(cl, ref)
		if err != nil {
			failed++
			fmt.Fprintf(a.stderr, "banger: %s: %s\n", ref, oneLine(errMessage(err)))
			continue
		}
		fmt.Fprintln(a.stdout, msg)
	}
	if failed > 0 {
		return &exitError{ExitError}
	}
	return nil
}

// connectVM connects and looks up the VM ref names (its name, id or a unique prefix).
func (a *app) connectVM(ctx context.Context, ref string) (*client.Client, api.VM, error) {
	cl, err := a.connect(ctx)
	if err != nil {
		return nil, api.VM{}, err
	}
	vm, err := cl.GetVM(ctx, ref)
	return cl, vm, err
}

// exitStatus ends banger with a guest command's status: nil for 0.
func exitStatus(code int) error {
	if code != 0 {
		return &exitError{code}
	}
	return nil
}

// errMessage is an error's message with its hint, for one-line reports.
func errMessage(err error) string {
	if ae, ok := err.(*api.Error); ok && ae.Hint != "" {
		return ae.Message + " (" + ae.Hint + ")"
	}
	return err.Error()
}

func (a *app) vmStartCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "start VM...",
		Short: "Boot stopped VMs",
		Long:  "Boot each VM (created or stopped) until its agent answers, with progress on stderr; a suspended VM is resumed (see `banger vm resume`). Each VM is named by its name, id or a unique prefix of either; one that fails does not stop the others.",
		Example: `  banger vm start dev
  banger vm start dev test`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			return a.eachVM(c.Context(), refs, func(cl *client.Client, ref string) (string, error) {
				r := newRenderer(a.stderr)
				start := time.Now()
				vm, unchanged, err := cl.StartVM(c.Context(), ref, r.Event)
				r.Finish("")
				if err != nil {
					return "", err
				}
				if unchanged {
					return vm.Name + " is already running", nil
				}
				return fmt.Sprintf("started %s (ready in %.1fs)", vm.Name, time.Since(start).Seconds()), nil
			})
		},
	}
}

func (a *app) vmSuspendCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "suspend VM...",
		Short: "Save running VMs to disk and end their VMMs",
		Long: `Save each running VM's guest — memory, vCPUs and devices — into the VM's directory and end its
VMM, which frees the guest's memory. The VM is then suspended: it keeps its disk and address,
survives daemon restarts and host reboots, and ` + "`banger vm resume`" + ` continues it where it was.
` + "`banger vm stop`" + ` discards the saved guest instead.`,
		Example: `  banger vm suspend dev
  banger vm suspend dev test`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			return a.eachVM(c.Context(), refs, func(cl *client.Client, ref string) (string, error) {
				r := newRenderer(a.stderr)
				start := time.Now()
				vm, unchanged, err := cl.SuspendVM(c.Context(), ref, r.Event)
				r.Finish("")
				if err != nil {
					return "", err
				}
				if unchanged {
					return vm.Name + " is already suspended", nil
				}
				return fmt.Sprintf("suspended %s (in %.1fs)", vm.Name, time.Since(start).Seconds()), nil
			})
		},
	}
}

func (a *app) vmResumeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "resume VM...",
		Short: "Continue suspended VMs where they were",
		Long: `Start each suspended VM's guest again from what ` + "`banger vm suspend`" + ` saved: its processes
go on where they were, with the same disk, address and boot. The guest is told the host's
time. If a resume fails the VM stays suspended; ` + "`banger vm stop`" + ` discards what was saved
and ` + "`banger vm start`" + ` then boots it afresh.`,
		Example: `  banger vm resume dev`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			return a.eachVM(c.Context(), refs, func(cl *client.Client, ref string) (string, error) {
				r := newRenderer(a.stderr)
				start := time.Now()
				vm, unchanged, err := cl.ResumeVM(c.Context(), ref, r.Event)
				r.Finish("")
				if err != nil {
					return "", err
				}
				if unchanged {
					return vm.Name + " is already running", nil
				}
				return fmt.Sprintf("resumed %s (in %.1fs)", vm.Name, time.Since(start).Seconds()), nil
			})
		},
	}
}

func (a *app) vmStopCmd() *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "stop VM...",
		Short: "Shut VMs down gracefully",
		Long: `Ask each VM's guest to power off (through the agent), wait up to --timeout for it, then use the
VMM's own shutdown and finally kill it. The disk is kept; start the VM again with ` + "`banger vm start`" + `.
A suspended VM's saved guest is discarded: its disk stays as the guest left it.`,
		Example: `  banger vm stop dev
  banger vm stop --timeout 5s dev test`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			return a.eachVM(c.Context(), refs, func(cl *client.Client, ref string) (string, error) {
				r := newRenderer(a.stderr)
				vm, unchanged, err := cl.StopVM(c.Context(), ref, timeout, r.Event)
				r.Finish("")
				if err != nil {
					return "", err
				}
				if unchanged && vm.State == "stopped" {
					return vm.Name + " is already stopped", nil
				} else if unchanged {
					return vm.Name + " is not running (" + vm.State + ")", nil
				}
				return "stopped " + vm.Name, nil
			})
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long the guest gets to power off before harder means")
	return c
}

func (a *app) vmRestartCmd() *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:     "restart VM...",
		Short:   "Stop VMs gracefully and boot them again",
		Long:    "Stop each VM as `banger vm stop` does and boot it again: a fresh boot with a new boot id.",
		Example: "  banger vm restart dev",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			return a.eachVM(c.Context(), refs, func(cl *client.Client, ref string) (string, error) {
				r := newRenderer(a.stderr)
				start := time.Now()
				vm, err := cl.RestartVM(c.Context(), ref, timeout, r.Event)
				r.Finish("")
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("restarted %s (ready in %.1fs)", vm.Name, time.Since(start).Seconds()), nil
			})
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long the guest gets to power off before harder means")
	return c
}

// parseSignal reads a signal by name (KILL, SIGKILL, kill) or number.
func parseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, usagef("--signal %d is not a signal number (1-64)", n)
		}
		return n, nil
	}
	name := "SIG" + strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if n := unix.SignalNum(name); n != 0 {
		return int(n), nil
	}
	return 0, usagef("--signal %q is not a signal name or number (e.g. KILL, TERM, 9)", s)
}

func (a *app) vmKillCmd() *cobra.Command {
	var sig string
	c := &cobra.Command{
		Use:   "kill VM...",
		Short: "End VMs at once",
		Long:  "Send a signal (default SIGKILL) to each VM's VMM process and wait for it to exit. The VM ends stopped (not in error) with its disk kept; nothing inside the guest gets a chance to clean up.",
		Example: `  banger vm kill wedged-vm
  banger vm kill --signal TERM dev`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			n, err := parseSignal(sig)
			if err != nil {
				return err
			}
			return a.eachVM(c.Context(), refs, func(cl *client.Client, ref string) (string, error) {
				vm, err := cl.KillVM(c.Context(), ref, n)
				if err != nil {
					return "", err
				}
				return "killed " + vm.Name, nil
			})
		},
	}
	c.Flags().StringVar(&sig, "signal", "KILL", "signal to send to the VMM process (name or number)")
	return c
}

func (a *app) vmShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show VM",
		Short: "Show everything about a VM",
		Long:  "Show every field of a VM: state, resources and where each came from, image, kernel, VMM, process, directory, last error.",
		Example: `  banger vm show dev
  banger vm show dev --json | jq .state`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return printFetched(a, c.Context(), asJSON, func(cl *client.Client) (api.VM, error) {
				return cl.GetVM(c.Context(), args[0])
			}, a.printVM)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printVM(vm api.VM) error {
	f := a.newFields()
	row := f.row
	row("name", vm.Name)
	row("id", vm.ID)
	row("state", vm.State)
	row("last error", vm.LastError)
	vcpu, mem, dsk := strconv.Itoa(vm.VCPU), bytesize.Format(int64(vm.MemoryMiB)*bytesize.MiB), bytesize.Format(vm.DiskBytes)
	if s := vm.Spec; s != nil {
		vcpu += fmt.Sprintf(" (%s%s)", s.VCPU.Source, reason(s.VCPU.Reason))
		mem += fmt.Sprintf(" (%s%s)", s.MemoryMiB.Source, reason(s.MemoryMiB.Reason))
		dsk += fmt.Sprintf(" (%s%s)", s.DiskBytes.Source, reason(s.DiskBytes.Reason))
	}
	row("vcpu", vcpu)
	row("memory", mem)
	row("disk", dsk)
	row("image", vm.Image)
	row("kernel", vm.Kernel)
	row("vmm", vm.VMM+" ("+vm.Accel+")")
	if vm.IP != "" {
		nat := "outbound NAT"
		if !vm.NAT {
			nat = "no NAT"
		}
		row("address", vm.IP+" ("+vm.Name+".vm, "+nat+")")
	}
	if vm.PID != 0 {
		row("pid", strconv.Itoa(vm.PID))
	}
	if vm.AutoRemove {
		row("ephemeral", "yes (deleted when its command ends)")
	}
	if w := vm.Workspace; w != nil {
		ws := w.HostPath + " -> " + w.GuestPath
		if w.Branch != "" {
			ws += " (branch " + w.Branch + ")"
		}
		row("workspace", ws)
		row("shipped", fmt.Sprintf("%d files, %s, HEAD %.12s, %s (%s)", w.Files, bytesize.Format(w.Bytes), w.Head,
			w.ShippedAt.Local().Format(time.RFC3339), ago(w.ShippedAt)))
	}
	row("dir", vm.Dir)
	row("created", vm.CreatedAt.Local().Format(time.RFC3339)+" ("+ago(vm.CreatedAt)+")")
	return f.flush()
}

func reason(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

func (a *app) vmPruneCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "prune",
		Short: "Delete every VM that is not running",
		Long:  "Delete every VM that is created, stopped or in error, with its disk. It asks first unless -f is given; without a terminal to ask on, -f is required.",
		Example: `  banger vm prune
  banger vm prune -f`,
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
			var names []string
			for _, vm := range vms {
				if vm.State == "created" || vm.State == "stopped" || vm.State == "error" {
					names = append(names, vm.Name)
				}
			}
			if len(names) == 0 {
				fmt.Fprintln(a.stderr, "banger: no VMs to prune (every VM is running)")
				return nil
			}
			if !force {
				if !isTerminal(a.stdin) {
					return usagef("vm prune would delete %d VMs (%s); add -f to confirm when there is no terminal to ask on", len(names), strings.Join(names, ", "))
				}
				fmt.Fprintf(a.stderr, "Delete %d VMs and their disks (%s)? [y/N] ", len(names), strings.Join(names, ", "))
				line, _ := bufio.NewReader(a.stdin).ReadString('\n')
				if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
					fmt.Fprintln(a.stderr, "banger: nothing deleted")
					return nil
				}
			}
			deleted, err := cl.PruneVMs(c.Context())
			for _, vm := range deleted {
				fmt.Fprintf(a.stdout, "deleted %s\n", vm.Name)
			}
			return err
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	return c
}

func (a *app) vmSetCmd() *cobra.Command {
	var sizes sizeFlags
	c := &cobra.Command{
		Use:   "set VM [--vcpu N] [--memory SIZE] [--disk-size SIZE]",
		Short: "Change the resources of a stopped VM",
		Long:  "Change a stopped VM's vCPUs, memory or disk size; the values are checked as for vm create. The disk (and its filesystem) can grow, never shrink. A running VM is refused: stop it first.",
		Example: `  banger vm set dev --vcpu 2 --memory 4G
  banger vm set dev --disk-size 20G`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var cr api.CreateVMRequest
			if err := sizes.apply(c, &cr); err != nil {
				return err
			}
			if cr.VCPU == nil && cr.MemoryMiB == nil && cr.DiskBytes == nil {
				return usagef("nothing to change: give --vcpu, --memory or --disk-size")
			}
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			vm, err := cl.SetVM(c.Context(), args[0], api.SetVMRequest{VCPU: cr.VCPU, MemoryMiB: cr.MemoryMiB, DiskBytes: cr.DiskBytes})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s: vcpu=%d memory=%s disk=%s\n", vm.Name, vm.VCPU, bytesize.Format(int64(vm.MemoryMiB)*bytesize.MiB), bytesize.Format(vm.DiskBytes))
			return nil
		},
	}
	sizes.register(c)
	return c
}

func (a *app) vmWatchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "watch VM",
		Short: "Follow the operation running on a VM",
		Long:  "Follow the create, start, stop, restart, suspend, resume, snapshot or fork that is running on a VM — started by any client — from its first event until it ends.",
		Example: `  banger vm create --name dev &
  banger vm watch dev`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			ops, err := cl.ListOperations(c.Context())
			if err != nil {
				return err
			}
			var op *api.Operation
			for i := range ops {
				if !ops[i].Done && (ops[i].Target == args[0] || strings.HasPrefix(ops[i].Target, args[0])) {
					op = &ops[i]
					break
				}
			}
			if op == nil {
				return &api.Error{Code: "not_found", Message: fmt.Sprintf("nothing is running on %q", args[0]), Hint: "`banger vm show " + args[0] + "` shows its state"}
			}
			r := newRenderer(a.stderr)
			res, err := cl.WatchOperation(c.Context(), op.ID, r.Event)
			if err != nil {
				r.Finish("")
				return err
			}
			r.Finish(fmt.Sprintf("%s of %s finished", op.Kind, op.Target))
			if res.VM != nil {
				fmt.Fprintf(a.stdout, "%s: %s\n", res.VM.Name, res.VM.State)
			}
			for _, vm := range res.VMs {
				fmt.Fprintf(a.stdout, "%s: %s\n", vm.Name, vm.State)
			}
			if res.Snapshot != nil {
				fmt.Fprintf(a.stdout, "snapshot %s\n", res.Snapshot.Name)
			}
			return nil
		},
	}
}
