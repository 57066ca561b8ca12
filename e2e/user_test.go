package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The harness (this test process) is the test rig: it runs as root, because it makes network
// namespaces, watches traffic in them, starts a registry and kills processes. banger itself —
// the CLI, the daemon it starts, the VMMs and the image builds — runs as the user that
// BANGER_E2E_USER names, when it is set (CI sets it: an ordinary user in the groups kvm and
// banger, without sudo), with the root helper (bin/banger-helper) started by the rig as the
// only privileged part. Without BANGER_E2E_USER everything runs as root, as it did before the
// helper existed.
//
// A rig that ran as the user and borrowed root for its fixtures (sudo) would prove less:
// banger could then reach root the same way without a test noticing. Here the user has no
// way to root but the helper.

// bangerUser is the user banger runs as; nil when it runs as the harness's own user.
var bangerUser *runAs

type runAs struct {
	name     string
	uid, gid uint32
	groups   []uint32
}

// lookupRunAs resolves BANGER_E2E_USER; "" is no user of its own.
func lookupRunAs(name string) (*runAs, error) {
	if name == "" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("BANGER_E2E_USER=%s: %w (CI's .ci/run creates it)", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if uid == 0 {
		return nil, fmt.Errorf("BANGER_E2E_USER=%s is root; name an ordinary user", name)
	}
	r := &runAs{name: name, uid: uint32(uid), gid: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err == nil {
			r.groups = append(r.groups, uint32(n))
		}
	}
	return r, nil
}

// asUser makes cmd run as banger's user (nothing changes when banger runs as the harness's
// own user) and returns it.
func asUser(cmd *exec.Cmd) *exec.Cmd {
	if bangerUser == nil {
		return cmd
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: bangerUser.uid, Gid: bangerUser.gid, Groups: bangerUser.groups}
	return cmd
}

// userCommand is exec.Command run as banger's user.
func userCommand(name string, args ...string) *exec.Cmd {
	return asUser(exec.Command(name, args...))
}

// bangerCommand is the CLI with the harness environment, run as banger's user.
func bangerCommand(args ...string) *exec.Cmd {
	cmd := userCommand(filepath.Join(h.bin, "banger"), args...)
	cmd.Env = append([]string{}, h.env...)
	return cmd
}

// inNamespaceAsUser is `ip netns exec ns name args...` with name run as banger's user: entering
// a namespace needs root, what runs in it does not.
func inNamespaceAsUser(ns, name string, args ...string) *exec.Cmd {
	argv := []string{"netns", "exec", ns}
	if bangerUser != nil {
		argv = append(argv, "setpriv", "--reuid="+strconv.Itoa(int(bangerUser.uid)),
			"--regid="+strconv.Itoa(int(bangerUser.gid)), "--init-groups", "--")
	}
	return exec.Command("ip", append(append(argv, name), args...)...)
}

// giveToUser hands path (recursively) and, when they belong to the test's temporary
// directory, its parents to banger's user, so that banger can read what the test made and
// write where the test expects it.
func giveToUser(t *testing.T, path string) {
	t.Helper()
	if bangerUser == nil {
		return
	}
	err := filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(bangerUser.uid), int(bangerUser.gid))
	})
	if err != nil {
		t.Fatalf("give %s to %s: %v", path, bangerUser.name, err)
	}
	// t.TempDir's directories are root's and 0700: the user must be able to go through them.
	// (The user's own, its HOME among them, keep their modes.)
	for d := filepath.Dir(path); strings.HasPrefix(d, os.TempDir()+"/") && d != os.TempDir(); d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Sys().(*syscall.Stat_t).Uid != bangerUser.uid {
			_ = os.Chmod(d, fi.Mode().Perm()|0o055)
		}
	}
}

// userDir is a fresh temporary directory that belongs to banger's user.
func userDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	giveToUser(t, d)
	return d
}

// notTheUsers lists what under dir does not belong to banger's user (at most max entries).
func notTheUsers(dir string, max int) []string {
	var bad []string
	_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil || len(bad) >= max {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != bangerUser.uid {
			bad = append(bad, fmt.Sprintf("%s (uid %d)", p, st.Uid))
		}
		return nil
	})
	return bad
}

