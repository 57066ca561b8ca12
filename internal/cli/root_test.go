package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
)

// helpLine is the last line of every usage error.
const helpLine = "hint: run `banger --help` (or add --help to the command) for usage"

// result is what one banger invocation produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs banger with args the way Main does (rootCmd, Execute, exitCode), with stdio in
// buffers, in an environment where no daemon can be reached or started: HOME, the XDG
// directories and BANGER_SOCKET point into a temporary directory, and PATH holds only a fake
// bangerd that leaves a marker file if anything runs it (a.connect would). After the command
// the test fails if the marker, the socket or banger's state directory exists: the commands
// tested here must fail before they need the daemon.
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	return runCLIWithPath(t, "", args...)
}

// runCLIWithPath is runCLI with more directories (extra) after the fake bangerd's in PATH.
func runCLIWithPath(t *testing.T, extra string, args ...string) result {
	t.Helper()
	dir := t.TempDir()
	marker := filepath.Join(dir, "bangerd-was-started")
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := fmt.Sprintf("#!/bin/sh\n: > %q\nexit 1\n", marker)
	if err := os.WriteFile(filepath.Join(bin, "bangerd"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "run", "bangerd.sock")
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	t.Setenv("BANGER_SOCKET", socket)
	if extra != "" {
		t.Setenv("PATH", bin+":"+extra)
	} else {
		t.Setenv("PATH", bin)
	}

	var stdout, stderr bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	code := a.exitCode(root.Execute())

	for _, p := range []string{marker, socket, filepath.Join(dir, "state", "banger")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("banger %s: %s exists: the command reached the daemon (a.connect); unit tests must not", strings.Join(args, " "), p)
		}
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestExitCode(t *testing.T) {
	apiErr := &api.Error{Code: "not_found", Message: `kernel "debian-9" not found`, Hint: "run `banger kernel list`"}
	tests := []struct {
		name       string
		err        error
		wantCode   int
		wantStderr string
	}{
		{"no error is success and prints nothing", nil, 0, ""},
		{"a guest command's status is passed through silently", &exitError{3}, 3, ""},
		{"a status of 128+n (killed by signal n) is passed through", &exitError{130}, 130, ""},
		{"a wrapped exit status is still found", fmt.Errorf("run: %w", &exitError{42}), 42, ""},
		{"a usage error exits 2 with the help line", usagef("--memory: bad size"), 2,
			"banger: --memory: bad size\n" + helpLine + "\n"},
		{"a wrapped usage error is still a usage error", fmt.Errorf("vm run: %w", usagef("no command")), 2,
			"banger: vm run: no command\n" + helpLine + "\n"},
		{"a daemon error with a hint prints the hint on its own line and exits 1", apiErr, 1,
			"banger: kernel \"debian-9\" not found\nhint: run `banger kernel list`\n"},
		{"a wrapped daemon error keeps its context and its hint", fmt.Errorf("pull: %w", apiErr), 1,
			"banger: pull: kernel \"debian-9\" not found\nhint: run `banger kernel list`\n"},
		{"a daemon's usage error (a bad flag value it found) exits 2", &api.Error{Code: "usage", Message: "--vcpu flag: 500 vCPUs is more than the host's 2 CPUs; use at most 2"}, 2,
			"banger: --vcpu flag: 500 vCPUs is more than the host's 2 CPUs; use at most 2\n" + helpLine + "\n"},
		{"a daemon error without a hint prints no hint line", &api.Error{Code: "internal", Message: "disk full"}, 1,
			"banger: disk full\n"},
		{"a multi-line message is folded to one line without blank parts", errors.New("first\n\n  second\t\nthird\n"), 1,
			"banger: first; second; third\n"},
		{"a multi-line hint is folded to one line", &api.Error{Message: "boom", Hint: "do this\nthen that"}, 1,
			"banger: boom\nhint: do this; then that\n"},
		{"a daemon error that mentions 'invalid argument' is not a usage error",
			&api.Error{Code: "internal", Message: "create disk: fallocate: invalid argument"}, 1,
			"banger: create disk: fallocate: invalid argument\n"},
		{"a runtime error that mentions 'accepts ' is not a usage error", errors.New("the image accepts 1 disk"), 1,
			"banger: the image accepts 1 disk\n"},
		{"cobra's unknown-command text is recognised even untyped", errors.New(`unknown command "x" for "banger"`), 2,
			"banger: unknown command \"x\" for \"banger\"\n" + helpLine + "\n"},
		{"cobra's required-flag text is recognised even untyped", errors.New(`required flag(s) "name" not set`), 2,
			"banger: required flag(s) \"name\" not set\n" + helpLine + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			a := &app{stderr: &stderr}
			if got := a.exitCode(tt.err); got != tt.wantCode {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.wantCode)
			}
			if got := stderr.String(); got != tt.wantStderr {
				t.Errorf("exitCode(%v) printed\n%q\nwant\n%q", tt.err, got, tt.wantStderr)
			}
		})
	}
}

