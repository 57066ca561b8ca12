package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
)

// TestCompletionScripts generates the script of every shell and has each shell that is
// installed check its syntax.
func TestCompletionScripts(t *testing.T) {
	checks := map[string][]string{
		"bash": {"bash", "-n"},
		"zsh":  {"zsh", "-n"},
		"fish": {"fish", "--no-execute"},
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		t.Run(shell, func(t *testing.T) {
			r := runCLI(t, "completion", shell)
			if r.code != ExitOK || r.stderr != "" {
				t.Fatalf("banger completion %s: exit %d, stderr %q", shell, r.code, r.stderr)
			}
			if len(r.stdout) < 1000 || !strings.Contains(r.stdout, "banger") || !strings.Contains(r.stdout, "__complete") {
				t.Fatalf("banger completion %s printed %d bytes, not a completion script for banger:\n%.300s", shell, len(r.stdout), r.stdout)
			}
			check, ok := checks[shell]
			if !ok {
				return // no PowerShell to check with on Linux hosts
			}
			bin, err := exec.LookPath(check[0])
			if err != nil {
				t.Skipf("%s is not installed; its script is generated but not syntax-checked (apt-get install %s)", check[0], check[0])
			}
			file := filepath.Join(t.TempDir(), "banger."+shell)
			if err := os.WriteFile(file, []byte(r.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, append(check[1:], file)...).CombinedOutput()
			if err != nil {
				t.Errorf("%s %s: %v\n%s", strings.Join(check, " "), file, err, out)
			}
		})
	}
}

// TestCompletionHelpHasLoadingRecipes checks that each shell's help says where its script goes.
func TestCompletionHelpHasLoadingRecipes(t *testing.T) {
	for shell, want := range map[string]string{
		"bash":       "/etc/bash_completion.d/banger",
		"zsh":        "~/.zfunc/_banger",
		"fish":       "~/.config/fish/completions/banger.fish",
		"powershell": "Invoke-Expression",
	} {
		r := runCLI(t, "completion", shell, "--help")
		if r.code != ExitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("banger completion %s --help (exit %d) does not mention %q:\n%s", shell, r.code, want, r.stdout)
		}
	}
}

// complete runs `banger __complete ARGS…` and returns the offered words (descriptions cut)
// and the directive line.
func complete(t *testing.T, run func(t *testing.T, args ...string) result, args ...string) ([]string, string) {
	t.Helper()
	r := run(t, append([]string{"__complete"}, args...)...)
	if r.code != ExitOK {
		t.Fatalf("banger __complete %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	directive := lines[len(lines)-1]
	var words []string
	for _, l := range lines[:len(lines)-1] {
		w, _, _ := strings.Cut(l, "\t")
		words = append(words, w)
	}
	return words, directive
}

const noFileComp = ":4" // cobra.ShellCompDirectiveNoFileComp

// TestNameCompletionWithDaemonDown: without a daemon, names complete to nothing, at once, with
// no file names and without starting the daemon (runCLI fails the test if anything starts it).
// Each completion runs on synctest's clock, which moves only while every goroutine waits: "at
// once" is exactly no time on it, so a completion that waits or retries on a timer fails.
func TestNameCompletionWithDaemonDown(t *testing.T) {
	for _, args := range [][]string{
		{"vm", "show", ""},
		{"vm", "delete", "dev", ""},
		{"vm", "exec", ""},
		{"image", "show", ""},
		{"image", "pull", ""},
		{"kernel", "rm", ""},
		{"vm", "create", "--image", ""},
		{"vm", "run", "--kernel", ""},
		{"vm", "list", ""},
		{"vm", "create", "--name", ""},
		{"snapshot", "rm", ""},
		{"vm", "create", "--from-snapshot", ""},
	} {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			words, directive := complete(t, runCLI, args...)
			if took := time.Since(start); took != 0 {
				t.Errorf("banger __complete %s waited %s with no daemon; want an answer at once", strings.Join(args, " "), took)
			}
			if len(words) != 0 || directive != noFileComp {
				t.Errorf("banger __complete %s with no daemon: %q, directive %s; want nothing and %s (no file names)", strings.Join(args, " "), words, directive, noFileComp)
			}
		})
	}
}

