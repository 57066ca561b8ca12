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
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/termtext"
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

// exitStatusCode turns a status that came from the guest into a process exit status. Only
// 0–255 survive exit(2) (256 would become 0, a success); anything outside is reported as 255.
func exitStatusCode(code int) int {
	if code < 0 || code > 255 {
		return 255
	}
	return code
}

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
	return a.guard(func() int {
		root := a.rootCmd()
		root.SetArgs(args)
		return a.exitCode(root.Execute())
	})
}

// guard runs the CLI and turns a panic — a bug in banger — into one "banger:" line and exit 1
// instead of a Go stack trace; BANGER_DEBUG=1 lets the panic through with its trace.
func (a *app) guard(run func() int) (code int) {
	if os.Getenv("BANGER_DEBUG") != "" {
		return run()
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(a.stderr, "banger: internal error: %s\nhint: this is a bug in banger; run the command again with BANGER_DEBUG=1 for the stack trace and report it\n", oneLine(fmt.Sprint(r)))
			code = ExitError
		}
	}()
	return run()
}

func (a *app) exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return exitStatusCode(ee.code)
	}
	var ue *usageError
	var ae *api.Error
	isUsage := errors.As(err, &ue) || isCobraUsage(err) || (errors.As(err, &ae) && ae.Code == "usage")
	// err.Error() keeps any context wrapped around a daemon error; an *api.Error's own text
	// is its Message.
	fmt.Fprintf(a.stderr, "banger: %s\n", oneLine(err.Error()))
	if errors.As(err, &ae) && ae.Hint != "" {
		fmt.Fprintf(a.stderr, "hint: %s\n", oneLine(ae.Hint))
	}
	if isUsage {
		fmt.Fprintln(a.stderr, "hint: run `banger --help` (or add --help to the command) for usage")
		return ExitUsage
	}
	return ExitError
}

// oneLine folds a multi-line message into one line: its non-blank lines, trimmed, joined
// with "; ".
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	// Errors can quote the guest (agent messages, console lines): escape what a terminal
	// would act on.
	return termtext.CleanLine(strings.Join(parts, "; "))
}

// isCobraUsage recognises the command-line errors cobra makes where banger cannot type them
// (required flags and flag groups, should a command use them). Flag errors (FlagErrorFunc),
// argument errors (typeUsageErrors) and unknown commands (groupRun) are usageErrors already.
// Only the start of the message is compared, so that an error that merely mentions such a
// phrase, e.g. a daemon's "fallocate: invalid argument", is not taken for a usage error.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command ", "unknown flag", "unknown shorthand flag", "flag needs an argument", "required flag(s) ", "if any flags in the group ", "at least one of the flags in the group "} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// groupRun is the RunE of the commands that only group others (banger, banger vm, …). Alone
// they print their help; with an argument that names no subcommand they fail with a usage
// error. Without it cobra prints the help and exits 0 for `banger vm bogus`.
func groupRun(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return c.Help()
	}
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
	}
	return &usageError{msg}
}

// typeUsageErrors makes the argument errors of c and every command below it usageErrors
// ("accepts 1 arg(s), received 0") and gives every command that only groups others groupRun.
func typeUsageErrors(c *cobra.Command) {
	for _, sub := range c.Commands() {
		typeUsageErrors(sub)
	}
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.RunE = groupRun
		// Arguments go to groupRun: cobra's own check (legacyArgs) would only catch them on
		// the root command, and in a message of several lines.
		c.Args = cobra.ArbitraryArgs
	}
	if check := c.Args; check != nil {
		c.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return argsError(c, args, err)
			}
			return nil
		}
	}
}

// argsError says which argument is missing, or that there are too many, from the command's
// Use line ("show VM", "forward VM [BIND:]HOSTPORT:GUESTPORT"), where cobra says
// "accepts 1 arg(s), received 0".
func argsError(c *cobra.Command, args []string, err error) error {
	path := strings.TrimPrefix(c.CommandPath(), "banger ")
	want := positionals(c.Use)
	if len(args) < len(want) {
		w := want[len(args)]
		what, see := describeArg(c, w)
		return usagef("%s needs %s%s", path, what, see)
	}
	if len(want) == 0 && len(args) > 0 {
		return usagef("%s takes no arguments; got %s", path, strings.Join(quoteAll(args), " "))
	}
	if len(want) > 0 && len(args) > len(want) && !strings.HasSuffix(want[len(want)-1], "...") && !strings.HasSuffix(want[len(want)-1], "…") {
		return usagef("%s takes %d argument%s (%s); got %d: %s", path, len(want), map[bool]string{true: "s"}[len(want) > 1], strings.Join(want, " "), len(args), strings.Join(quoteAll(args), " "))
	}
	return &usageError{err.Error()}
}

