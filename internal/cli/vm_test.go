package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
)

// TestVMRunUsageErrors checks the `vm run` command lines that are refused before the daemon
// is contacted: each exits 2 and says why.
func TestVMRunUsageErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantMsgs []string
	}{
		{"memory that is not a size", []string{"vm", "run", "--memory", "lots", "--", "true"}, []string{"--memory", `invalid size "lots"`}},
		{"memory that is not whole MiB suggests the next whole MiB", []string{"vm", "run", "--memory", "1000K", "--", "true"}, []string{"--memory 1000K is not a whole number of MiB", "use e.g. 1M"}},
		{"disk size that is not a size", []string{"vm", "run", "--disk-size", "big", "--", "true"}, []string{"--disk-size", `invalid size "big"`}},
		{"detach and rm", []string{"vm", "run", "-d", "--rm"}, []string{"-d/--detach", "--rm", "pick one"}},
		{"detach and a command", []string{"vm", "run", "-d", "--", "true"}, []string{"-d/--detach does not run a command", "banger vm exec"}},
		{"workspace flags without a workspace", []string{"vm", "run", "--dry-run"}, []string{"need a workspace"}},
		{"from without branch", []string{"vm", "run", ".", "--from", "main"}, []string{"--from", "give --branch too"}},
		{"relative guest path", []string{"vm", "run", ".", "--guest-path", "src"}, []string{"--guest-path", "absolute"}},
		{"two workspaces", []string{"vm", "run", "a", "b"}, []string{"one workspace directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.args...)
			cmdline := "banger " + strings.Join(tt.args, " ")
			if r.code != ExitUsage {
				t.Errorf("%s: exit %d, want %d; stderr:\n%s", cmdline, r.code, ExitUsage, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "banger: ") || !strings.HasSuffix(r.stderr, helpLine+"\n") {
				t.Errorf("%s: stderr =\n%s\nwant a \"banger: \" line and the help line", cmdline, r.stderr)
			}
			for _, m := range tt.wantMsgs {
				if !strings.Contains(r.stderr, m) {
					t.Errorf("%s: stderr =\n%s\nwant it to mention %q", cmdline, r.stderr, m)
				}
			}
			if r.stdout != "" {
				t.Errorf("%s: stdout = %q, want nothing", cmdline, r.stdout)
			}
		})
	}
}

