package firecracker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/fcjail"
	"github.com/banger-dev/banger/internal/fcjail/fcjailtest"
	"github.com/banger-dev/banger/internal/peercred/peercredtest"
	"github.com/banger-dev/banger/internal/roothelper"
	"github.com/banger-dev/banger/internal/vmm"
	"golang.org/x/sys/unix"
)

// fakeJailer is the test binary run by banger's root helper as its jailer (it is called
// fake-jailer): it enters the jail's root, drops to --uid and --gid as the jailer does, and
// becomes the recorded Firecracker that --exec-file links to, taking paths as inside the jail.
func fakeJailer(args []string) int {
	j, err := fcjailtest.Parse(args)
	if err != nil {
		return 2
	}
	recording, err := filepath.EvalSymlinks(j.ExecFile)
	if err == nil {
		err = j.Enter()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-jailer:", err)
		return 1
	}
	os.Setenv(envRecordedRoot, ".")
	return recordedFirecracker(recording, j.Args)
}

// userJails is the root helper's client as a daemon of uid:gid uses it: every call connects
// with that uid's credentials.
type userJails struct {
	t        *testing.T
	c        *roothelper.Client
	uid, gid int
}

func (u userJails) as(fn func()) {
	if unix.Geteuid() == u.uid {
		fn() // called from the daemon's code on a thread that acts as the user already
		return
	}
	peercredtest.AsUser(u.t, u.uid, u.gid, fn)
}

func (u userJails) JailsReady() (err error) { u.as(func() { err = u.c.JailsReady() }); return }
func (u userJails) JailIDs() (ids []string, err error) {
	u.as(func() { ids, err = u.c.JailIDs() })
	return
}
func (u userJails) StartJail(spec fcjail.Spec) (st fcjail.Started, err error) {
	u.as(func() { st, err = u.c.StartJail(spec) })
	return
}
func (u userJails) DialJail(id, socket string) (conn net.Conn, err error) {
	u.as(func() { conn, err = u.c.DialJail(id, socket) })
	return
}
func (u userJails) KillJail(id string) (err error) { u.as(func() { err = u.c.KillJail(id) }); return }
func (u userJails) RemoveJail(id string) (err error) {
	u.as(func() { err = u.c.RemoveJail(id) })
	return
}

// The whole path of a daemon that is not root, with a real root helper in this process over
// its socket: the driver, as an unprivileged uid, starts a VM whose Firecracker (the recorded
// one, behind a fake jailer that drops to the jail's uid as the real one does) the helper
// starts in a jail; it configures and runs it through the helper's dial, a restarted daemon
// attaches to it, and Kill leaves the user's files as they were and no jail.
func TestDriverThroughARealHelper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs the root helper")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip")
	}
	const user = 1002 // any uid not root will do; bh-rootless's on the test machines
	prefix := fmt.Sprintf("banger-fcj-%d-", os.Getpid())
	ns := prefix + "drv"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })

	dir := shortDir(t, "bfr")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fcjailtest.CopyFile(t, self, filepath.Join(dir, "fake-jailer"), 0o755)
	fcjailtest.CopyFile(t, filepath.Join("testdata", "responses-1.14.2.json"), filepath.Join(dir, "responses-1.14.2.json"), 0o644)
	if err := os.Symlink("responses-1.14.2.json", filepath.Join(dir, "firecracker")); err != nil {
		t.Fatal(err)
	}

	cfg := roothelper.DefaultConfig()
	cfg.NamespacePrefix, cfg.HostNamespace, cfg.StateDir = prefix, false, t.TempDir()
	cfg.Jails = roothelper.JailConfig{Jailer: filepath.Join(dir, "fake-jailer"), Firecracker: filepath.Join(dir, "firecracker"),
		Base: filepath.Join(dir, "jail"), FirstID: 931000, IDCount: 20, PerCaller: 4}
	srv, err := roothelper.NewServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetGroupID(user)
	sock := filepath.Join(dir, "helper.sock")
	l, err := roothelper.Listen(sock, user)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() { l.Close(); <-done; srv.Close() })

	var c *roothelper.Client
	peercredtest.AsUser(t, user, user, func() {
		c, err = roothelper.Dial(sock, roothelper.Network{Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: ns}, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	jails := userJails{t: t, c: c, uid: user, gid: user}

	// The user's VM: its files and directories are the user's.
	vmdir := filepath.Join(dir, "vm-files")
	rt := filepath.Join(dir, "rt")
	for _, d := range []string{vmdir, rt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, user, user); err != nil {
			t.Fatal(err)
		}
	}
	kernel, disk := filepath.Join(vmdir, "vmlinux"), filepath.Join(vmdir, "disk.ext4")
	for p, mode := range map[string]os.FileMode{kernel: 0o644, disk: 0o600} {
		sparse(t, p, 1<<20)
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, user, user); err != nil {
			t.Fatal(err)
		}
	}
	fc := fakeBinary(t, dir, "firecracker-version", "Firecracker v1.14.2")
	d := &Driver{Binary: fc, EUID: func() int { return user }, Jails: jails}
	vcfg := vmm.Config{ID: "drv-1", Name: "drv", Dir: filepath.Join(vmdir, "vm"), RuntimeDir: rt, VCPU: 1, MemoryMiB: 128,
		Kernel: kernel, Disks: []vmm.Disk{{Path: disk}}}
	ctx, cancel := context.WithTimeout(context.Background(), socketWait)
	defer cancel()

	if p := d.Probe(ctx); p.Err != nil {
		t.Fatalf("Probe as uid %d with a helper that starts jails: %v", user, p.Err)
	}
	var m *Machine
	peercredtest.AsUser(t, user, user, func() { m, err = d.StartMachine(ctx, vcfg) })
	if err != nil {
		t.Fatal(err)
	}
	_, jailUID, jailGID := m.Jail()
	if jailUID < 931000 || jailUID >= 931020 {
		t.Fatalf("the jail's uid %d is not of the configured range", jailUID)
	}
	if st, err := m.State(ctx); err != nil || st != StateRunning {
		t.Fatalf("State: %q, %v", st, err)
	}
	if uid := procUID(t, m.Record().PID); uid != jailUID {
		t.Fatalf("Firecracker runs as uid %d, want the jail's %d", uid, jailUID)
	}
	var st unix.Stat_t
	if err := unix.Stat(disk, &st); err != nil || int(st.Uid) != user || int(st.Gid) != jailGID || st.Mode&0o060 != 0o060 {
		t.Fatalf("the disk while jailed: uid %d gid %d mode %o, %v", st.Uid, st.Gid, st.Mode&0o777, err)
	}

	// A restarted daemon attaches to the machine and ends it through the helper.
	attached, err := d.Attach(m.Record())
	if err != nil {
		t.Fatal(err)
	}
	peercredtest.AsUser(t, user, user, func() { err = attached.Kill() })
	if err != nil {
		t.Fatal(err)
	}
	<-m.Done()
	if err := unix.Stat(disk, &st); err != nil || int(st.Gid) != user || st.Mode&0o777 != 0o600 {
		t.Fatalf("the disk after the jail: gid %d mode %o, %v; want %d and 0600 as before", st.Gid, st.Mode&0o777, err, user)
	}
	if _, err := os.Lstat(filepath.Join(cfg.Jails.Base, "firecracker", "drv-1")); !os.IsNotExist(err) {
		t.Fatalf("the jail is left: %v", err)
	}
	if ids, err := jails.JailIDs(); err != nil || len(ids) != 0 {
		t.Fatalf("the user's jails after Kill: %v, %v", ids, err)
	}
}

// procUID is the real uid of pid.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}
