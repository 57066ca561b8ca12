package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/termtext"
	"github.com/banger-dev/banger/internal/wire"
	"github.com/banger-dev/banger/internal/workspace"
)

// exec runs argv in a VM with this process's stdio and returns the command's exit status.
//
// When both stdin and stdout are terminals the command gets a pseudo-terminal and the local
// terminal goes raw, so Ctrl-C reaches the command as a keystroke. Otherwise stdin, stdout and
// stderr are plain pipes (`… -- cat < file`, `… -- cmd > out` keep their bytes exact). Either
// way SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to banger are forwarded to the command, and the
// terminal is restored once the command has ended.
func (a *app) exec(cl *client.Client, ref string, argv []string, dir string) (int, error) {
	req := api.ExecRequest{Argv: argv, Dir: dir}
	cio := wire.CallerIO{Stdin: a.stdin, Stdout: a.stdout, Stderr: a.stderr}

	stdinTTY, stdoutTTY := isTerminal(a.stdin), isTerminal(a.stdout)
	// restore puts the local terminal back in the mode it had; it must run before banger
	// prints anything of its own, or a raw terminal (no \n → \r\n) staircases the line.
	restore := func() {}
	sigs := make(chan os.Signal, 4)
	forward := make(chan int, 4)
	if stdinTTY && stdoutTTY {
		in := a.stdin.(*os.File)
		req.TTY = true
		if w, h, err := term.GetSize(int(in.Fd())); err == nil {
			req.Cols, req.Rows = uint16(w), uint16(h)
		}
		if t := os.Getenv("TERM"); t != "" {
			req.Env = append(req.Env, "TERM="+t)
		}
		if old, err := term.MakeRaw(int(in.Fd())); err == nil {
			var once sync.Once
			restore = func() { once.Do(func() { _ = term.Restore(int(in.Fd()), old) }) }
			defer restore()
		}
		resizes := make(chan wire.ResizeMsg, 1)
		cio.Resizes = resizes
		signal.Notify(sigs, syscall.SIGWINCH)
		go func() {
			for s := range sigs {
				if s != syscall.SIGWINCH {
					forward <- int(s.(syscall.Signal))
					continue
				}
				if w, h, err := term.GetSize(int(in.Fd())); err == nil {
					select {
					case resizes <- wire.ResizeMsg{Rows: uint16(h), Cols: uint16(w)}:
					default:
					}
				}
			}
		}()
	} else {
		go func() {
			for s := range sigs {
				forward <- int(s.(syscall.Signal))
			}
		}()
	}
	// Signals sent to banger (kill, a closing terminal) go to the command; on a terminal,
	// Ctrl-C is a keystroke that reaches it through the pty instead.
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	cio.Signals = forward
	if lang := os.Getenv("LANG"); lang != "" {
		req.Env = append(req.Env, "LANG="+lang)
	}
	defer signal.Stop(sigs)

	exit, err := cl.Exec(context.Background(), ref, req, cio)
	restore()
	if err != nil {
		return ExitError, err
	}
	if req.TTY && exit.Signal == int(syscall.SIGINT) {
		// The terminal echoed ^C and the command died of it: end that line, as a shell does,
		// so that what comes next does not start after the ^C.
		fmt.Fprintln(a.stdout)
	}
	if exit.Error != "" {
		fmt.Fprintf(a.stderr, "banger: %s\n", termtext.CleanLine(exit.Error))
	}
	return exit.Code, nil
}

