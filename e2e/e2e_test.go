// Package e2e boots real VMs through the installed-style binaries (bin/banger, bin/bangerd,
// bin/banger-agent) exactly as a user would: a fresh HOME, the daemon auto-started, the
// kernel pulled from Debian's mirror and the image built on first use. It needs root and
// qemu-system-x86_64 and runs only with BANGER_E2E=1 (`make e2e`).
package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// h is the test harness: one HOME and one daemon socket shared by every test, so the kernel
// is pulled and the image built once.
var h struct {
	bin     string // directory with banger, bangerd, banger-agent
	home    string
	runtime string
	netns   string
	env     []string
}

func TestMain(m *testing.M) {
	if os.Getenv("BANGER_E2E") != "1" {
		fmt.Println("e2e: skipped (set BANGER_E2E=1, or run `make e2e`; needs root and qemu-system-x86_64)")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	h.bin = os.Getenv("BANGER_BIN_DIR")
	if h.bin == "" {
		fmt.Fprintln(os.Stderr, "e2e: BANGER_BIN_DIR must name the directory holding the built binaries (make e2e sets it)")
		return 1
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: the test rig must run as root (it makes network namespaces and watches traffic in them); banger itself runs as BANGER_E2E_USER when that is set")
		return 1
	}
	var err error
	if bangerUser, err = lookupRunAs(os.Getenv("BANGER_E2E_USER")); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	base, err := os.MkdirTemp("", "banger-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = os.Chmod(base, 0o755) // banger's user goes through it to its HOME
	// Guest networking (bridge, taps, NAT, DNS, the VMMs) lives in a network namespace of the
	// test's own, removed at the end: no guest traffic ever touches the host's network. The
	// daemon itself stays in the host's namespace, so the kernel and image downloads from the
	// Debian mirror happen outside it.
	h.netns = fmt.Sprintf("banger-e2e-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", h.netns).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: ip netns add %s: %v: %s\n", h.netns, err, out)
		return 1
	}
	defer exec.Command("ip", "netns", "del", h.netns).Run()
	_ = exec.Command("ip", "-n", h.netns, "link", "set", "lo", "up").Run()
	h.home = filepath.Join(base, "home")
	h.runtime = filepath.Join(base, "run")
	_ = os.MkdirAll(h.home, 0o700)
	_ = os.MkdirAll(h.runtime, 0o700)
	if bangerUser != nil {
		for _, d := range []string{h.home, h.runtime} {
			if err := os.Chown(d, int(bangerUser.uid), int(bangerUser.gid)); err != nil {
				fmt.Fprintln(os.Stderr, "e2e:", err)
				return 1
			}
		}
	}
	// A brand-new user: an empty HOME, no XDG variables, nothing configured.
	h.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + h.home,
		"BANGER_SOCKET=" + filepath.Join(h.runtime, "bangerd.sock"),
		"BANGER_TEST_HOOKS=1",
		"BANGER_NETWORK_NAMESPACE=" + h.netns,
		"LANG=C.UTF-8",
	}
	stopHelper := func() {}
	if bangerUser != nil {
		if err := stageBinaries(filepath.Join(base, "bin")); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: copy the binaries for", bangerUser.name+":", err)
			return 1
		}
		// Relative paths the tests give banger are taken from a directory the user may enter.
		if err := os.Chdir(base); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		stop, err := startHelper(base)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: start the root helper:", err)
			return 1
		}
		stopHelper = stop
		h.env = append(h.env, "BANGER_HELPER_SOCKET="+helperSocket(base))
	}
	if err := resetConfig(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: write the rig's config.toml:", err)
		return 1
	}
	code := m.Run()
	out, err := banger(nil, "daemon", "stop")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: stop daemon: %v\n%s\n", err, out.stderr)
	}
	if code != 0 {
		if b, err := os.ReadFile(filepath.Join(h.home, ".local/state/banger/bangerd.log")); err == nil {
			fmt.Fprintf(os.Stderr, "--- bangerd.log (last 4 KiB)\n%s\n", tail(b, 4096))
		}
	}
	stopHelper()
	// A failed test can leave a VM running (the daemon keeps VMs across its own stop): no VMM
	// may outlive the run.
	if n := killStrays(base); n > 0 {
		fmt.Fprintf(os.Stderr, "e2e: killed %d process(es) left running from %s\n", n, base)
		if code == 0 {
			code = 1 // a passing run must not leave anything behind
		}
	}
	// Everything banger made in the user's HOME and runtime directory is the user's.
	if bangerUser != nil {
		for _, d := range []string{h.home, h.runtime} {
			if bad := notTheUsers(d, 20); len(bad) > 0 {
				fmt.Fprintf(os.Stderr, "e2e: not owned by %s after the run:\n  %s\n", bangerUser.name, strings.Join(bad, "\n  "))
				code = 1
			}
		}
	}
	_ = os.RemoveAll(base)
	return code
}

