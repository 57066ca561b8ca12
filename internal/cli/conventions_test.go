package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestHelpConventions walks the command tree: every command's examples run banger itself
// (each leaf command's include that command), and every flag says what it does.
func TestHelpConventions(t *testing.T) {
	walk((&app{}).rootCmd(), func(c *cobra.Command) {
		path := c.CommandPath()
		for _, line := range strings.Split(strings.TrimSpace(c.Example), "\n") {
			if !strings.Contains(line, "banger") {
				t.Errorf("%q: example line %q does not run banger", path, line)
			}
		}
		if !c.HasSubCommands() && c.HasParent() && !strings.Contains(c.Example, path) {
			t.Errorf("%q: no example runs %q:\n%s", path, path, c.Example)
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if strings.TrimSpace(f.Usage) == "" {
				t.Errorf("%q: flag --%s has no help", path, f.Name)
			}
		})
	})
}

// TestListAndShowCommandsHaveJSON: every command that lists or shows things takes --json.
func TestListAndShowCommandsHaveJSON(t *testing.T) {
	n := 0
	walk((&app{}).rootCmd(), func(c *cobra.Command) {
		switch c.Name() {
		case "list", "show", "status", "ports", "ps", "doctor":
			n++
			if c.Flags().Lookup("json") == nil {
				t.Errorf("%q lists or shows things but has no --json", c.CommandPath())
			}
		}
	})
	if n < 10 {
		t.Errorf("found %d list/show commands, want at least 10", n)
	}
}

// TestHelpShowsResolvedDefaults: the size, image and kernel flags of vm create say what they
// resolve to on this host.
func TestHelpShowsResolvedDefaults(t *testing.T) {
	r := runCLI(t, "vm", "create", "--help")
	for _, flag := range []string{"--vcpu", "--memory", "--disk-size", "--image", "--kernel"} {
		re := regexp.MustCompile(`(?m)^\s+` + flag + ` .*\[here: [^\]]+\]$`)
		if !re.MatchString(r.stdout) {
			t.Errorf("vm create --help: %s does not show its resolved default:\n%s", flag, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "[here: debian-bookworm]") || !strings.Contains(r.stdout, "[here: 8GiB (auto)]") {
		t.Errorf("vm create --help: want the built-in image and the automatic disk size:\n%s", r.stdout)
	}
}

// TestDaemonStatusWithoutDaemon: status and its JSON form say "not running" and start nothing.
func TestDaemonStatusWithoutDaemon(t *testing.T) {
	r := runCLI(t, "daemon", "status")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "daemon: not running") {
		t.Errorf("daemon status: exit %d, %q", r.code, r.stdout)
	}
	r = runCLI(t, "daemon", "status", "--json")
	if r.code != ExitOK || !strings.Contains(r.stdout, `"running": false`) || !strings.Contains(r.stdout, `"cli": {`) {
		t.Errorf("daemon status --json: exit %d, %q", r.code, r.stdout)
	}
}

// TestNoColorWhenNotATerminal: colour needs a terminal, and NO_COLOR vetoes it even there.
func TestNoColorWhenNotATerminal(t *testing.T) {
	if useColor(&strings.Builder{}) {
		t.Error("useColor on a buffer: want false")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if useColor(f) {
		t.Error("useColor on /dev/null: want false (not a terminal)")
	}
}

// TestDoneLine: long operations end with "banger: <what> in 1.2s" on success, and with nothing
// after a failure (the error is the last word).
func TestDoneLine(t *testing.T) {
	var buf strings.Builder
	r := newRenderer(&buf)
	r.Done(nil, "pulled alpine:3.20")
	if got := buf.String(); !regexp.MustCompile(`^banger: pulled alpine:3\.20 in \d+\.\ds\n$`).MatchString(got) {
		t.Errorf("Done after success printed %q", got)
	}
	buf.Reset()
	r = newRenderer(&buf)
	r.Done(os.ErrNotExist, "pulled alpine:3.20")
	if buf.String() != "" {
		t.Errorf("Done after a failure printed %q, want nothing", buf.String())
	}
}

// TestPanicIsOneLine: a bug that panics prints one "banger:" line and a hint, not a stack trace.
func TestPanicIsOneLine(t *testing.T) {
	t.Setenv("BANGER_DEBUG", "")
	var stderr strings.Builder
	a := &app{stderr: &stderr}
	code := a.guard(func() int { panic("runtime error: index out of range [3] with length 3") })
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if code != ExitError || len(lines) != 2 || !strings.HasPrefix(lines[0], "banger: internal error: runtime error") || !strings.HasPrefix(lines[1], "hint: ") {
		t.Errorf("guard after a panic: exit %d, stderr %q", code, stderr.String())
	}
	if code := a.guard(func() int { return 42 }); code != 42 {
		t.Errorf("guard without a panic: exit %d, want the run's 42", code)
	}
}
