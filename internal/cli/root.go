// Package cli is the banger command line (cobra): it parses what the user typed, talks to the
// daemon through package client, renders progress on stderr and keeps stdout for the
// output of commands run in guests.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/version"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // banger itself failed
	ExitUsage = 2 // the command line was wrong
)

// exitError carries a specific exit status (a guest command's own status) out of a command.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageError marks command-line mistakes (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// app is what every command shares.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// Main runs the CLI with args (without the program name) and returns the process exit code.
func Main(args []string) int {
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	err := root.Execute()
	return a.exitCode(err)
}

func (a *app) exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue *usageError
	isUsage := errors.As(err, &ue) || isCobraUsage(err)
	msg, hint := err.Error(), ""
	var ae *api.Error
	if errors.As(err, &ae) {
		msg, hint = ae.Message, ae.Hint
	}
	fmt.Fprintf(a.stderr, "banger: %s\n", oneLine(msg))
	if hint != "" {
		fmt.Fprintf(a.stderr, "hint: %s\n", hint)
	}
	if isUsage {
		fmt.Fprintln(a.stderr, "run `banger --help` (or add --help to the command) for usage")
		return ExitUsage
	}
	return ExitError
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }

// isCobraUsage recognises cobra's own argument and flag errors.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "invalid argument", "flag needs an argument", "accepts ", "requires at least", "requires at most"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "banger",
		Short: "One-command development sandboxes in microVMs",
		Long: `banger runs your repository's commands in a fresh microVM (Debian with systemd) in seconds.
A daemon (bangerd) is started on first use; it keeps kernels, images and VMs under your XDG
state directory.`,
		Example: `  banger vm run --rm -- sh -c 'echo hello from $(hostname)'
  banger vm list
  banger kernel pull debian-6.1`,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("banger {{.Version}}\n")
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err.Error()} })
	vm := a.vmCmd()
	root.AddCommand(vm, a.kernelCmd(), a.imageCmd(), a.daemonCmd())
	// `banger ps` is `banger vm list`.
	ps := a.vmListCmd()
	ps.Use = "ps"
	ps.Short = "List VMs (same as `banger vm list`)"
	root.AddCommand(ps)
	return root
}

// connect returns a client for this user's daemon, starting or restarting it as needed.
func (a *app) connect(ctx context.Context) (*client.Client, error) {
	l, err := paths.FromEnv()
	if err != nil {
		return nil, err
	}
	if err := paths.CheckSocketPath(l.Socket); err != nil {
		return nil, err
	}
	c := client.New(l.Socket)
	if f := os.Getenv("BANGER_INJECT_FAULT"); f != "" {
		c.Header.Set(api.HeaderInjectFault, f)
	}
	_, err = c.Ensure(ctx, client.StartOptions{
		StateDir: l.StateDir,
		LogPath:  l.LogFile(),
		Notice:   func(msg string) { fmt.Fprintf(a.stderr, "banger: %s\n", msg) },
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}
