package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/sshkeys"
	"github.com/banger-dev/banger/internal/termtext"
)

// sshArgs are the arguments of the system ssh for a target: banger's key and known_hosts,
// strict host key checking (the host key was recorded before the VM first booted), the VM's
// .vm name as the key's alias, and banger itself (cli) as the ProxyCommand that carries the
// connection through the daemon and the VM's agent. ssh never dials the guest's address, so
// it works wherever the CLI runs, in the namespace that holds the bridge or not.
func sshArgs(t api.SSHTarget, cli string, tty bool, command []string) []string {
	args := []string{
		"-i", t.KeyFile,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + t.KnownHosts,
		"-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlias=" + t.HostAlias,
		"-o", "CheckHostIP=no",
		"-o", "ProxyCommand=" + sshkeys.ProxyCommand(cli, t.VM),
		"-o", "LogLevel=ERROR",
	}
	if tty {
		args = append(args, "-t")
	}
	args = append(args, t.User+"@"+t.HostAlias)
	if len(command) > 0 {
		args = append(args, "--")
		args = append(args, command...)
	}
	return args
}

// selfPath is this CLI's executable, for ssh's ProxyCommand.
func selfPath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "banger"
}

// ssh runs the system ssh to a VM and returns its exit status. With dir and no command, the
// interactive shell starts in dir.
func (a *app) ssh(ctx context.Context, cl *client.Client, ref string, command []string, dir string) (int, error) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		return ExitError, &api.Error{Code: "invalid", Message: "ssh is not installed", Hint: "install it (Debian: apt-get install openssh-client), or use `banger vm exec` which needs no ssh"}
	}
	// sshd starts late in a boot: say what the wait is for when it is not ready at once.
	waiting := time.AfterFunc(time.Second, func() {
		fmt.Fprintf(a.stderr, "banger: waiting for sshd in %s to listen (it starts late in the guest's boot)\n", ref)
	})
	t, err := cl.SSH(ctx, ref, 90*time.Second)
	waiting.Stop()
	if err != nil {
		return ExitError, err
	}
	tty := len(command) == 0 && isTerminal(a.stdin) && isTerminal(a.stdout)
	if len(command) == 0 && dir != "" {
		command = []string{"cd " + shellQuote(dir) + " && exec \"${SHELL:-/bin/sh}\" -l"}
		tty = isTerminal(a.stdin)
	}
	cmd := exec.Command(sshBin, sshArgs(t, selfPath(), tty, command)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.stdin, a.stdout, a.stderr
	// ssh owns the terminal now: Ctrl-C belongs to the remote side.
	signal.Ignore(os.Interrupt, syscall.SIGQUIT)
	defer signal.Reset(os.Interrupt, syscall.SIGQUIT)
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() == 255 {
			fmt.Fprintf(a.stderr, "banger: ssh to %s failed (exit 255); `banger vm logs %s` shows the guest's console\n", t.VM, t.VM)
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return ExitError, fmt.Errorf("run ssh: %w", err)
	}
	return 0, nil
}

func (a *app) vmSSHCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh VM [-- COMMAND [ARG...]]",
		Short: "Open an ssh session in a running VM",
		Long: `Run the system ssh into a running VM as root, with banger's own key and known_hosts: the
VM's host key was recorded when the VM was made, so there is no prompt and a changed key is
refused. Without COMMAND it is an interactive login; with one, ssh runs it (through the
guest's shell, as ssh does). It waits for sshd to listen first.`,
		Example: `  banger vm ssh dev
  banger vm ssh dev -- uptime
  ssh dev.vm    # after banger ssh-config --install`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if dash := c.ArgsLenAtDash(); dash > 1 || (dash < 0 && len(args) > 1) {
				return usagef("give the VM, then the command after --: banger vm ssh VM -- COMMAND")
			}
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			code, err := a.ssh(c.Context(), cl, args[0], args[1:], "")
			if err != nil {
				return err
			}
			return exitStatus(code)
		},
	}
}