// TestCobraErrorsAreUsageErrors drives the real command tree into each kind of error that
// cobra itself produces (flags, arguments, unknown commands) and checks each exits 2 with
// one "banger: " line and the help line.
func TestCobraErrorsAreUsageErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"unknown top-level command, with a suggestion", []string{"vmm"}, `unknown command "vmm" for "banger"; did you mean vm?`},
		{"unknown top-level command, no suggestion", []string{"frobnicate"}, `unknown command "frobnicate" for "banger"`},
		{"unknown subcommand of a group", []string{"vm", "bogus"}, `unknown command "bogus" for "banger vm"`},
		{"misspelt subcommand of a group, with a suggestion", []string{"kernel", "pul"}, `unknown command "pul" for "banger kernel"; did you mean pull?`},
		{"argument to a command that takes none", []string{"daemon", "status", "extra"}, `daemon status takes no arguments; got "extra"`},
		{"unknown flag", []string{"vm", "list", "--bogus"}, "unknown flag: --bogus"},
		{"unknown shorthand flag", []string{"vm", "run", "-z", "--", "true"}, "unknown shorthand flag: 'z' in -z"},
		{"flag value of the wrong type", []string{"vm", "run", "--vcpu", "two", "--", "true"}, `invalid argument "two" for "--vcpu" flag`},
		{"flag without its value", []string{"vm", "run", "--memory"}, "flag needs an argument: --memory"},
		{"missing argument", []string{"kernel", "pull"}, "kernel pull needs a kernel name; see `banger kernel list`"},
		{"too many arguments", []string{"kernel", "pull", "a", "b"}, `kernel pull takes 1 argument (NAME); got 2: "a" "b"`},
		{"nothing to delete", []string{"vm", "delete"}, "vm delete needs a VM name; see `banger vm list`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.args...)
			if r.code != ExitUsage {
				t.Errorf("banger %s: exit %d, want %d (usage); stderr:\n%s", strings.Join(tt.args, " "), r.code, ExitUsage, r.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "banger: ") || lines[1] != helpLine {
				t.Fatalf("banger %s: stderr =\n%s\nwant one \"banger: …\" line, then %q", strings.Join(tt.args, " "), r.stderr, helpLine)
			}
			if !strings.Contains(lines[0], tt.wantMsg) {
				t.Errorf("banger %s: stderr line %q does not contain %q", strings.Join(tt.args, " "), lines[0], tt.wantMsg)
			}
			if r.stdout != "" {
				t.Errorf("banger %s: stdout = %q, want nothing (usage errors go to stderr)", strings.Join(tt.args, " "), r.stdout)
			}
		})
	}
}

// walk calls fn for c and every command below it.
func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