// killStrays kills every process whose command line mentions dir (the test's VMMs, helpers)
// and returns how many there were.
func killStrays(dir string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	n := 0
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(dir+"/")) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
	cpu            time.Duration // the CLI's own CPU time, user and system
}

// banger runs the CLI with the harness environment plus extra KEY=VALUE entries.
func banger(extraEnv []string, args ...string) (result, error) {
	return bangerStdin(nil, extraEnv, args...)
}

func bangerStdin(stdin io.Reader, extraEnv []string, args ...string) (result, error) {
	cmd := bangerCommand(args...)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	if err != nil && !errorsAs(err, &ee) {
		return r, err
	}
	r.code = cmd.ProcessState.ExitCode()
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

func stateDir() string { return filepath.Join(h.home, ".local/state/banger") }

// imagePath is the default image's rootfs: images/<name>/<version>/rootfs.ext4, and these tests
// never build a second version of it.
func imagePath() string {
	if m, _ := filepath.Glob(filepath.Join(stateDir(), "images/debian-bookworm/*/rootfs.ext4")); len(m) == 1 {
		return m[0]
	}
	return filepath.Join(stateDir(), "images/debian-bookworm/(not built)/rootfs.ext4")
}
func vmsDirs() []string {
	return []string{filepath.Join(stateDir(), "vms"), filepath.Join(h.runtime, "bangerd.vms")}
}
func kernelsDir() string { return filepath.Join(stateDir(), "kernels") }

func sha(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	hsh := sha256.New()
	if _, err := io.Copy(hsh, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(hsh.Sum(nil))
}

// rigConfig is config.toml as every test but TestRunAsBrandNewUser starts with: no spare VMs,
// which the daemon would keep running beside the VMs the tests make and count (TestSpares
// turns them on).
const rigConfig = "# written by the e2e rig\nwarm_spares = 0\n"

// configFile is the user's config.toml.
func configFile() string { return filepath.Join(h.home, ".config", "banger", "config.toml") }

// resetConfig writes rigConfig as the user's config.toml.
func resetConfig() error { return putConfig(rigConfig) }

// putConfig writes content as the user's config.toml, the user's (with its directories).
func putConfig(content string) error {
	if err := os.MkdirAll(filepath.Dir(configFile()), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(configFile(), []byte(content), 0o600); err != nil {
		return err
	}
	if bangerUser == nil {
		return nil
	}
	for _, p := range []string{filepath.Join(h.home, ".config"), filepath.Dir(configFile()), configFile()} {
		if err := os.Lchown(p, int(bangerUser.uid), int(bangerUser.gid)); err != nil {
			return err
		}
	}
	return nil
}

// writeConfig makes config.toml the rig's plus extra (extra's warm_spares, if it has one,
// instead of the rig's) until the test ends (or restoreConfig).
func writeConfig(t *testing.T, extra string) {
	t.Helper()
	base := rigConfig
	if strings.Contains(extra, "warm_spares") {
		base = ""
	}
	if err := putConfig(base + extra); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restoreConfig(t))
}

// restoreConfig returns what puts the rig's config.toml back.
func restoreConfig(t *testing.T) func() {
	return func() {
		if err := resetConfig(); err != nil {
			t.Error(err)
		}
	}
}

// assertNothingLeft checks that no VM record, VM directory or QEMU process of this harness
// remains.
func assertNothingLeft(t *testing.T) {
	t.Helper()
	r, err := banger(nil, "vm", "list", "--json")
	if err != nil || r.code != 0 {
		t.Fatalf("vm list: %v %+v", err, r)
	}
	var vms []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &vms); err != nil {
		t.Fatalf("vm list --json: %v: %q", err, r.stdout)
	}
	if len(vms) != 0 {
		t.Errorf("VM records left behind: %v", vms)
	}
	for _, d := range vmsDirs() {
		entries, _ := os.ReadDir(d)
		if len(entries) != 0 {
			t.Errorf("VM files left behind in %s: %v", d, entries)
		}
	}
	// Any QEMU started by this harness has the harness's state dir on its command line.
	out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*"+regexp.QuoteMeta(stateDir())).Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("QEMU processes left behind: pids %s", s)
	}
}