// processUID is the real uid of pid.
func processUID(t *testing.T, pid int) uint32 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Uid:" {
			n, _ := strconv.ParseUint(f[1], 10, 32)
			return uint32(n)
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return 0
}

// stageBinaries copies the binaries into dir for banger's user: the checkout they were built
// in may be where that user cannot go (root's home, for one).
func stageBinaries(dir string) error {
	entries, err := os.ReadDir(h.bin)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(h.bin, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o755); err != nil {
			return err
		}
	}
	h.bin = dir
	return nil
}

// TestBangerRunsAsTheUser checks, when banger runs as an ordinary user, that nothing of it
// runs as root: the daemon and the VMM belong to the user, whose HOME holds only the user's
// files; the root helper is the one privileged process.
func TestBangerRunsAsTheUser(t *testing.T) {
	if bangerUser == nil {
		t.Skip("banger runs as the rig's own user (set BANGER_E2E_USER to run it as an ordinary one)")
	}
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "mine", "--memory", "768M")
	defer mustBanger(t, "vm", "delete", "-f", "mine")
	if uid := processUID(t, daemonPID(t)); uid != bangerUser.uid {
		t.Errorf("bangerd runs as uid %d, want %d (%s)", uid, bangerUser.uid, bangerUser.name)
	}
	out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*"+stateDir()).Output()
	pids := strings.Fields(string(out))
	if len(pids) != 1 {
		t.Fatalf("QEMU processes of the harness: %q, want one", pids)
	}
	pid, _ := strconv.Atoi(pids[0])
	if uid := processUID(t, pid); uid != bangerUser.uid {
		t.Errorf("QEMU runs as uid %d, want %d (%s)", uid, bangerUser.uid, bangerUser.name)
	}
	if got := guest(t, "mine", "sh", "-c", "getent hosts mine.vm | cut -d' ' -f1"); !strings.HasPrefix(got, "172.16.0.") {
		t.Errorf("the guest resolves its own name to %q", got)
	}
	if bad := notTheUsers(h.home, 10); len(bad) > 0 {
		t.Errorf("in the user's HOME, not the user's: %s", strings.Join(bad, ", "))
	}
}

func helperSocket(base string) string { return filepath.Join(base, "helper", "helper.sock") }

// startHelper starts the root helper (bin/banger-helper) as the rig's own root process,
// serving the test namespace's network to members of the user's groups, and returns how to
// stop it. The root-owned directory holding its socket and config is the user's to enter only.
func startHelper(base string) (stop func(), err error) {
	dir := filepath.Dir(helperSocket(base))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "helper.toml")
	if err := os.WriteFile(cfg, []byte(helperConfig(filepath.Join(dir, "state"))), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(h.bin, "banger-helper"), "--config", cfg, "--socket", helperSocket(base))
	log, err := os.Create(filepath.Join(dir, "helper.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done); log.Close() }()
	for i := 0; ; i++ {
		if _, err := os.Stat(helperSocket(base)); err == nil {
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(log.Name())
			return nil, fmt.Errorf("banger-helper exited: %s", b)
		case <-time.After(50 * time.Millisecond):
		}
		if i > 200 {
			_ = cmd.Process.Kill()
			<-done
			return nil, fmt.Errorf("banger-helper did not make %s in 10 s", helperSocket(base))
		}
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if b, err := os.ReadFile(log.Name()); err == nil && os.Getenv("BANGER_E2E_HELPER_LOG") != "" {
			fmt.Fprintf(os.Stderr, "--- banger-helper log\n%s\n", b)
		}
	}, nil
}

// helperConfig is the helper's configuration for the rig: banger's default bridge and
// subnet, in namespaces named banger-* only (never the host's), for the members of the group
// banger, with its state in the rig's directory.
func helperConfig(state string) string {
	return fmt.Sprintf("group = \"banger\"\nnamespace_prefix = \"banger-\"\nhost_namespace = false\nstate_dir = %q\n", state)
}