// TestGroupCommands checks every command that only groups others (banger, banger vm, …):
// alone it prints its help and exits 0; with an unknown subcommand it is a usage error (cobra
// alone would print the help and exit 0); its usage shows "CMD [command]" but no "CMD [flags]"
// line.
func TestGroupCommands(t *testing.T) {
	var groups [][]string
	walk((&app{}).rootCmd(), func(c *cobra.Command) {
		if c.HasSubCommands() {
			groups = append(groups, strings.Fields(c.CommandPath())[1:])
		}
	})
	if len(groups) < 5 {
		t.Fatalf("found %d group commands (%v), want at least banger, vm, kernel, image, daemon", len(groups), groups)
	}
	for _, g := range groups {
		path := strings.Join(append([]string{"banger"}, g...), " ")
		t.Run(path, func(t *testing.T) {
			r := runCLI(t, g...)
			if r.code != ExitOK || r.stderr != "" {
				t.Errorf("%s: exit %d, stderr %q; want exit 0 and nothing on stderr", path, r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, "Usage:\n  "+path+" [command]\n") {
				t.Errorf("%s: stdout is not its help (no %q):\n%s", path, path+" [command]", r.stdout)
			}
			if strings.Contains(r.stdout, path+" [flags]") {
				t.Errorf("%s: help shows %q, but a group is used with a subcommand only:\n%s", path, path+" [flags]", r.stdout)
			}

			r = runCLI(t, append(g, "no-such-subcommand")...)
			want := fmt.Sprintf("banger: unknown command %q for %q\n%s\n", "no-such-subcommand", path, helpLine)
			if r.code != ExitUsage || r.stderr != want {
				t.Errorf("%s no-such-subcommand: exit %d, stderr\n%q\nwant exit %d, stderr\n%q", path, r.code, r.stderr, ExitUsage, want)
			}
		})
	}
}

// TestEveryCommandIsDocumented walks the command tree: every command needs a Short, a Long
// description and an Example.
func TestEveryCommandIsDocumented(t *testing.T) {
	n := 0
	walk((&app{}).rootCmd(), func(c *cobra.Command) {
		n++
		if strings.TrimSpace(c.Short) == "" {
			t.Errorf("%q has no Short description", c.CommandPath())
		}
		if strings.TrimSpace(c.Long) == "" {
			t.Errorf("%q has no Long description", c.CommandPath())
		}
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%q has no Example", c.CommandPath())
		}
	})
	if n < 12 {
		t.Errorf("walked %d commands, want at least 12 (root, vm run/list/delete, ps, kernel list/pull, image list, daemon status/stop and their groups)", n)
	}
}

func TestVersionFlag(t *testing.T) {
	r := runCLI(t, "--version")
	if r.code != ExitOK {
		t.Errorf("banger --version: exit %d, want 0", r.code)
	}
	if !strings.HasPrefix(r.stdout, "banger ") || strings.Count(r.stdout, "\n") != 1 || !strings.HasSuffix(r.stdout, "\n") {
		t.Errorf("banger --version printed %q, want one line starting with \"banger \"", r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("banger --version: stderr = %q, want nothing", r.stderr)
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"  padded \n", "padded"},
		{"a\nb", "a; b"},
		{"unknown command \"vmm\" for \"banger\"\n\nDid you mean this?\n\tvm\n", "unknown command \"vmm\" for \"banger\"; Did you mean this?; vm"},
		{"\n\n", ""},
	}
	for _, tt := range tests {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// A missing argument is named, with where to find one, and exits 2; cobra's "accepts 1
// arg(s), received 0" reaches no one.
func TestMissingArgumentsSayWhatIsMissing(t *testing.T) {
	for args, want := range map[string]string{
		"vm show":             "banger: vm show needs a VM name; see `banger vm list`\n",
		"vm forward dev":      "banger: vm forward needs [BIND:]HOSTPORT:GUESTPORT (e.g. 8080:80)\n",
		"image show":          "banger: image show needs an image name; see `banger image list`\n",
		"kernel show":         "banger: kernel show needs a kernel name; see `banger kernel list`\n",
		"vm start":            "banger: vm start needs a VM name; see `banger vm list`\n",
		"vm show a b":         "banger: vm show takes 1 argument (VM); got 2: \"a\" \"b\"\n",
		"vm list extra":       "banger: vm list takes no arguments; got \"extra\"\n",
		"image import":        "banger: image import needs a file\n",
		"vm workspace export": "banger: vm workspace export needs a VM name; see `banger vm list`\n",
	} {
		r := runCLI(t, strings.Fields(args)...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, want) {
			t.Errorf("banger %s: exit %d stderr %q; want 2 and %q", args, r.code, r.stderr, want)
		}
	}
	// No command anywhere lets cobra's own wording through.
	a := &app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	walk(a.rootCmd(), func(c *cobra.Command) {
		if c.Args == nil || c.HasSubCommands() {
			return
		}
		for _, args := range [][]string{nil, {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}} {
			if err := c.Args(c, args); err != nil && strings.Contains(err.Error(), "arg(s)") {
				t.Errorf("%s with %d arguments: %q", c.CommandPath(), len(args), err)
			}
		}
	})
}
