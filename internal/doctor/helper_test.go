package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/roothelper"
	"github.com/banger-dev/banger/internal/version"
)

// nobody is the unprivileged uid and gid the tests connect as.
const nobody = 65534

// startHelper runs a real root helper that serves banger's default network in namespaces
// named prefix* only (never the host's), on a socket anyone may reach, and returns the
// socket.
func startHelper(t *testing.T, prefix string) string {
	t.Helper()
	cfg := roothelper.DefaultConfig()
	cfg.Group = "" // root only: nobody is refused by the helper itself
	cfg.NamespacePrefix = prefix
	cfg.HostNamespace = false
	cfg.StateDir = t.TempDir()
	srv, err := roothelper.NewServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // t.TempDir makes both 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "helper.sock")
	l, err := roothelper.Listen(sock, -1) // root's, 0600
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		srv.Close()
	})
	return sock
}

// testNamespace makes network namespace name and deletes it after the test.
func testNamespace(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
}

// asNobody runs fn on one OS thread whose credentials are nobody's (uid and gid 65534, no
// supplementary groups), then root's again: sockets fn connects carry nobody's credentials.
// fn must not call t.Fatal (nor make files: the thread cannot write the test's directories).
func asNobody(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // unlocked only once root is back
		set := func(uid, gid uintptr, groups []uint32) string {
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
				return "setresuid(0): " + e.Error()
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(unsafe.Pointer(&groups[0])), 0); e != 0 {
				return "setgroups: " + e.Error()
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), gid, ^uintptr(0)); e != 0 {
				return "setresgid: " + e.Error()
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uid, ^uintptr(0)); e != 0 {
				return "setresuid: " + e.Error()
			}
			return ""
		}
		if msg := set(nobody, nobody, []uint32{nobody}); msg != "" {
			done <- msg
			return // the thread stays locked and is discarded
		}
		fn()
		if msg := set(0, 0, []uint32{0}); msg != "" {
			done <- "restore root: " + msg
			return
		}
		runtime.UnlockOSThread()
		done <- ""
	}()
	if msg := <-done; msg != "" {
		t.Fatal(msg)
	}
}

// TestGatherHelper asks a real root helper as an unprivileged daemon would, and checks that
// each way of not reaching it is told apart and gets its fix: served, a bridge or namespace
// it does not serve, a missing namespace, no socket, a socket nothing listens on, a socket
// the user may not open, and a helper that refuses the user.
func TestGatherHelper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a root helper, network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip")
	}
	prefix := fmt.Sprintf("bgdoc-%d-", os.Getpid())
	ns := prefix + "1"
	testNamespace(t, ns)
	sock := startHelper(t, prefix)

	stale := filepath.Join(t.TempDir(), "stale.sock")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	sl.SetUnlinkOnClose(false)
	sl.Close() // the file stays, nothing listens

	// prepare makes what gatherHelper reads (as root: it makes directories), and returns
	// the call, which may run as nobody.
	var cfg config.Config // the config of the last prepare, for verdict
	prepare := func(socket string, edit func(*config.Config)) func() Helper {
		cfg = config.Default(tempLayout(t))
		cfg.NetworkNamespace = ns
		if edit != nil {
			edit(&cfg)
		}
		cfg := cfg
		env := Env{Root: t.TempDir(), UID: 1000, Getenv: func(k string) string {
			if k == "BANGER_HELPER_SOCKET" {
				return socket
			}
			return ""
		}}
		env.defaults()
		return func() Helper { return gatherHelper(&env, cfg) }
	}
	gather := func(socket string, edit func(*config.Config)) Helper { return prepare(socket, edit)() }
	verdict := func(h Helper) Result {
		f := unprivileged()
		f.CLI = version.Get()
		f.Config = cfg
		f.Helper = h
		for _, r := range Check(f) {
			if r.Check == "helper" {
				return r
			}
		}
		t.Fatal("no helper check")
		return Result{}
	}

	h := gather(sock, nil)
	if h.Err != nil || h.Version != version.Get().String() || h.Socket != sock {
		t.Fatalf("served network: %+v, want the helper's build %s and no error", h, version.Get())
	}
	if r := verdict(h); r.Status != Pass {
		t.Errorf("served network: %+v", r)
	}

	for _, tc := range []struct {
		name   string
		socket string
		edit   func(*config.Config)
		is     error
		fix    string
	}{
		{"bridge not served", sock, func(c *config.Config) { c.BridgeName = "br-doc" }, failure.Invalid, "[[network]] bridge = \"br-doc\""},
		{"namespace without the prefix", sock, func(c *config.Config) { c.NetworkNamespace = "other-doc" }, failure.Invalid, "namespace_prefix"},
		{"namespace missing", sock, func(c *config.Config) { c.NetworkNamespace = prefix + "missing" }, failure.NotFound, "sudo ip netns add " + prefix + "missing"},
		{"namespace as a path outside /run/netns", sock, func(c *config.Config) { c.NetworkNamespace = "/proc/1/ns/net" }, failure.Invalid, "[[network]]"},
		{"no socket", filepath.Join(t.TempDir(), "none.sock"), nil, fs.ErrNotExist, "banger-helper"},
		{"nothing listens", stale, nil, syscall.ECONNREFUSED, "start the helper as root"},
	} {
		h := gather(tc.socket, tc.edit)
		if !errors.Is(h.Err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, h.Err, tc.is)
			continue
		}
		if r := verdict(h); r.Status != Fail || !strings.Contains(r.Fix, tc.fix) {
			t.Errorf("%s: %+v, want FAIL with a fix naming %q", tc.name, r, tc.fix)
		}
	}

	// The socket is root's, 0600: nobody cannot connect.
	call := prepare(sock, nil)
	asNobody(t, func() { h = call() })
	if !errors.Is(h.Err, syscall.EACCES) {
		t.Errorf("a socket nobody may not open: %v, want EACCES", h.Err)
	} else if r := verdict(h); r.Status != Fail || !strings.Contains(r.Fix, "newgrp banger") {
		t.Errorf("a socket nobody may not open: %+v", r)
	}
	// Opened up, the helper itself refuses nobody (not root, not in its group).
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	asNobody(t, func() { h = call() })
	if !errors.Is(h.Err, roothelper.ErrDenied) {
		t.Errorf("a caller outside the helper's group: %v, want ErrDenied", h.Err)
	} else if r := verdict(h); r.Status != Fail || !strings.Contains(r.Fix, "banger") {
		t.Errorf("a caller outside the helper's group: %+v", r)
	}

	// As root doctor asks nothing.
	env := Env{Root: t.TempDir(), UID: 0, Helper: func(string, roothelper.Network) (string, bool, error) {
		t.Error("doctor asked the helper as root")
		return "", false, nil
	}}
	env.defaults()
	if h := gatherHelper(&env, config.Default(tempLayout(t))); h.Err != nil || h.Version != "" {
		t.Errorf("as root: %+v", h)
	}
}

