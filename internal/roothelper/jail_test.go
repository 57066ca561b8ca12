package roothelper

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/fcjail"
	"github.com/banger-dev/banger/internal/fcjail/fcjailtest"
	"golang.org/x/sys/unix"
)

// TestMain runs the test binary as a fake jailer when it is called fake-jailer (the helper
// under test runs it as its jailer): it does what of the jailer matters to the helper, with
// no chroot. It drops to --uid/--gid, checks that it may open the jail's files as Firecracker
// would (the kernel read-only, disks, log and metrics read-write), says so on stdout and
// serves a Firecracker-like API on <root>/run/api.sock.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "fake-jailer" {
		os.Exit(fakeJailer(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeJailer(args []string) int {
	j, err := fcjailtest.Parse(args)
	if err != nil {
		return 2
	}
	if err := j.Enter(); err != nil {
		fmt.Fprintln(os.Stderr, "fake-jailer:", err)
		return 1
	}
	for _, name := range []string{fcjail.Kernel, fcjail.DiskName(0), fcjail.Log, fcjail.Metrics} {
		mode := os.O_RDWR
		if name == fcjail.Kernel {
			mode = os.O_RDONLY
		}
		f, err := os.OpenFile(name, mode, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake-jailer:", err)
			return 1
		}
		f.Close()
	}
	l, err := net.Listen("unix", fcjail.Sockets["api"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-jailer:", err)
		return 1
	}
	fmt.Println("fake-jailer: serving as uid", os.Getuid())
	_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"id":%q,"state":"Not started","app_name":"Firecracker"}`, j.ID)
	}))
	return 0
}

// fcjPrefix names the namespaces of the jail tests; their helper accepts no other.
var fcjPrefix = fmt.Sprintf("banger-fcj-%d-", os.Getpid())

var fcjCount atomic.Int32

// jailNS makes a network namespace with fcjPrefix and deletes it afterwards.
func jailNS(t *testing.T) string {
	t.Helper()
	needRoot(t)
	name := fmt.Sprintf("%s%d", fcjPrefix, fcjCount.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	inNS(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// jailFixture is a helper that starts jails (jailer and firecracker as given; "" for the fake
// jailer), and a VM's files owned by memberUID in a directory of the same filesystem.
type jailFixture struct {
	sock, ns string
	srv      *Server
	cfg      Config
	vm       string // the caller's VM directory
}

// jailIDBase is the first jail uid of these tests: apart from the driver tests' ids.
const jailIDBase = 930000

func newJailFixture(t *testing.T, jailer, firecracker string) *jailFixture {
	t.Helper()
	ns := jailNS(t)
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if jailer == "" {
		jailer = filepath.Join(dir, "fake-jailer")
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		fcjailtest.CopyFile(t, self, jailer, 0o755)
		firecracker = "/opt/test/firecracker"
	}
	cfg := DefaultConfig()
	cfg.NamespacePrefix = fcjPrefix
	cfg.HostNamespace = false
	cfg.StateDir = t.TempDir()
	cfg.Jails = JailConfig{Jailer: jailer, Firecracker: firecracker, Base: filepath.Join(dir, "jail"), FirstID: jailIDBase, IDCount: 50, PerCaller: 2}
	sock, srv := startServer(t, cfg)
	vm := filepath.Join(dir, "vm")
	if err := os.Mkdir(vm, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"kernel": 0o644, "initrd": 0o600, "disk0": 0o600, "disk1": 0o644, "log": 0o600, "metrics": 0o600} {
		p := filepath.Join(vm, name)
		if err := os.WriteFile(p, []byte(name+" contents\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, memberUID, testGID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(vm, memberUID, testGID); err != nil {
		t.Fatal(err)
	}
	return &jailFixture{sock: sock, ns: ns, srv: srv, cfg: cfg, vm: vm}
}

// client dials the fixture's helper as uid (in testGID).
func (f *jailFixture) client(t *testing.T, uid int) *Client {
	t.Helper()
	c, err := dialAs(t, uid, testGID, nil, f.sock, netOf(f.ns))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// as runs fn as uid (in testGID): each call of a client connects anew, with the credentials
// of the thread it runs on.
func as(t *testing.T, uid int, fn func()) { asCaller(t, uid, testGID, nil, fn) }

// spec opens the fixture's VM files as a daemon would and a console pipe whose reader the
// caller gets; everything is closed when the test ends.
func (f *jailFixture) spec(t *testing.T, id string) (fcjail.Spec, *os.File) {
	t.Helper()
	open := func(name string) *os.File {
		fl, err := os.Open(filepath.Join(f.vm, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fl.Close() })
		return fl
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return fcjail.Spec{
		ID: id, Kernel: open("kernel"), Initrd: open("initrd"),
		Disks:   []fcjail.Disk{{File: open("disk0"), Writable: true}, {File: open("disk1")}},
		Log:     open("log"),
		Metrics: open("metrics"),
		Console: w,
	}, r
}

func statOf(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// procUID is the real uid of pid.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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

// getAPI sends GET / on conn and returns the body.
func getAPI(t *testing.T, conn net.Conn) string {
	t.Helper()
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return string(b)
}

// waitExit blocks until the process of pidfd f has exited.
func waitExit(t *testing.T, f *os.File) {
	t.Helper()
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}, -1)
		if err != unix.EINTR {
			return
		}
	}
}

// A jail's whole life through the helper, as a daemon that is not root lives it: start (its
// Firecracker runs as the jail's uid and may use the VM's files), dial its API, list it, kill
// it, remove it (the caller's files are as they were, the jail is gone); and a restarted
// helper still knows the jail.
func TestJailLifecycle(t *testing.T) {
	f := newJailFixture(t, "", "")
	c := f.client(t, memberUID)
	spec, console := f.spec(t, "vm-1")
	disk0 := filepath.Join(f.vm, "disk0")
	before := statOf(t, disk0)

	var st fcjail.Started
	var err error
	as(t, memberUID, func() { st, err = c.StartJail(spec) })
	if err != nil {
		t.Fatal(err)
	}
	defer st.Pidfd.Close()
	line, _ := bufio.NewReader(console).ReadString('\n')
	if !strings.Contains(line, "serving as uid "+strconv.Itoa(st.UID)) {
		t.Fatalf("the jail's console says %q", line)
	}
	if st.UID < jailIDBase || st.UID >= jailIDBase+50 || st.GID != st.UID {
		t.Fatalf("jail uid/gid %d/%d, want one of the configured range", st.UID, st.GID)
	}
	if got := procUID(t, st.PID); got != st.UID {
		t.Fatalf("the jail's process runs as uid %d, want %d", got, st.UID)
	}
	shared := statOf(t, disk0)
	if int(shared.Uid) != memberUID || int(shared.Gid) != st.GID || shared.Mode&0o060 != 0o060 {
		t.Fatalf("the writable disk while jailed: uid %d gid %d mode %o; want the caller's, the jail's group, g+rw", shared.Uid, shared.Gid, shared.Mode&0o777)
	}
	if k := statOf(t, filepath.Join(f.vm, "kernel")); int(k.Gid) != testGID || k.Mode&0o777 != 0o644 {
		t.Fatalf("the read-only kernel was changed: gid %d mode %o", k.Gid, k.Mode&0o777)
	}
	root := filepath.Join(fcjail.Dir(f.cfg.Jails.Base, f.cfg.Jails.Firecracker, "vm-1"), "root")
	if in := statOf(t, filepath.Join(root, "initrd")); in.Ino == statOf(t, filepath.Join(f.vm, "initrd")).Ino || int(in.Uid) != st.UID {
		t.Fatalf("the initrd (not readable by all) was not copied for the jail's uid: ino %d uid %d", in.Ino, in.Uid)
	}

	var conn net.Conn
	as(t, memberUID, func() { conn, err = c.DialJail("vm-1", "api") })
	if err != nil {
		t.Fatal(err)
	}
	if body := getAPI(t, conn); !strings.Contains(body, `"id":"vm-1"`) {
		t.Fatalf("API: %s", body)
	}
	var list []JailInfo
	as(t, memberUID, func() { list, err = c.Jails() })
	if err != nil || len(list) != 1 || list[0].ID != "vm-1" || !list[0].Running || list[0].PID != st.PID {
		t.Fatalf("jail_list: %+v, %v", list, err)
	}

	// A helper restarted meanwhile (its VMs live on) knows the jail from its record.
	stops[f.srv]()
	f.sock, f.srv = startServer(t, f.cfg)
	c = f.client(t, memberUID)
	as(t, memberUID, func() { list, err = c.Jails() })
	if err != nil || len(list) != 1 || !list[0].Running {
		t.Fatalf("jail_list after a restart of the helper: %+v, %v", list, err)
	}

	as(t, memberUID, func() { err = c.KillJail("vm-1") })
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, st.Pidfd)
	as(t, memberUID, func() { err = c.RemoveJail("vm-1") })
	if err != nil {
		t.Fatal(err)
	}
	after := statOf(t, disk0)
	if after.Gid != before.Gid || after.Mode != before.Mode || after.Ino != before.Ino {
		t.Fatalf("the disk after the jail: gid %d mode %o; want %d %o as before", after.Gid, after.Mode&0o777, before.Gid, before.Mode&0o777)
	}
	if _, err := os.Lstat(filepath.Dir(root)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the jail is still there: %v", err)
	}
	as(t, memberUID, func() { list, err = c.Jails(); _ = c.RemoveJail("vm-1") })
	if err != nil || len(list) != 0 {
		t.Fatalf("jail_list after removal: %+v, %v", list, err)
	}
}

// A start that fails half-way leaves nothing: here the second writable disk is on another
// filesystem (no hard link possible) after the first was shared already.
func TestJailStartUndoesWhatItDid(t *testing.T) {
	f := newJailFixture(t, "", "")
	if statOf(t, "/dev/shm").Dev == statOf(t, f.vm).Dev {
		t.Skip("/dev/shm is on the filesystem of the test's files")
	}
	c := f.client(t, memberUID)
	spec, _ := f.spec(t, "vm-undo")
	other, err := os.CreateTemp("/dev/shm", "banger-fcj-disk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(other.Name())
	defer other.Close()
	if err := other.Chown(memberUID, testGID); err != nil {
		t.Fatal(err)
	}
	spec.Disks[1] = fcjail.Disk{File: other, Writable: true}
	disk0 := filepath.Join(f.vm, "disk0")
	before := statOf(t, disk0)
	as(t, memberUID, func() { _, err = c.StartJail(spec) })
	if !errors.Is(err, failure.Invalid) || !strings.Contains(err.Error(), "another filesystem") {
		t.Fatalf("start with a writable disk on another filesystem: %v", err)
	}
	if after := statOf(t, disk0); after.Gid != before.Gid || after.Mode != before.Mode {
		t.Fatalf("the first disk was not given back: gid %d mode %o", after.Gid, after.Mode&0o777)
	}
	if _, err := os.Lstat(fcjail.Dir(f.cfg.Jails.Base, f.cfg.Jails.Firecracker, "vm-undo")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed jail is still there: %v", err)
	}
}

// What a compromised daemon (any request it can send) can ask for: nothing that is not its
// own. Another uid's jail cannot be dialed, killed, removed or replaced; files that are not
// the caller's, or not regular files, are refused before anything is made; names and paths
// outside banger's are refused; a socket in the jail replaced by a symlink is not followed.
func TestJailCompromisedDaemon(t *testing.T) {
	f := newJailFixture(t, "", "")
	member := f.client(t, memberUID)
	other := f.client(t, otherUID)
	spec, console := f.spec(t, "vm-a")
	var st fcjail.Started
	var err error
	as(t, memberUID, func() { st, err = member.StartJail(spec) })
	if err != nil {
		t.Fatal(err)
	}
	defer st.Pidfd.Close()
	if line, _ := bufio.NewReader(console).ReadString('\n'); !strings.Contains(line, "serving") {
		t.Fatalf("the jail's console says %q", line)
	}
	defer as(t, memberUID, func() { _ = member.RemoveJail("vm-a") })
	disk0 := filepath.Join(f.vm, "disk0")
	shared := statOf(t, disk0)

	t.Run("another uid's jail", func(t *testing.T) {
		again, _ := f.spec(t, "vm-a")
		for name, call := range map[string]func() error{
			"dial":   func() error { c, err := other.DialJail("vm-a", "api"); closeConn(c); return err },
			"kill":   func() error { return other.KillJail("vm-a") },
			"remove": func() error { return other.RemoveJail("vm-a") },
			"start":  func() error { _, err := other.StartJail(again); return err },
		} {
			var err error
			as(t, otherUID, func() { err = call() })
			if !errors.Is(err, failure.Conflict) {
				t.Errorf("%s: %v, want a conflict", name, err)
			}
		}
		if !processRuns(st.Pidfd) {
			t.Fatal("the member's Firecracker was killed")
		}
		var list []JailInfo
		as(t, otherUID, func() { list, err = other.Jails() })
		if err != nil || len(list) != 0 {
			t.Fatalf("another uid lists %+v, %v", list, err)
		}
	})
	t.Run("files that are not the caller's", func(t *testing.T) {
		s, _ := f.spec(t, "vm-b")
		var err error
		as(t, otherUID, func() { _, err = other.StartJail(s) })
		if !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "belongs to uid") {
			t.Fatalf("start with the member's files as another uid: %v", err)
		}
		if now := statOf(t, disk0); now.Gid != shared.Gid || now.Mode != shared.Mode {
			t.Fatal("a refused start changed the member's file")
		}
		devnull, _ := os.Open("/dev/null")
		defer devnull.Close()
		dir, _ := os.Open(f.vm)
		defer dir.Close()
		link := filepath.Join(f.vm, "link")
		if err := os.Symlink("disk0", link); err != nil {
			t.Fatal(err)
		}
		lfd, err := unix.Open(link, unix.O_PATH|unix.O_NOFOLLOW, 0)
		if err != nil {
			t.Fatal(err)
		}
		symlink := os.NewFile(uintptr(lfd), "link")
		defer symlink.Close()
		for name, bad := range map[string]*os.File{"a device": devnull, "a directory": dir, "a symlink": symlink} {
			s, _ := f.spec(t, "vm-c")
			s.Disks[0].File = bad
			as(t, memberUID, func() { _, err = member.StartJail(s) })
			if !errors.Is(err, failure.Invalid) && !errors.Is(err, failure.Conflict) {
				t.Errorf("%s as a disk: %v", name, err)
			}
		}
		s, _ = f.spec(t, "vm-c")
		s.Console = s.Kernel
		as(t, memberUID, func() { _, err = member.StartJail(s) })
		if !errors.Is(err, failure.Invalid) {
			t.Errorf("a file as the console: %v", err)
		}
	})
	t.Run("names and paths", func(t *testing.T) {
		for _, req := range []Request{
			{Op: OpJailDial, Jail: "../../etc", Socket: "api"},
			{Op: OpJailDial, Jail: "vm-a", Socket: "../../../run/docker.sock"},
			{Op: OpJailRemove, Jail: "/"},
			{Op: OpJailKill, Jail: strings.Repeat("a", 65)},
			{Op: OpJailStart, Jail: "vm-x", Tap: "eth0", Files: []JailFile{{Name: "kernel"}}},
			{Op: OpJailStart, Jail: "vm-x", Files: []JailFile{{Name: "/etc/shadow"}}},
			{Op: OpJailStart, Jail: "vm-x", Files: []JailFile{{Name: "kernel", Writable: true}}},
		} {
			var err error
			as(t, memberUID, func() { _, _, err = member.call(req) })
			if !errors.Is(err, failure.Invalid) {
				t.Errorf("%+v: %v, want invalid", req, err)
			}
		}
		// A namespace without the configured prefix.
		var err error
		c := &Client{socket: f.sock, netw: netOf("other-ns")}
		as(t, memberUID, func() { _, _, err = c.call(Request{Op: OpJailList}) })
		if !errors.Is(err, failure.Invalid) {
			t.Errorf("a namespace without banger's prefix: %v", err)
		}
	})
	t.Run("descriptors", func(t *testing.T) {
		devnull, _ := os.Open("/dev/null")
		defer devnull.Close()
		var err error
		as(t, memberUID, func() { _, _, err = member.callWith(Request{Op: OpJailList}, []*os.File{devnull}, clientTimeout) })
		if !errors.Is(err, failure.Invalid) {
			t.Errorf("descriptors with jail_list: %v", err)
		}
		many := make([]*os.File, MaxRequestFDs+1)
		for i := range many {
			many[i] = devnull
		}
		as(t, memberUID, func() { _, _, err = member.callWith(Request{Op: OpJailStart, Jail: "vm-x"}, many, clientTimeout) })
		if err == nil || !strings.Contains(err.Error(), "descriptors") {
			t.Errorf("%d descriptors: %v", len(many), err)
		}
	})
	t.Run("a symlinked socket", func(t *testing.T) {
		root := filepath.Join(fcjail.Dir(f.cfg.Jails.Base, f.cfg.Jails.Firecracker, "vm-a"), "root")
		decoy := filepath.Join(t.TempDir(), "decoy.sock")
		l, err := net.Listen("unix", decoy)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var accepted atomic.Bool
		go func() {
			if c, err := l.Accept(); err == nil {
				accepted.Store(true)
				c.Close()
			}
		}()
		api := filepath.Join(root, fcjail.Sockets["api"])
		if err := os.Rename(api, api+".real"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(decoy, api); err != nil {
			t.Fatal(err)
		}
		var conn net.Conn
		as(t, memberUID, func() { conn, err = member.DialJail("vm-a", "api") })
		closeConn(conn)
		if err == nil {
			t.Fatal("the helper dialed through a symlink in the jail")
		}
		os.Remove(api)
		if err := os.Rename(api+".real", api); err != nil {
			t.Fatal(err)
		}
		if accepted.Load() {
			t.Fatal("the decoy socket was connected to")
		}
	})
}

func closeConn(c net.Conn) {
	if c != nil {
		c.Close()
	}
}

// processRuns reports whether the process of pidfd f has not exited.
func processRuns(f *os.File) bool {
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}, 0)
	return err == nil && n == 0
}

// Jail requests without [jails] configured are refused, and hello says jails are off.
func TestJailsOffWithoutConfiguration(t *testing.T) {
	ns := testNS(t)
	sock, _ := startServer(t, testConfig(t))
	c, err := dialAs(t, memberUID, testGID, nil, sock, netOf(ns))
	if err != nil {
		t.Fatal(err)
	}
	as(t, memberUID, func() { err = c.JailsReady() })
	if err == nil || !strings.Contains(err.Error(), "[jails]") {
		t.Fatalf("JailsReady without jails: %v", err)
	}
	as(t, memberUID, func() { _, err = c.Jails() })
	if !errors.Is(err, failure.Invalid) {
		t.Fatalf("jail_list without jails: %v", err)
	}
}

// The real jailer and Firecracker (BANGER_JAILER_BIN, BANGER_FIRECRACKER_BIN; skipped without
// them) in a jail the helper starts for a caller that is not root, in a namespace of the
// test's: Firecracker runs as the jail's uid and accepts, through the helper's dial, the
// configuration of a VM whose files and tap are the caller's (it opens each as it is given).
func TestJailWithTheRealJailer(t *testing.T) {
	jailer, fc := os.Getenv("BANGER_JAILER_BIN"), os.Getenv("BANGER_FIRECRACKER_BIN")
	if jailer == "" || fc == "" {
		t.Skip("set BANGER_JAILER_BIN and BANGER_FIRECRACKER_BIN to a jailer and a firecracker of one release")
	}
	f := newJailFixture(t, jailer, fc)
	c := f.client(t, memberUID)
	const vmID = "0123456789abcdef0123456789abcdef"
	tap := "bg0123456789ab"
	var q *os.File
	var err error
	as(t, memberUID, func() { q, err = c.AddTap(vmID) })
	if err != nil {
		t.Fatal(err)
	}
	q.Close() // Firecracker opens the tap itself, by name
	defer as(t, memberUID, func() { _ = c.DeleteTap(vmID) })
	spec, console := f.spec(t, "vm-real")
	spec.Tap = tap
	var st fcjail.Started
	as(t, memberUID, func() { st, err = c.StartJail(spec) })
	if err != nil {
		t.Fatal(err)
	}
	defer st.Pidfd.Close()
	defer as(t, memberUID, func() { _ = c.RemoveJail("vm-real") })
	go io.Copy(io.Discard, console)
	api := func(method, path, body string) (int, string) {
		t.Helper()
		for {
			var conn net.Conn
			as(t, memberUID, func() { conn, err = c.DialJail("vm-real", "api") })
			if errors.Is(err, os.ErrNotExist) && processRuns(st.Pidfd) {
				continue // the socket appears a few ms after the start
			}
			if err != nil {
				t.Fatalf("dial the jail's API: %v", err)
			}
			defer conn.Close()
			req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if err := req.Write(conn); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return resp.StatusCode, string(b)
		}
	}
	if code, body := api("GET", "/", ""); code != 200 || !strings.Contains(body, `"id":"vm-real"`) {
		t.Fatalf("GET /: %d %s", code, body)
	}
	// The API answers: the jailer has become Firecracker.
	if got := procUID(t, st.PID); got != st.UID {
		t.Fatalf("Firecracker runs as uid %d, want the jail's %d", got, st.UID)
	}
	for _, call := range [][2]string{
		{"/logger", `{"log_path":"/firecracker.log","level":"Info"}`},
		{"/metrics", `{"metrics_path":"/firecracker.metrics"}`},
		{"/boot-source", `{"kernel_image_path":"/kernel","initrd_path":"/initrd"}`},
		{"/drives/disk0", `{"drive_id":"disk0","path_on_host":"/disk0","is_root_device":false,"is_read_only":false}`},
		{"/drives/disk1", `{"drive_id":"disk1","path_on_host":"/disk1","is_root_device":false,"is_read_only":true}`},
		{"/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"` + tap + `"}`},
	} {
		if code, body := api("PUT", call[0], call[1]); code != 204 {
			t.Fatalf("PUT %s: %d %s", call[0], code, body)
		}
	}
	as(t, memberUID, func() { err = c.RemoveJail("vm-real") })
	if err != nil {
		t.Fatal(err)
	}
	if processRuns(st.Pidfd) {
		t.Fatal("Firecracker runs on after jail_remove")
	}
	if d := statOf(t, filepath.Join(f.vm, "disk0")); int(d.Gid) != testGID || d.Mode&0o777 != 0o600 {
		t.Fatalf("disk0 after the jail: gid %d mode %o", d.Gid, d.Mode&0o777)
	}
}