// TestRunAsBrandNewUser is the walking skeleton's promise: an empty HOME, one command, the
// kernel fetched, the image built, a real boot, the command's output streamed back with
// stdout and stderr kept apart, its exit status propagated, and nothing left behind. It must be
// the first test that boots: go test runs files in name order, so a test file that boots sorts
// after e2e_test.go.
func TestRunAsBrandNewUser(t *testing.T) {
	// Nothing configured: not even the rig's config.
	if err := os.RemoveAll(filepath.Join(h.home, ".config")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := resetConfig(); err != nil {
			t.Error(err)
		}
	})
	r, err := banger(nil, "vm", "run", "--rm", "--", "sh", "-c", "echo hello from $(hostname); uname -r; echo to-stderr >&2; exit 42")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first run (kernel pull + image build + boot) took %s; stderr:\n%s", r.took, r.stderr)
	if r.code != 42 {
		t.Fatalf("exit status = %d, want 42 (the command's own)\nstderr:\n%s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^hello from [a-z0-9-]+$`).MatchString(lines[0]) || !regexp.MustCompile(`^6\.1\.\d+-\d+-cloud-amd64$`).MatchString(lines[1]) {
		t.Errorf("stdout = %q, want exactly the command's two lines (hello from <vm name>, the Debian 6.1 cloud kernel release)", r.stdout)
	}
	name := strings.TrimPrefix(lines[0], "hello from ")
	for _, want := range []string{"spec: vcpu=", "fetching kernel debian-6.1", "building image debian-bookworm", "to-stderr", "vm " + name + " ready in"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "spec:") || strings.Contains(r.stdout, "banger:") {
		t.Errorf("banger's own messages leaked into stdout: %q", r.stdout)
	}
	assertNothingLeft(t)
}

// TestSecondRunOnlyBoots checks that the kernel and image are reused, that the shared image is
// never written, and that stdout can be redirected to a file byte for byte.
func TestSecondRunOnlyBoots(t *testing.T) {
	ensureWarm(t)
	before := sha(t, imagePath())
	kernelsBefore, _ := os.ReadDir(kernelsDir())
	r, err := banger(nil, "vm", "run", "--rm", "--", "cat", "/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second run took %s", r.took)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"`) {
		t.Errorf("stdout = %q, want /etc/os-release of Debian 12 and nothing else", r.stdout)
	}
	for _, unwanted := range []string{"fetching kernel", "building image"} {
		if strings.Contains(r.stderr, unwanted) {
			t.Errorf("second run did %q again:\n%s", unwanted, r.stderr)
		}
	}
	// Writes inside the guest go to the VM disk, never to the shared image.
	r, err = banger(nil, "vm", "run", "--rm", "--", "sh", "-c", "echo scribble > /etc/scribble && rm -rf /usr/share/doc && sync")
	if err != nil || r.code != 0 {
		t.Fatalf("writing run: %v %+v", err, r)
	}
	if after := sha(t, imagePath()); after != before {
		t.Errorf("shared image changed: sha256 %s before, %s after", before, after)
	}
	kernelsAfter, _ := os.ReadDir(kernelsDir())
	if len(kernelsAfter) != len(kernelsBefore) {
		t.Errorf("kernels dir changed: %v → %v", kernelsBefore, kernelsAfter)
	}
	assertNothingLeft(t)
}