// TestGatherGroups reads /dev/kvm's group from the file and the user's memberships from the
// databases (here made up), and this process's groups.
func TestGatherGroups(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	root := t.TempDir()
	writeTree(t, root, map[string]string{"dev/kvm": ""})
	kvm := filepath.Join(root, "dev/kvm")
	if err := os.Chown(kvm, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(kvm, 0o660); err != nil {
		t.Fatal(err)
	}
	env := Env{Root: root, UID: 1000,
		UserGroups:    func(int) (string, []int, error) { return "dev", []int{1000, 4242, 993}, nil },
		GroupID:       func(name string) (int, error) { return map[string]int{"bangerdev": 993}[name], nil },
		ProcessGroups: func() ([]int, error) { return []int{1000, 4242}, nil },
	}
	env.defaults()
	g := gatherGroups(&env, "bangerdev")
	if g.User != "dev" || g.Banger != (Group{Name: "bangerdev", GID: 993, Member: true, Needed: true}) {
		t.Errorf("banger group: %+v", g)
	}
	if g.KVM.GID != 4242 || !g.KVM.Needed || !g.KVM.Member || !g.InProcess(g.KVM) || g.InProcess(g.Banger) {
		t.Errorf("kvm group: %+v (process %v)", g.KVM, g.Process)
	}
	// /dev/kvm open to everyone: no group needed.
	if err := os.Chmod(kvm, 0o666); err != nil {
		t.Fatal(err)
	}
	if g := gatherGroups(&env, ""); g.KVM.Needed || g.Banger.Name != "banger" || !g.KVMExists || g.KVMMode.Perm() != 0o666 {
		t.Errorf("0666 /dev/kvm, default group: %+v", g)
	}
}

// realNetChild is the environment variable that makes the test binary, run as nobody by
// TestRealNetUnprivileged, read the network facts for the namespace it names and print them.
const realNetChild = "BANGER_DOCTOR_TEST_REALNET_NS"

// TestRealNetUnprivileged reads the network facts as an ordinary user (a process of nobody's:
// entering a namespace is per process, not per thread) with guests in a network namespace:
// entering it is not allowed, and that is said (ReadErr), not taken for a missing bridge or
// a missing namespace.
func TestRealNetUnprivileged(t *testing.T) {
	if ns := os.Getenv(realNetChild); ns != "" {
		cfg := config.Default(paths.Layout{StateDir: "/nonexistent"})
		cfg.NetworkNamespace = ns
		nf := realNet(cfg, paths.Layout{StateDir: "/nonexistent"})
		fmt.Printf("bridge_err=%v\nread_err=%v\nnft_err=%v\n", nf.BridgeErr != nil, nf.BridgeReadErr != nil, nf.NFTables.Err != nil)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace, then a process of nobody's)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip")
	}
	ns := fmt.Sprintf("bgdoc-%d-net", os.Getpid())
	testNamespace(t, ns)
	// The test binary, where nobody may run it.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "doctor.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestRealNetUnprivileged$")
	cmd.Env = []string{realNetChild + "=" + ns, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the test binary as nobody: %v: %s", err, out)
	}
	for _, want := range []string{"bridge_err=false", "read_err=true", "nft_err=true"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("as nobody in namespace %s: want %s in:\n%s", ns, want, out)
		}
	}
	// What Check makes of it: PASS, with what could not be read.
	f := unprivileged()
	f.Config.NetworkNamespace = ns
	f.DNS.NetNS = ns
	f.Bridge = Bridge{Name: "banger0", Module: "loaded", ReadErr: errors.New("operation not permitted")}
	f.NFTables = NFTables{Err: errors.New("operation not permitted")}
	for _, r := range Check(f) {
		if (r.Check == "bridge" || r.Check == "nftables") && r.Status != Pass {
			t.Errorf("%s as an ordinary user: %+v", r.Check, r)
		}
	}
	// As root the same namespace is read.
	l := tempLayout(t)
	cfg := config.Default(l)
	cfg.NetworkNamespace = ns
	if nf := realNet(cfg, l); nf.BridgeErr != nil || nf.BridgeReadErr != nil || nf.NFTables.Err != nil {
		t.Errorf("as root: bridge err %v, read err %v, nftables err %v", nf.BridgeErr, nf.BridgeReadErr, nf.NFTables.Err)
	}
}