func (a *app) vmSSHProxyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh-proxy VM",
		Short: "Carry one ssh connection to a VM's sshd through banger (ssh's ProxyCommand)",
		Long: `Connect standard input and output to the VM's sshd, through banger's daemon and the VM's
agent: no route to the VM's address is needed and nothing is sent to it, so ssh works from any
network namespace. It waits for sshd to listen first. ` + "`banger vm ssh`" + ` and banger's ssh_config
(` + "`banger ssh-config`" + `) run it as ssh's ProxyCommand; you do not need to type it.`,
		Example: `  ssh -o ProxyCommand='banger vm ssh-proxy dev' -o HostKeyAlias=dev.vm root@dev.vm`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			t, err := cl.SSH(c.Context(), args[0], 90*time.Second)
			if err != nil {
				return err
			}
			conn, err := cl.Forward(c.Context(), t.VM, "tcp", t.GuestAddress)
			if err != nil {
				return fmt.Errorf("connect to sshd in %s: %w", t.VM, err)
			}
			defer conn.Close()
			go func() {
				_, _ = io.Copy(conn, a.stdin)
				if cw, ok := conn.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
			}()
			// The connection ends when sshd's side does; ssh then sees our output close.
			if _, err := io.Copy(a.stdout, conn); err != nil && !errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("ssh connection to %s: %w", t.VM, err)
			}
			return nil
		},
	}
}

func (a *app) vmPortsCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "ports VM",
		Short: "List the ports a VM listens on",
		Long: `List the sockets listening in a running VM (read by its agent), with the process and, for TCP
ports that listen beyond the guest's loopback, where to reach them: http://NAME.vm:PORT when
the service answered an HTTP request, NAME.vm:PORT otherwise (sshd, databases, …).`,
		Example: `  banger vm ports dev
  banger vm ports dev --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return printFetched(a, c.Context(), asJSON, func(cl *client.Client) ([]api.Port, error) {
				return cl.Ports(c.Context(), args[0])
			}, a.printPorts)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printPorts(ports []api.Port) error {
	tw := a.newTable()
	fmt.Fprintln(tw, "PROTO\tADDRESS\tPORT\tPROCESS\tREACH AT")
	for _, p := range ports {
		proc := p.Process
		if p.PID != 0 {
			proc += " (" + strconv.Itoa(p.PID) + ")"
		}
		reach := p.URL
		if reach == "" {
			reach = p.Reach
		}
		// Everything but the port number comes from the guest (a process can name itself
		// anything, escape sequences included).
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", termtext.CleanLine(p.Proto), termtext.CleanLine(p.Addr), p.Port,
			termtext.CleanLine(proc), termtext.CleanLine(reach))
	}
	return tw.Flush()
}

// forwardSpec is one side of a forward: a TCP port or a unix socket path.
type forwardSpec struct {
	network, address string
}

// parseForward reads [HOST:]HOSTPORT:GUESTPORT, where either end may instead be a unix socket
// path (containing a '/').
func parseForward(s string) (local, remote forwardSpec, err error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return local, remote, usagef("%q: want HOSTPORT:GUESTPORT, e.g. 8080:80 (either side may be a unix socket path)", s)
	}
	l, r := s[:i], s[i+1:]
	side := func(v string, host string) (forwardSpec, error) {
		if strings.Contains(v, "/") {
			return forwardSpec{"unix", v}, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return forwardSpec{}, usagef("%q is not a port (1-65535) or a socket path", v)
		}
		return forwardSpec{"tcp", net.JoinHostPort(host, v)}, nil
	}
	// The host side may carry a bind address: 127.0.0.1:8080:80.
	bind := "127.0.0.1"
	if j := strings.LastIndexByte(l, ':'); j > 0 && !strings.Contains(l, "/") {
		bind, l = l[:j], l[j+1:]
	}
	if local, err = side(l, bind); err != nil {
		return
	}
	remote, err = side(r, "127.0.0.1")
	return
}

func (a *app) vmForwardCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "forward VM [BIND:]HOSTPORT:GUESTPORT",
		Short: "Forward a host port (or socket) into a VM",
		Long: `Listen on a host port (127.0.0.1 unless a bind address is given) and carry every connection to
