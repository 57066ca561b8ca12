package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// readmeCommands returns the command paths the README's "## Commands" section documents: every
// code span starting with "banger", read up to its first word that is not a command name
// (VM, NAME, a flag, a bracket); "a\|b" alternatives count for each.
func readmeCommands(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "\n## Commands\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Commands" section`)
	}
	section := readme[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	word := regexp.MustCompile(`^[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*$`)
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("`banger ([^`]*)`").FindAllStringSubmatch(section, -1) {
		paths := []string{""}
		for _, f := range strings.Fields(strings.ReplaceAll(m[1], `\|`, "|")) {
			if !word.MatchString(f) {
				break
			}
			var next []string
			for _, p := range paths {
				for _, alt := range strings.Split(f, "|") {
					next = append(next, strings.TrimSpace(p+" "+alt))
				}
			}
			paths = next
		}
		for _, p := range paths {
			out[p] = true
		}
	}
	return out
}

// TestEveryCommandIsInTheReadme is the docs drift test for commands: every command a user can
// run (leaves of the tree, aliases like ps included) is in the README's command table.
func TestEveryCommandIsInTheReadme(t *testing.T) {
	documented := readmeCommands(t)
	n := 0
	walk((&app{}).rootCmd(), func(c *cobra.Command) {
		if c.HasSubCommands() || !c.HasParent() || c.Hidden || c.Name() == "help" {
			return
		}
		n++
		path := strings.TrimPrefix(c.CommandPath(), "banger ")
		if !documented[path] {
			t.Errorf("%q is not in README.md's command table (## Commands): add a row with `banger %s …`", c.CommandPath(), path)
		}
	})
	if n < 30 {
		t.Errorf("walked %d commands, want at least 30", n)
	}
}

func TestReadmeCommandsParser(t *testing.T) {
	got := readmeCommands(t)
	for _, want := range []string{"vm run", "ps", "completion zsh", "image pull", "ssh-config", "daemon stop"} {
		if !got[want] {
			t.Errorf("the README parser did not find %q in the command table (found %d paths)", want, len(got))
		}
	}
	for _, bogus := range []string{"vm run PATH", "image pull NAME", "vm"} {
		if got[bogus] {
			t.Errorf("the README parser took %q for a command", bogus)
		}
	}
}