// TestOutputIsStreamed checks that output arrives while the command still runs.
func TestOutputIsStreamed(t *testing.T) {
	ensureWarm(t)
	cmd := bangerCommand("vm", "run", "--rm", "--", "sh", "-c", "echo first; sleep 4; echo second")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var times []time.Time
	var lines []string
	for sc.Scan() {
		times = append(times, time.Now())
		lines = append(lines, sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if len(lines) != 2 || lines[0] != "first" || lines[1] != "second" {
		t.Fatalf("stdout lines = %q", lines)
	}
	if gap := times[1].Sub(times[0]); gap < 3*time.Second {
		t.Errorf("\"first\" arrived only %s before \"second\": output is buffered, not streamed", gap)
	}
}

// TestInterruptGoesToTheCommand: SIGINT to banger (Ctrl-C without a terminal) reaches the
// command, whose own exit status comes back; --rm still deletes the VM.
func TestInterruptGoesToTheCommand(t *testing.T) {
	ensureWarm(t)
	cmd := bangerCommand("vm", "run", "--rm", "--", "sh", "-c", `trap 'echo got INT; exit 7' INT; echo ready; while :; do sleep 1; done`)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		_ = cmd.Process.Kill()
		t.Fatalf("first line %q, stderr:\n%s", sc.Text(), stderr.String())
	}
	_ = cmd.Process.Signal(os.Interrupt)
	var rest []string
	for sc.Scan() {
		rest = append(rest, sc.Text())
	}
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 7 || strings.Join(rest, "\n") != "got INT" {
		t.Errorf("after SIGINT: exit %d, stdout %q; want the command's trap to answer (exit 7)\nstderr:\n%s", code, rest, stderr.String())
	}
	assertNothingLeft(t)
}

// TestStdinIsPiped checks that stdin reaches the command when it is not a terminal.
func TestStdinIsPiped(t *testing.T) {
	ensureWarm(t)
	r, err := bangerStdin(strings.NewReader("line one\nline two\n"), nil, "vm", "run", "--rm", "--", "sh", "-c", "cat; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 3 || r.stdout != "line one\nline two\n" {
		t.Errorf("exit %d stdout %q; want 3 and the piped input echoed", r.code, r.stdout)
	}
}

// TestLateStepFailureLeavesNothing injects a failure into the last start steps (after the
// guest booted) and checks the undo: no process, no disk, no record.
func TestLateStepFailureLeavesNothing(t *testing.T) {
	ensureWarm(t)
	for _, step := range []string{"agent", "ready"} {
		t.Run(step, func(t *testing.T) {
			r, err := banger([]string{"BANGER_INJECT_FAULT=" + step}, "vm", "run", "--rm", "--name", "doomed", "--", "true")
			if err != nil {
				t.Fatal(err)
			}
			if r.code != 1 || !strings.Contains(r.stderr, "fault injected at step \""+step+"\"") {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1 naming the injected fault", r.code, r.stderr)
			}
			assertNothingLeft(t)
		})
	}
}

// TestCommandNotFound checks the shell-like 127 for a missing command.
func TestCommandNotFound(t *testing.T) {
	ensureWarm(t)
	r, err := banger(nil, "vm", "run", "--rm", "--", "no-such-command")
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 127 || !strings.Contains(r.stderr, "no-such-command: command not found") {
		t.Errorf("exit %d stderr:\n%s\nwant 127 and a clear message", r.code, r.stderr)
	}
	assertNothingLeft(t)
}

// TestBadInputIsRefusedCleanly checks usage errors: no VM is made, the message says what to do.
func TestBadInputIsRefusedCleanly(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		// Every bad flag value is a usage error (exit 2), whether the CLI or the daemon finds it.
		{"invalid name", []string{"vm", "run", "--rm", "--name", "Bad_Name", "--", "true"}, 2, `VM name "Bad_Name" has 'B' at position 1 (try "bad-name")`},
		{"zero vcpus", []string{"vm", "run", "--rm", "--vcpu", "0", "--", "true"}, 2, "--vcpu"},
		{"too many vcpus", []string{"vm", "run", "--rm", "--vcpu", "500", "--", "true"}, 2, "--vcpu"},
		{"too much memory", []string{"vm", "run", "--rm", "--memory", "100T", "--", "true"}, 2, "--memory"},
		{"bad memory", []string{"vm", "run", "--rm", "--memory", "lots", "--", "true"}, 2, "--memory"},
		{"unknown flag", []string{"vm", "run", "--bogus", "--", "true"}, 2, "unknown flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := banger(nil, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || !strings.HasPrefix(r.stderr, "banger: ") && !strings.Contains(r.stderr, "\nbanger: ") {
				t.Errorf("exit %d stderr:\n%s\nwant exit %d and a \"banger:\" error mentioning %q", r.code, r.stderr, tc.code, tc.want)
			}
		})
	}
	assertNothingLeft(t)
}

// ensureWarm makes sure the kernel and image exist (when a single test runs alone).
func ensureWarm(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(imagePath()); err == nil {
		return
	}
	r, err := banger(nil, "vm", "run", "--rm", "--", "true")
	if err != nil || r.code != 0 {
		t.Fatalf("warm-up run failed: %v\n%s", err, r.stderr)
	}
}
