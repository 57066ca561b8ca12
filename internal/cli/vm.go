package cli

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/names"
	"github.com/banger-dev/banger/internal/workspace"
)

func (a *app) vmCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "vm",
		Short: "Create, run commands in, list and delete VMs",
		Long:  "Commands that manage VMs. `banger vm run` is the one-command way in.",
		Example: `  banger vm run . -- make test
  banger vm list
  banger vm delete brave-otter`,
	}
	c.AddCommand(a.vmRunCmd(), a.vmCreateCmd(), a.vmStartCmd(), a.vmStopCmd(), a.vmSuspendCmd(), a.vmResumeCmd(), a.vmSnapshotCmd(), a.vmForkCmd(), a.vmRestartCmd(), a.vmKillCmd(),
		a.vmExecCmd(), a.vmShowCmd(), a.vmLogsCmd(), a.vmListCmd(), a.vmSetCmd(), a.vmDeleteCmd(), a.vmPruneCmd(), a.vmWatchCmd(),
		a.vmSSHCmd(), a.vmSSHProxyCmd(), a.vmPortsCmd(), a.vmForwardCmd(), a.vmWorkspaceCmd())
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
// It also checks the --name already in req, so that a bad name is a usage error (exit 2) like
// every other bad flag value.
func (f *sizeFlags) apply(c *cobra.Command, req *api.CreateVMRequest) error {
	if req.Name != "" {
		if err := names.Validate(req.Name); err != nil {
			return usagef("--name: %v", err)
		}
	}
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

// noteUnshippedRepo tells someone who runs `vm run` without PATH inside a git work tree that
// nothing of it was shipped, and how to ship it: the bare sandbox is what they asked for, but
// perhaps not what they meant.
func (a *app) noteUnshippedRepo() {
	if cwd, err := os.Getwd(); err == nil {
		if repo, err := workspace.Open(cwd); err == nil {
			fmt.Fprintf(a.stderr, "note: no PATH given, so nothing of %s is shipped; `banger vm run . [-- COMMAND]` ships this repository\n", repo.Top)
		}
	}
}

func (a *app) vmRunCmd() *cobra.Command {
	var (
		rm     bool
		detach bool
		ws     wsOptions
		noNAT  bool
		name   string
		image  string
		kernel string
		sizes  sizeFlags
		start  startFlags
	)
	c := &cobra.Command{
		Use:   "run [PATH] [flags] [-- COMMAND [ARG...]]",
		Short: "Boot a fresh VM and run a command, or a shell, in it",
		Long: `Boot a fresh VM, ship PATH's git work tree into it (its tracked files, to /root/NAME) and run
COMMAND there; without PATH nothing is shipped and COMMAND runs in a bare sandbox. The command's stdout and stderr stream back as they
are written (stdout to stdout; banger's own messages go to stderr) and banger exits with the
command's status. With --rm the VM is deleted afterwards, whatever happened; without it the
VM keeps running.

Without COMMAND it opens an interactive ssh session instead; leaving it leaves the VM running
(or deletes it, with --rm).

The kernel and the default image are fetched and built on first use, which takes a minute;
later runs only boot. Arguments after -- reach the guest exactly as given (no re-quoting).`,
		Example: `  banger vm run . -- make test
  banger vm run ~/src/app
  banger vm run
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
			if len(pathArgs) > 1 {
				return usagef("give one workspace directory, then the command after --: banger vm run ./repo -- make test")
			}
			workspaceFlags := ws.guestPath != "" || ws.includeUntracked || ws.dryRun || ws.branch != "" || ws.from != ""
			switch {
			case detach && rm:
				return usagef("-d/--detach keeps the VM running; --rm deletes it when you leave: pick one")
			case detach && len(command) > 0:
				return usagef("-d/--detach does not run a command; run one later with `banger vm exec NAME -- COMMAND`")
			case len(pathArgs) == 0 && workspaceFlags:
				return usagef("--guest-path, --include-untracked, --dry-run, --branch and --from need a workspace: banger vm run ./repo")
			case ws.from != "" && ws.branch == "":
				return usagef("--from names where --branch starts; give --branch too")
			case ws.guestPath != "" && !path.IsAbs(ws.guestPath):
				return usagef("--guest-path %q: want an absolute path in the guest, e.g. /root/src", ws.guestPath)
			}
			var (
				repo *workspace.Repo
				list workspace.List
				err  error
			)
			if len(pathArgs) == 1 {
				if repo, list, err = a.listWorkspace(pathArgs[0], ws); err != nil {
					return err
				}
				if ws.branch != "" {
					if err := checkBranchName(repo, ws.branch); err != nil {
						return err
					}
				}
				if ws.dryRun {
					return a.dryRun(repo, list, ws)
				}
			}
			// A VM that never became reachable is kept (even with --rm), to be looked into.
			req := api.CreateVMRequest{Name: name, Image: image, Kernel: kernel, AutoRemove: rm, NoNAT: noNAT, CancelOnDisconnect: true, KeepUnreachable: true}
			if err := sizes.apply(c, &req); err != nil {
				return err
			}
			if err := start.apply(c, &req); err != nil {
				return err
			}
			if len(pathArgs) == 0 {
				a.noteUnshippedRepo()
			}
			return a.run(c.Context(), runPlan{req: req, command: command, rm: rm, detach: detach, repo: repo, list: list, ws: ws})
		},
	}
	c.Flags().BoolVar(&rm, "rm", false, "delete the VM when the command or session ends (also on failure or Ctrl-C)")
	c.Flags().BoolVarP(&detach, "detach", "d", false, "create the VM, ship the workspace, install its tools, and return")
	c.Flags().BoolVar(&noNAT, "no-nat", false, "no outbound traffic: the VM reaches other VMs and banger's DNS only")
	c.Flags().StringVar(&name, "name", "", "VM name (a DNS label; default: generated, e.g. brave-otter)")
	c.Flags().StringVar(&image, "image", "", "image to boot (default: default_image_name from config, else debian-bookworm)")
	c.Flags().StringVar(&kernel, "kernel", "", "kernel to boot (default: the image's kernel, else default_kernel from config, else debian-6.1)")
	c.Flags().StringVar(&ws.guestPath, "guest-path", "", "where the workspace goes in the guest (default /root/<repository name>)")
	c.Flags().BoolVar(&ws.includeUntracked, "include-untracked", false, "ship untracked files too (never ignored ones)")
	c.Flags().BoolVar(&ws.dryRun, "dry-run", false, "print the files that would ship, and their total size; start nothing")
	c.Flags().StringVar(&ws.branch, "branch", "", "ship the repository with its history, on this new branch")
	c.Flags().StringVar(&ws.from, "from", "", "with --branch: the commit the branch starts at (default HEAD)")
	c.Flags().BoolVar(&ws.noBootstrap, "no-bootstrap", false, "do not run `mise install` for a repository with a mise config")
	sizes.register(c)
	start.register(c)
	return c
}

// checkBranchName refuses a name git would refuse, before any VM exists.
func checkBranchName(repo *workspace.Repo, branch string) error {
	if out, err := exec.Command("git", "-C", repo.Top, "check-ref-format", "--branch", branch).CombinedOutput(); err != nil {
		return usagef("--branch %q is not a valid branch name (%s)", branch, strings.TrimSpace(string(out)))
	}
	return nil
}

// runPlan is what vm run was asked to do.
type runPlan struct {
	req     api.CreateVMRequest
	command []string
	rm      bool
	detach  bool
	repo    *workspace.Repo // nil: no workspace
	list    workspace.List
	ws      wsOptions
}

// run is `vm run`: create, ship the workspace, run the command or a shell (or return, with
// -d), and delete the VM when asked.
func (a *app) run(parent context.Context, p runPlan) error {
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
	vm, err := a.createVM(ctx, cl, p.req, func(vm api.VM, took time.Duration) string {
		return fmt.Sprintf("vm %s ready in %.1fs", vm.Name, took.Seconds())
	})
	if err != nil {
		stop()
		return err
	}

	var (
		code    int
		execErr error
		dir     string
	)
	if p.repo != nil {
		dir = p.ws.guestDir(p.repo)
		if _, err := a.ship(ctx, cl, vm.Name, p.repo, p.list, p.ws); err != nil {
			execErr = fmt.Errorf("ship %s to vm %s: %w", p.repo.Top, vm.Name, err)
		} else if !p.ws.noBootstrap {
			a.bootstrap(ctx, cl, vm.Name, p.repo, dir, p.detach)
		}
	}
	stop()
	switch {
	case execErr != nil:
	case p.detach:
		where := ""
		if dir != "" {
			where = ", workspace at " + dir
		}
		fmt.Fprintf(a.stderr, "banger: vm %s is running%s; `banger vm ssh %s` or `banger vm exec %s -- COMMAND`\n", vm.Name, where, vm.Name, vm.Name)
		fmt.Fprintln(a.stdout, vm.Name)
		return nil
	case len(p.command) == 0:
		// No command: an interactive shell over ssh (in the workspace, if there is one).
		code, execErr = a.ssh(parent, cl, vm.Name, nil, dir)
	default:
		argv := p.command
		if p.repo != nil && hasMiseConfig(p.repo.Top) {
			argv = miseWrapped(argv)
		}
		code, execErr = a.exec(cl, vm.Name, argv, dir)
	}
	if p.rm {
		// The delete must happen even if the user presses Ctrl-C again now.
		hold := make(chan os.Signal, 1)
		signal.Notify(hold, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(hold)
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cl.DeleteVM(dctx, vm.ID, true); err != nil {
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
	return exitStatus(code)
}

// hasMiseConfig reports whether a repository pins its tools with mise.
func hasMiseConfig(top string) bool {
	for _, f := range []string{".mise.toml", "mise.toml", ".tool-versions"} {
		if _, err := os.Stat(filepath.Join(top, f)); err == nil {
			return true
		}
	}
	return false
}

// miseWrapped runs argv through `mise exec --` when the guest has mise, unchanged otherwise;
// the arguments pass through "$@", never re-tokenised.
func miseWrapped(argv []string) []string {
	const script = `if command -v mise >/dev/null 2>&1; then exec mise exec -- "$@"; fi; exec "$@"`
	return append([]string{"sh", "-c", script, "sh"}, argv...)
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
			return printFetched(a, c.Context(), asJSON, func(cl *client.Client) ([]api.VM, error) {
				return cl.ListVMs(c.Context())
			}, a.printVMs)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printVMs(vms []api.VM) error {
	tw := a.newTable()
	fmt.Fprintln(tw, "NAME\tSTATE\tIP\tIMAGE\tVCPU\tMEM\tDISK\tCREATED")
	for _, vm := range vms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", vm.Name, vm.State, dash(vm.IP), vm.Image, vm.VCPU,
			bytesize.Format(int64(vm.MemoryMiB)*bytesize.MiB), bytesize.Format(vm.DiskBytes), ago(vm.CreatedAt))
	}
	return tw.Flush()
}

func (a *app) vmDeleteCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:     "delete VM...",
		Aliases: []string{"rm"},
		Short:   "Delete VMs with their disks",
		Long: `Delete each VM with its disk and record. Each VM is named by its name, id or a unique prefix
of either. A running VM is deleted only with -f (which ends it at once, as ` + "`vm kill`" + ` does) or
after a yes on the terminal; without a terminal it is refused, as ` + "`docker rm`" + ` does.`,
		Example: `  banger vm delete brave-otter
  banger vm rm dev test
  banger vm delete -f still-running`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			return a.eachVM(c.Context(), refs, func(cl *client.Client, ref string) (string, error) {
				sure := force
				if !sure && isTerminal(a.stdin) {
					// Ask before the daemon would refuse; it still checks (the VM may start meanwhile).
					if vm, err := cl.GetVM(c.Context(), ref); err == nil && vm.State == "running" {
						fmt.Fprintf(a.stderr, "%s is running. Delete it and its disk? [y/N] ", vm.Name)
						line, _ := bufio.NewReader(a.stdin).ReadString('\n')
						if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
							return vm.Name + " kept", nil
						}
						sure = true
					}
				}
				if err := cl.DeleteVM(c.Context(), ref, sure); err != nil {
					return "", err
				}
				return "deleted " + ref, nil
			})
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "delete running VMs too, without asking")
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