// One caller may have per_caller jails at once: each runs a Firecracker under a uid of its
// own, beyond the caller's own limits. Another caller is not held back by it.
func TestJailsPerCaller(t *testing.T) {
	f := newJailFixture(t, "", "")
	member, other := f.client(t, memberUID), f.client(t, otherUID)
	var err error
	for _, id := range []string{"vm-1", "vm-2", "vm-3"} {
		spec, _ := f.spec(t, id)
		var st fcjail.Started
		as(t, memberUID, func() { st, err = member.StartJail(spec) })
		if id == "vm-3" {
			if !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "per_caller") {
				t.Fatalf("a third jail with per_caller = 2: %v", err)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		st.Pidfd.Close()
		defer as(t, memberUID, func() { _ = member.RemoveJail(id) })
	}
	// Another uid's jail: its files are its own.
	for _, name := range []string{"kernel", "initrd", "disk0", "disk1", "log", "metrics"} {
		if err := os.Chown(filepath.Join(f.vm, name), otherUID, testGID); err != nil {
			t.Fatal(err)
		}
	}
	spec, _ := f.spec(t, "vm-other")
	var st fcjail.Started
	as(t, otherUID, func() { st, err = other.StartJail(spec) })
	if err != nil {
		t.Fatalf("another uid's first jail: %v", err)
	}
	st.Pidfd.Close()
	as(t, otherUID, func() { err = other.RemoveJail("vm-other") })
	if err != nil {
		t.Fatal(err)
	}
}

// Two removals of one jail at once (the daemon's Kill and its watcher's cleanup of the same
// machine) both succeed: the second waits for the first and finds the jail gone.
func TestJailRemovedTwiceAtOnce(t *testing.T) {
	f := newJailFixture(t, "", "")
	c := f.client(t, memberUID)
	spec, _ := f.spec(t, "vm-1")
	var st fcjail.Started
	var err error
	as(t, memberUID, func() { st, err = c.StartJail(spec) })
	if err != nil {
		t.Fatal(err)
	}
	defer st.Pidfd.Close()
	errs := make(chan error, 2)
	for range 2 {
		go as(t, memberUID, func() { errs <- c.RemoveJail("vm-1") })
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a removal at the same time as another: %v", err)
		}
	}
	if processRuns(st.Pidfd) {
		t.Error("the jail's process runs on")
	}
}