// applySizes registers sizeFlags on a command, parses args as its flags and applies them to
// an empty request.
func applySizes(t *testing.T, args ...string) (api.CreateVMRequest, error) {
	t.Helper()
	var f sizeFlags
	c := &cobra.Command{Use: "test"}
	f.register(c)
	if err := c.ParseFlags(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	var req api.CreateVMRequest
	err := f.apply(c, &req)
	return req, err
}

func ptr[T any](v T) *T { return &v }

// show renders a request's sizes for messages ("<nil>" for unset).
func show(req api.CreateVMRequest) string {
	vcpu, mem, disk := "<nil>", "<nil>", "<nil>"
	if req.VCPU != nil {
		vcpu = fmt.Sprint(*req.VCPU)
	}
	if req.MemoryMiB != nil {
		mem = fmt.Sprint(*req.MemoryMiB)
	}
	if req.DiskBytes != nil {
		disk = fmt.Sprint(*req.DiskBytes)
	}
	return fmt.Sprintf("vcpu=%s memory_mib=%s disk_bytes=%s", vcpu, mem, disk)
}

func TestSizeFlagsApply(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want api.CreateVMRequest
	}{
		{"flags left unset stay nil for the daemon to resolve", nil, api.CreateVMRequest{}},
		{"--vcpu", []string{"--vcpu", "3"}, api.CreateVMRequest{VCPU: ptr(3)}},
		{"--memory with a fraction of GiB", []string{"--memory", "1.5G"}, api.CreateVMRequest{MemoryMiB: ptr(1536)}},
		{"--memory without a suffix means MiB", []string{"--memory", "512"}, api.CreateVMRequest{MemoryMiB: ptr(512)}},
		{"--memory in MiB", []string{"--memory", "768MiB"}, api.CreateVMRequest{MemoryMiB: ptr(768)}},
		{"--disk-size in GiB is bytes", []string{"--disk-size", "4G"}, api.CreateVMRequest{DiskBytes: ptr(4 * bytesize.GiB)}},
		{"--disk-size need not be whole MiB", []string{"--disk-size", "1000K"}, api.CreateVMRequest{DiskBytes: ptr(1000 * bytesize.KiB)}},
		{"all three", []string{"--vcpu", "2", "--memory", "2G", "--disk-size", "8G"},
			api.CreateVMRequest{VCPU: ptr(2), MemoryMiB: ptr(2048), DiskBytes: ptr(8 * bytesize.GiB)}},
		{"an explicit zero is passed on, not dropped", []string{"--vcpu", "0"}, api.CreateVMRequest{VCPU: ptr(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := applySizes(t, tt.args...)
			if err != nil {
				t.Fatalf("apply %v: %v", tt.args, err)
			}
			if show(got) != show(tt.want) {
				t.Errorf("apply %v: %s, want %s", tt.args, show(got), show(tt.want))
			}
		})
	}
}

func TestSizeFlagsApplyErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"memory that is not a size", []string{"--memory", "lots"}, `--memory: invalid size "lots"`},
		{"memory below one MiB", []string{"--memory", "1000K"}, "--memory 1000K is not a whole number of MiB; use e.g. 1M"},
		{"memory between two MiB", []string{"--memory", "1.5M"}, "--memory 1.5M is not a whole number of MiB; use e.g. 2M"},
		{"disk size that is not a size", []string{"--disk-size", "4X"}, `--disk-size: invalid size "4X"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := applySizes(t, tt.args...)
			if err == nil {
				t.Fatalf("apply %v = %s, want an error", tt.args, show(got))
			}
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Errorf("apply %v: error %T %q, want a *usageError (exit 2)", tt.args, err, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("apply %v: error %q, want it to contain %q", tt.args, err, tt.wantMsg)
			}
		})
	}
}

// TestVMRunHasSizeFlags checks that `vm run` registers the flags sizeFlags.apply reads, so
// that testing apply on a command of its own covers `vm run`.
func TestVMRunHasSizeFlags(t *testing.T) {
	run, _, err := (&app{}).rootCmd().Find([]string{"vm", "run"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vcpu", "memory", "disk-size", "rm", "name", "image", "kernel"} {
		if run.Flags().Lookup(name) == nil {
			t.Errorf("vm run has no --%s flag", name)
		}
	}
}

func TestParseForward(t *testing.T) {
	good := []struct{ in, lnet, laddr, rnet, raddr string }{
		{"8080:80", "tcp", "127.0.0.1:8080", "tcp", "127.0.0.1:80"},
		{"0.0.0.0:5432:5432", "tcp", "0.0.0.0:5432", "tcp", "127.0.0.1:5432"},
		{"./docker.sock:/var/run/docker.sock", "unix", "./docker.sock", "unix", "/var/run/docker.sock"},
		{"2375:/var/run/docker.sock", "tcp", "127.0.0.1:2375", "unix", "/var/run/docker.sock"},
	}
	for _, g := range good {
		l, r, err := parseForward(g.in)
		if err != nil || l.network != g.lnet || l.address != g.laddr || r.network != g.rnet || r.address != g.raddr {
			t.Errorf("parseForward(%q) = %+v %+v %v", g.in, l, r, err)
		}
	}
	for _, bad := range []string{"8080", ":80", "8080:", "x:80", "8080:99999", "0:80"} {
		if _, _, err := parseForward(bad); err == nil {
			t.Errorf("parseForward(%q) accepted", bad)
		}
	}
}

func TestSSHArgs(t *testing.T) {
	target := api.SSHTarget{VM: "dev", GuestAddress: "127.0.0.1:22", User: "root", KeyFile: "/k", KnownHosts: "/kh", HostAlias: "dev.vm"}
	got := strings.Join(sshArgs(target, "/usr/bin/banger", false, []string{"uname", "-a"}), " ")
	for _, want := range []string{"-i /k", "UserKnownHostsFile=/kh", "StrictHostKeyChecking=yes", "HostKeyAlias=dev.vm",
		"ProxyCommand=/usr/bin/banger vm ssh-proxy dev", "root@dev.vm -- uname -a"} {
		if !strings.Contains(got, want) {
			t.Errorf("ssh args %q lack %q", got, want)
		}
	}
	if strings.Contains(got, " -t ") {
		t.Errorf("no tty requested but -t given: %q", got)
	}
	if tty := strings.Join(sshArgs(target, "/usr/bin/banger", true, nil), " "); !strings.Contains(tty, " -t ") || strings.Contains(tty, "--") {
		t.Errorf("interactive args: %q", tty)
	}
}

// vm run without PATH inside a git work tree says that nothing was shipped and how to ship it;
// outside one it says nothing.
func TestRunWithoutPathInARepoSaysNothingIsShipped(t *testing.T) {
	repo := t.TempDir()
	if out, err := exec.Command("git", "init", "-q", repo).CombinedOutput(); err != nil {
		t.Skipf("git init: %v %s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(repo, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Join(repo, "sub"))
	var stderr bytes.Buffer
	(&app{stderr: &stderr}).noteUnshippedRepo()
	top, _ := filepath.EvalSymlinks(repo)
	if !strings.Contains(stderr.String(), "nothing of "+top+" is shipped") || !strings.Contains(stderr.String(), "banger vm run . [-- COMMAND]") {
		t.Errorf("in a repo: %q", stderr.String())
	}
	t.Chdir(t.TempDir())
	stderr.Reset()
	(&app{stderr: &stderr}).noteUnshippedRepo()
	if stderr.Len() != 0 {
		t.Errorf("outside a repo: %q, want nothing", stderr.String())
	}
}

// vm, image and kernel show share one layout ("name:  value", empty rows left out), and vm show
// includes the workspace (it was only in --json).
func TestShowCommandsShareOneLayoutAndVMShowHasTheWorkspace(t *testing.T) {
	var out bytes.Buffer
	a := &app{stdout: &out}
	now := time.Now()
	vm := api.VM{Name: "dev", ID: "abc", State: "running", VCPU: 1, MemoryMiB: 1024, DiskBytes: 8 << 30, VMM: "qemu", Accel: "tcg", CreatedAt: now,
		Workspace: &api.Workspace{HostPath: "/home/u/proj", GuestPath: "/root/proj", Head: "0123456789abcdef", Files: 12, Bytes: 3 << 20, ShippedAt: now}}
	if err := a.printVM(vm); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "workspace:") || !strings.Contains(out.String(), "/home/u/proj -> /root/proj") || !strings.Contains(out.String(), "12 files") {
		t.Errorf("vm show lacks the workspace:\n%s", out.String())
	}
	if err := a.printKernel(api.Kernel{Name: "debian-6.1", Release: "6.1.0", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := a.printImage(api.Image{Name: "debian-bookworm", Version: "1", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`^[a-z][a-z0-9 ]*: +\S`)
	for _, l := range strings.Split(out.String(), "\n") {
		if l == "" || strings.HasPrefix(l, "VERSION") {
			break // image show's table of versions follows its fields
		}
		if !row.MatchString(l) {
			t.Errorf("line %q is not a \"name:  value\" row", l)
		}
	}
}

// --dry-run lists names as git ls-files does: one name, one line, and nothing a terminal
// would act on. The expectations are git's own output (core.quotePath).
func TestDryRunQuotesNamesAsGitDoes(t *testing.T) {
	for in, want := range map[string]string{
		"src/main.go":    "src/main.go",
		"two\nlines":     `"two\nlines"`,
		"tab\there":      `"tab\there"`,
		`quote"d`:        `"quote\"d"`,
		`back\slash`:     `"back\\slash"`,
		"caf\xc3\xa9":    `"caf\303\251"`,
		"\x1b]0;owned\a": `"\033]0;owned\a"`,
		"with space":     "with space",
	} {
		if got := quotePath(in); got != want {
			t.Errorf("quotePath(%q) = %s, want %s", in, got, want)
		}
	}
	// The same as git, where git is here.
	repo := t.TempDir()
	if exec.Command("git", "init", "-q", repo).Run() != nil {
		return
	}
	name := "odd\nname \x1b[2J caf\xc3\xa9"
	if err := os.WriteFile(filepath.Join(repo, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("git", "-C", repo, "add", "-A").Run(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", repo, "ls-files").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := quotePath(name); got+"\n" != string(out) {
		t.Errorf("quotePath(%q) = %s; git ls-files says %s", name, got, out)
	}
}

// vm run --branch --dry-run lists what ships: the tree of --from with the uncommitted
// changes on top, not the work tree's files.
func TestDryRunBranchCountsTheShippedCommit(t *testing.T) {
	repo := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	gitPath, err := exec.LookPath("git")
	if err != nil || exec.Command("git", "init", "-q", repo).Run() != nil {
		t.Skip("git not installed")
	}
	run := func(args ...string) result { return runCLIWithPath(t, filepath.Dir(gitPath), args...) }
	for _, f := range []string{"a.txt", "b.txt"} {
		os.WriteFile(filepath.Join(repo, f), []byte(f), 0o644)
	}
	git("add", "-A")
	git("commit", "-q", "-m", "one")
	git("tag", "one")
	for _, f := range []string{"c.txt", "d.txt", "e.txt"} {
		os.WriteFile(filepath.Join(repo, f), []byte(f), 0o644)
	}
	git("add", "-A")
	git("commit", "-q", "-m", "two")
	os.WriteFile(filepath.Join(repo, "a.txt"), []byte("changed"), 0o644)

	r := run("vm", "run", repo, "--branch", "try", "--from", "one", "--dry-run")
	if r.code != 0 || r.stdout != "a.txt\nb.txt\n" || !strings.Contains(r.stderr, "banger: 2 files, 12B,") {
		t.Fatalf("exit %d\nstdout %q\nstderr %q\nwant a.txt and b.txt (12 bytes with a.txt's change)", r.code, r.stdout, r.stderr)
	}
	r = run("vm", "run", repo, "--branch", "try", "--dry-run")
	if r.code != 0 || strings.Count(r.stdout, "\n") != 5 {
		t.Fatalf("from HEAD: exit %d, stdout %q, stderr %q; want 5 files", r.code, r.stdout, r.stderr)
	}
	r = run("vm", "run", repo, "--branch", "try", "--from", "nope", "--dry-run")
	if r.code == 0 || !strings.Contains(r.stderr, `"nope" is not a commit`) {
		t.Fatalf("--from nope: exit %d, stderr %q", r.code, r.stderr)
	}
}