a port on the guest's loopback, through banger's agent: it works without network routes to the
VM, and for services that listen only on the guest's localhost. Either side may be a unix socket
path instead of a port. It runs until Ctrl-C.`,
		Example: `  banger vm forward dev 8080:80
  banger vm forward dev 0.0.0.0:5432:5432
  banger vm forward dev ./docker.sock:/var/run/docker.sock`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			local, remote, err := parseForward(args[1])
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cl, vm, err := a.connectVM(ctx, args[0])
			if err != nil {
				return err
			}
			if local.network == "unix" {
				_ = os.Remove(local.address)
			}
			ln, err := net.Listen(local.network, local.address)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", local.address, err)
			}
			defer ln.Close()
			if local.network == "unix" {
				defer os.Remove(local.address)
			}
			context.AfterFunc(ctx, func() { ln.Close() })
			fmt.Fprintf(a.stderr, "banger: forwarding %s to %s in %s; Ctrl-C stops\n", ln.Addr(), remote.address, vm.Name)
			for {
				conn, err := ln.Accept()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				go a.forwardOne(ctx, cl, vm.Name, remote, conn)
			}
		},
	}
}

func (a *app) forwardOne(ctx context.Context, cl *client.Client, vm string, remote forwardSpec, conn net.Conn) {
	defer conn.Close()
	up, err := cl.Forward(ctx, vm, remote.network, remote.address)
	if err != nil {
		fmt.Fprintf(a.stderr, "banger: forward to %s: %s\n", remote.address, oneLine(errMessage(err)))
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(up, conn)
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(conn, up)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

func (a *app) sshConfigCmd() *cobra.Command {
	var install, uninstall bool
	c := &cobra.Command{
		Use:   "ssh-config [--install | --uninstall]",
		Short: "Make `ssh NAME.vm` work from any terminal",
		Long: `banger keeps an ssh_config file with a Host entry for every VM (address, key, known_hosts). This
prints the line that includes it; --install adds that Include to ~/.ssh/config in a block fenced
by markers (again: no change), --uninstall removes exactly that block. banger never edits
~/.ssh/config on its own.`,
		Example: `  banger ssh-config
  banger ssh-config --install && ssh dev.vm`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if install && uninstall {
				return usagef("--install and --uninstall exclude each other")
			}
			l, err := paths.FromEnv()
			if err != nil {
				return err
			}
			sshConfig := filepath.Join(l.ConfigDir, "ssh_config")
			userConfig := filepath.Join(l.Home, ".ssh", "config")
			switch {
			case install:
				changed, err := sshkeys.Install(userConfig, sshConfig)
				if err != nil {
					return err
				}
				if changed {
					fmt.Fprintf(a.stdout, "added Include %s to %s\n", sshConfig, userConfig)
				} else {
					fmt.Fprintf(a.stdout, "%s already includes %s\n", userConfig, sshConfig)
				}
			case uninstall:
				removed, err := sshkeys.Uninstall(userConfig)
				if err != nil {
					return err
				}
				if removed {
					fmt.Fprintf(a.stdout, "removed banger's Include from %s\n", userConfig)
				} else {
					fmt.Fprintf(a.stdout, "%s has no banger Include\n", userConfig)
				}
			default:
				fmt.Fprintf(a.stdout, "Include %s\n", sshConfig)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&install, "install", false, "add the Include to ~/.ssh/config")
	c.Flags().BoolVar(&uninstall, "uninstall", false, "remove the Include from ~/.ssh/config")
	return c
}