// fakeDaemon serves the few routes completion uses on a unix socket. With hung set it accepts
// connections and never answers, counting in hung the requests it left hanging.
func fakeDaemon(t *testing.T, socket string, hung *atomic.Int32) {
	t.Helper()
	mux := http.NewServeMux()
	reply := func(route api.Route, v any) {
		mux.HandleFunc(string(route), func(w http.ResponseWriter, r *http.Request) {
			if hung != nil {
				hung.Add(1)
				<-r.Context().Done()
				return
			}
			_ = json.NewEncoder(w).Encode(v)
		})
	}
	reply(api.RouteListVMs, []api.VM{{Name: "dev", State: "running", Image: "debian-bookworm"}, {Name: "old", State: "stopped", Image: "alpine"}, {Name: "devbox", State: "running"}})
	reply(api.RouteListImages, []api.Image{{Name: "debian-bookworm"}, {Name: "alpine"}})
	reply(api.RouteListKernels, []api.Kernel{{Name: "debian-6.1", Release: "6.1.0-28-cloud-amd64"}})
	reply(api.RouteListSnapshots, []api.Snapshot{{Name: "dev-ready", Kind: "user", From: "dev"}, {Name: "boot-0123", Kind: "boot"}})
	reply(api.RouteCatalog, api.Catalog{
		Images:  []api.CatalogEntry{{Name: "debian-bookworm", Kind: "recipe"}, {Name: "devbox", Kind: "oci", Origin: "registry.example/devbox:3"}},
		Kernels: []api.CatalogEntry{{Name: "debian-6.1", Kind: "debian"}, {Name: "fc-6.1", Kind: "bundle"}},
	})
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
}

// withDaemon returns a runner like runCLI whose BANGER_SOCKET has a fake daemon on it (a hung
// one with hung set, see fakeDaemon).
func withDaemon(hung *atomic.Int32) func(t *testing.T, args ...string) result {
	return func(t *testing.T, args ...string) result {
		t.Helper()
		dir := t.TempDir()
		socket := filepath.Join(dir, "bangerd.sock")
		fakeDaemon(t, socket, hung)
		t.Setenv("HOME", dir)
		t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
		t.Setenv("BANGER_SOCKET", socket)
		t.Setenv("PATH", dir) // no bangerd to start
		var stdout, stderr bytes.Buffer
		a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
		root := a.rootCmd()
		root.SetArgs(args)
		code := a.exitCode(root.Execute())
		return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	}
}

func TestNameCompletionFromDaemon(t *testing.T) {
	run := withDaemon(nil)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "show", ""}, "dev devbox old"},
		{[]string{"vm", "show", "de"}, "dev devbox"},
		{[]string{"vm", "show", "dev", ""}, ""},                   // one VM only
		{[]string{"vm", "stop", ""}, "dev devbox"},                // running ones
		{[]string{"vm", "start", ""}, "old"},                      // stopped ones
		{[]string{"vm", "delete", "dev", ""}, "devbox old"},       // many, not twice
		{[]string{"vm", "exec", "dev", "--", ""}, ""},             // the guest command
		{[]string{"image", "show", ""}, "alpine debian-bookworm"}, // installed only
		{[]string{"image", "pull", ""}, "alpine debian-bookworm devbox"},
		{[]string{"vm", "create", "--image", ""}, "alpine debian-bookworm devbox"},
		{[]string{"vm", "run", "--kernel", ""}, "debian-6.1 fc-6.1"},
		{[]string{"kernel", "rm", ""}, "debian-6.1"},
		{[]string{"kernel", "pull", "f"}, "fc-6.1"},
		{[]string{"kernel", "import", ""}, ""}, // a new name
		{[]string{"snapshot", "rm", ""}, "boot-0123 dev-ready"},
		{[]string{"snapshot", "rm", "dev-ready", ""}, "boot-0123"},
		{[]string{"vm", "create", "--from-snapshot", "d"}, "dev-ready"},
		{[]string{"vm", "fork", ""}, "dev devbox"},        // running ones
		{[]string{"vm", "snapshot", ""}, "dev devbox"},    // running ones
		{[]string{"vm", "fork", "dev", "--name", ""}, ""}, // a new name
	}
	for _, tt := range tests {
		words, directive := complete(t, run, tt.args...)
		if got := strings.Join(words, " "); got != tt.want || directive != noFileComp {
			t.Errorf("banger __complete %s: %q, directive %s; want %q, %s", strings.Join(tt.args, " "), got, directive, tt.want, noFileComp)
		}
	}
}

