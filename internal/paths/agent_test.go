package paths

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// files creates each file (empty) under root, with its directories.
func files(t *testing.T, root string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(root, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAgent(t *testing.T) {
	installed, tree, links := t.TempDir(), t.TempDir(), t.TempDir()
	files(t, installed, "bin/bangerd", "lib/banger/banger-agent")
	files(t, tree, "bin/bangerd", "bin/banger-agent")
	// bangerd reached through a symlink finds the agent of the install the link points into.
	if err := os.Symlink(filepath.Join(installed, "bin/bangerd"), filepath.Join(links, "bangerd")); err != nil {
		t.Fatal(err)
	}
	none := func(string) string { return "" }
	only := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvAgent {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name, daemon string
		getenv       func(string) string
		want, err    string
	}{
		{"installed layout", filepath.Join(installed, "bin/bangerd"), none, filepath.Join(installed, "lib/banger/banger-agent"), ""},
		{"build tree", filepath.Join(tree, "bin/bangerd"), none, filepath.Join(tree, "bin/banger-agent"), ""},
		{"symlinked daemon", filepath.Join(links, "bangerd"), none, filepath.Join(installed, "lib/banger/banger-agent"), ""},
		{"override", filepath.Join(installed, "bin/bangerd"), only(filepath.Join(tree, "bin/banger-agent")), filepath.Join(tree, "bin/banger-agent"), ""},
		{"nowhere", filepath.Join(links, "bin/bangerd"), none, "", "banger-agent not found at " + filepath.Join(links, "lib/banger/banger-agent") + " or " + filepath.Join(links, "bin/banger-agent")},
		{"override missing", filepath.Join(installed, "bin/bangerd"), only(filepath.Join(tree, "missing")), "", "BANGER_AGENT=" + filepath.Join(tree, "missing") + ": "},
		{"override a directory", filepath.Join(installed, "bin/bangerd"), only(tree), "", "is a directory"},
	} {
		got, err := Agent(tc.daemon, tc.getenv)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%s: Agent = %q, %v; want %q", tc.name, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: Agent = %q, %v; want an error with %q", tc.name, got, err, tc.err)
		}
	}
}