// positionals are the required arguments of a Use line: the words after the command's name up
// to the first flag, option in brackets or "--".
func positionals(use string) []string {
	var out []string
	for _, w := range strings.Fields(use)[1:] {
		if strings.HasPrefix(w, "-") || strings.HasPrefix(w, "[-") || w == "[flags]" || (strings.HasPrefix(w, "[") && strings.HasSuffix(w, "]")) {
			break
		}
		out = append(out, w)
	}
	return out
}

// describeArg names what an argument of the Use line is, and where to find one.
func describeArg(c *cobra.Command, w string) (what, see string) {
	base := strings.TrimRight(w, ".…")
	base, _, _ = strings.Cut(base, "[")
	kind := ""
	if c.Parent() != nil {
		kind = c.Parent().Name() // vm, image, kernel, workspace…
	}
	switch {
	case base == "VM":
		return "a VM name", "; see `banger vm list`"
	case base == "NAME" && (kind == "image" || kind == "kernel" || kind == "snapshot"):
		return "a" + map[bool]string{true: "n"}[kind == "image"] + " " + kind + " name", "; see `banger " + kind + " list`"
	case base == "NAME|OCI-REF":
		return "an image name or an OCI reference (e.g. docker.io/library/alpine:3.20)", "; see `banger image list --available`"
	case strings.Contains(base, "|"):
		return "one of " + strings.ReplaceAll(base, "|", ", "), ""
	case base == "FILE":
		return "a file", ""
	case strings.Contains(w, "HOSTPORT:GUESTPORT"):
		return "[BIND:]HOSTPORT:GUESTPORT (e.g. 8080:80)", ""
	}
	return base, ""
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strconv.Quote(a)
	}
	return out
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "banger",
		Short: "One-command development sandboxes in microVMs",
		Long: `banger runs your repository's commands in a fresh microVM (Debian with systemd) in seconds.
A daemon (bangerd) is started on first use; it keeps kernels, images and VMs under your XDG
state directory. ` + "`banger doctor`" + ` checks that this host has what banger needs.

Exit status: 0 when all went well; 1 when banger failed (the message on stderr starts with
"banger:" and may be followed by a "hint:" line); 2 when the command line was wrong; and for
commands run in a VM (vm run, vm exec, vm ssh) the command's own status, 128+n when it was
killed by signal n. Colour is used on terminals only, never with NO_COLOR set.`,
		Example: `  banger vm run --rm -- sh -c 'echo hello from $(hostname)'
  banger vm list
  banger doctor`,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("banger {{.Version}}\n")
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err.Error()} })
	vm := a.vmCmd()
	root.AddCommand(vm, a.kernelCmd(), a.imageCmd(), a.snapshotCmd(), a.daemonCmd(), a.sshConfigCmd(), a.systemCmd(), a.doctorCmd(), a.completionCmd())
	// `banger ps` is `banger vm list`.
	ps := a.vmListCmd()
	ps.Use = "ps"
	ps.Aliases = nil
	ps.Short = "List VMs (same as `banger vm list`)"
	root.AddCommand(ps)
	typeUsageErrors(root)
	// banger's own completion command replaces cobra's (which would appear only at Execute).
	root.CompletionOptions.DisableDefaultCmd = true
	a.registerCompletions(root)
	a.showResolvedDefaults(root)
	// groupRun makes the group commands runnable, and cobra's usage would then show
	// "banger vm [flags]" above "banger vm [command]"; a group is used with a command only.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"{{if .Runnable}}\n  {{.UseLine}}{{end}}",
		"{{if and .Runnable (not .HasAvailableSubCommands)}}\n  {{.UseLine}}{{end}}", 1))
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
	// Test hooks (honoured only by a daemon started with BANGER_TEST_HOOKS=1).
	if f := os.Getenv("BANGER_INJECT_FAULT"); f != "" {
		c.Header.Set(api.HeaderInjectFault, f)
	}
	if p := os.Getenv("BANGER_PAUSE_AT"); p != "" {
		c.Header.Set(api.HeaderPauseAt, p)
	}
	_, err = c.Ensure(ctx, client.StartOptions{
		StateDir: l.StateDir,
		LogPath:  l.LogFile(),
		Notice:   func(msg string) { fmt.Fprintf(a.stderr, "banger: %s\n", termtext.CleanLine(msg)) },
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}