// TestNameCompletionWithHungDaemon: a daemon that accepts and never answers costs one timeout,
// not a hung shell. `image pull` asks two questions (installed images, then the catalog) and
// goes on to the second when the first fails: with one timeout for the whole completion the
// second fails at once, so the daemon is left only one request hanging; a timeout per question
// would leave two, and cost two timeouts.
func TestNameCompletionWithHungDaemon(t *testing.T) {
	var hung atomic.Int32
	words, directive := complete(t, withDaemon(&hung), "image", "pull", "")
	// At most one: on a loaded machine the first request may not even have reached the
	// daemon before the completion gave up.
	if n := hung.Load(); n > 1 {
		t.Errorf("completion left %d requests hanging on the daemon; want at most 1: one timeout for the whole completion", n)
	}
	if len(words) != 0 || directive != noFileComp {
		t.Errorf("completion against a hung daemon offered %q (%s)", words, directive)
	}
}

// TestCompletionCoversNameCommands: every command whose usage takes a VM or a NAME completes
// it, and every entry of argCompletions names a command that exists.
func TestCompletionCoversNameCommands(t *testing.T) {
	root := (&app{}).rootCmd()
	paths := map[string]bool{}
	walk(root, func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), "banger ")
		paths[path] = true
		fields := strings.Fields(c.Use)
		if len(fields) < 2 || !c.Runnable() || c.HasSubCommands() {
			return
		}
		first := strings.Trim(fields[1], "[].…")
		if (first == "VM" || strings.HasPrefix(first, "NAME")) && c.ValidArgsFunction == nil {
			t.Errorf("%q takes %s but completes no names: add it to argCompletions in completion.go", c.CommandPath(), fields[1])
		}
	})
	for p := range argCompletions {
		if !paths[p] {
			t.Errorf("argCompletions has %q, which is no command", p)
		}
	}
}

// The bash script completes in a plain bash without the bash-completion package: every TAB
// used to print "_get_comp_words_by_ref: command not found".
func TestBashCompletionWorksWithoutBashCompletionPackage(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	a := &app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	var script bytes.Buffer
	if err := genBash(a.rootCmd(), &script); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "banger.bash"), script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// The script asks `banger __complete …`; this banger answers as the real one would.
	fake := "#!/bin/sh\nprintf 'vm\\nversion-x\\nimage\\n:4\\n'\n"
	if err := os.WriteFile(filepath.Join(dir, "banger"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", `source ./banger.bash
COMP_WORDS=(banger v); COMP_CWORD=1; COMP_LINE="banger v"; COMP_POINT=8
__start_banger banger v banger 2>&1 | grep -v 'compopt: not currently executing'
__start_banger banger v banger 2>/dev/null
echo "reply: ${COMPREPLY[*]}"`)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "HOME=" + dir}
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "reply:") {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "not found") || !strings.Contains(string(out), "reply: vm version-x") {
		t.Errorf("completing `banger v` in bash --norc:\n%s", out)
	}
}