func (a *app) vmExecCmd() *cobra.Command {
	var (
		guestPath   string
		sync, force bool
	)
	c := &cobra.Command{
		Use:   "exec VM [--guest-path P] [--sync [--force]] -- COMMAND [ARG...]",
		Short: "Run a command in a running VM",
		Long: `Run COMMAND in a running VM through its agent, in the workspace ` + "`vm run ./repo`" + ` shipped (or
--guest-path, or root's home). stdout and stderr stream back separately (a pty when stdin and
stdout are terminals), stdin is passed through, signals are forwarded, and banger exits with
the command's status. In a workspace with a mise config the command runs under ` + "`mise exec`" + `.
banger warns when the host's repository has moved on since the workspace was shipped; --sync
makes the guest's workspace what the host would ship now, deletions included. It refuses when
the guest has changes that were not exported (` + "`banger vm workspace export`" + ` gets them;
--force discards them).`,
		Example: `  banger vm exec dev -- uname -a
  banger vm exec dev --sync -- make test
  echo hi | banger vm exec dev -- cat`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			dash := c.ArgsLenAtDash()
			if dash != 1 || len(args) < 2 {
				return usagef("give the VM and then the command after --: banger vm exec VM -- COMMAND")
			}
			cl, vm, err := a.connectVM(c.Context(), args[0])
			if err != nil {
				return err
			}
			argv, dir := args[1:], guestPath
			if ws := vm.Workspace; ws != nil {
				if dir == "" {
					dir = ws.GuestPath
				}
				if err := a.checkWorkspace(c.Context(), cl, vm.Name, ws, sync, force); err != nil {
					return err
				}
				if hasMiseConfig(ws.HostPath) && (guestPath == "" || guestPath == ws.GuestPath) {
					argv = miseWrapped(argv)
				}
			} else if sync {
				return usagef("vm %s has no workspace to sync; ship one with `banger vm run ./repo`", vm.Name)
			}
			if force && !sync {
				return usagef("--force goes with --sync: it discards the guest's changes that were not exported")
			}
			code, err := a.exec(cl, vm.Name, argv, dir)
			if err != nil {
				return err
			}
			return exitStatus(code)
		},
	}
	c.Flags().StringVar(&guestPath, "guest-path", "", "directory to run in (default: the VM's workspace, else root's home)")
	c.Flags().BoolVar(&sync, "sync", false, "make the guest's workspace what the host would ship now (deletions included) before running")
	c.Flags().BoolVar(&force, "force", false, "with --sync: discard the guest's changes that were not exported")
	return c
}

// checkWorkspace warns when the host's repository has commits the VM's workspace lacks, and
// with --sync makes the guest's workspace what the host would ship now.
func (a *app) checkWorkspace(ctx context.Context, cl *client.Client, vm string, ws *api.Workspace, sync, force bool) error {
	repo, err := workspace.Open(ws.HostPath)
	if err != nil {
		if sync {
			return &api.Error{Code: "invalid", Message: fmt.Sprintf("cannot sync vm %s's workspace: %v", vm, err)}
		}
		return nil // the repository is not here (another machine, moved): nothing to compare
	}
	if sync {
		return a.syncWorkspace(ctx, cl, vm, repo, ws, force)
	}
	if head := repo.Head(); head != "" && ws.Head != "" && head != ws.Head {
		fmt.Fprintf(a.stderr, "note: vm %s's workspace was shipped at %.12s; %s is at %.12s now (--sync ships it again)\n", vm, ws.Head, ws.HostPath, head)
	}
	return nil
}

// syncWorkspace is `vm exec --sync`: the guest's workspace becomes what the host would ship
// now. Changes in the guest that were not exported stop it (exit 1, naming the files), unless
// force; files the host no longer ships are removed in the guest afterwards.
func (a *app) syncWorkspace(ctx context.Context, cl *client.Client, vm string, repo *workspace.Repo, ws *api.Workspace, force bool) error {
	if ws.Branch != "" {
		return &api.Error{Code: "invalid", Message: fmt.Sprintf("vm %s's workspace was shipped with --branch (a git checkout in the guest); --sync ships plain workspaces only", vm),
			Hint: "commit in the guest and fetch from it, or `banger vm workspace export " + vm + "`"}
	}
	list, err := repo.Files(false)
	if err != nil {
		return err
	}
	code, err := a.guestScript(ctx, cl, vm, syncCheckScript(ws.GuestPath, force))
	if err != nil {
		return err
	}
	switch code {
	case 0:
	case 10:
		return &api.Error{Code: "conflict", Message: fmt.Sprintf("not syncing vm %s: its workspace has changes that were not exported (listed above)", vm),
			Hint: "get them with `banger vm workspace export " + vm + " | git apply`, or discard them with `banger vm exec " + vm + " --sync --force -- …`"}
	default:
		return fmt.Errorf("checking vm %s's workspace before the sync failed (exit %d)", vm, code)
	}
	if _, err := a.ship(ctx, cl, vm, repo, list, wsOptions{guestPath: ws.GuestPath}); err != nil {
		return err
	}
	if code, err := a.guestScript(ctx, cl, vm, pruneScript(ws.GuestPath)); err != nil {
		return err
	} else if code != 0 {
		return fmt.Errorf("removing the files the host no longer ships from vm %s failed (exit %d)", vm, code)
	}
	return nil
}
