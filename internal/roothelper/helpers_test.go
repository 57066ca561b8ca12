package roothelper

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The uids and gids tests act as: testGID is the helper's group in tests.
const (
	memberUID = 65534 // nobody, in testGID
	otherUID  = 65533 // also in testGID: a second daemon user
	testGID   = 64123
	outsider  = 65532 // in no group of the helper's
)

// nsPrefix is what every namespace of these tests is called: the helper under test is
// configured to accept no other, so that even a wrong request cannot reach the host's
// namespace or another test's.
var nsPrefix = fmt.Sprintf("banger-rh-%d-", os.Getpid())

var nsCount atomic.Int32

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, taps, nftables)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

// testNS makes a network namespace for the test and deletes it afterwards.
func testNS(t testing.TB) string {
	t.Helper()
	needRoot(t)
	name := fmt.Sprintf("%s%d", nsPrefix, nsCount.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	inNS(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// inNS runs a command in namespace ns and returns its output.
func inNS(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testConfig serves banger's default bridge and CIDR in this test process's namespaces only,
// never in the host's.
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.NamespacePrefix = nsPrefix
	cfg.HostNamespace = false
	cfg.StateDir = t.TempDir()
	cfg.Networks[0].OpenPorts = []uint16{8080}
	return cfg
}

// startServer serves cfg on a socket in a temporary directory everyone may reach (so that the
// helper's own check, not the file mode, is what refuses), and stops it afterwards.
func startServer(t testing.TB, cfg Config, setup ...func(*Server)) (string, *Server) {
	t.Helper()
	srv, err := NewServer(cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetGroupID(testGID)
	for _, f := range setup {
		f(srv)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // t.TempDir makes both 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "helper.sock")
	l, err := Listen(sock, testGID)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			l.Close()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			srv.Close()
		})
	}
	t.Cleanup(stop)
	stops[srv] = stop
	return sock, srv
}

// stops stops the server a test started, before the test ends.
var stops = map[*Server]func(){}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// asCaller runs fn on one OS thread whose credentials are uid, gid and groups, then root's
// again: sockets fn connects carry them (SO_PEERCRED, SO_PEERGROUPS) as a process of that
// user's would. Only that thread changes (raw syscalls, not Go's all-threads wrappers). fn must
// not call t.Fatal; goroutines it starts run as root.
func asCaller(t testing.TB, uid, gid int, groups []int, fn func()) {
	t.Helper()
	needRoot(t)
	done := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // unlocked only once root is back
		gs := make([]uint32, len(groups))
		for i, g := range groups {
			gs[i] = uint32(g)
		}
		set := func(uid, gid uintptr, gs []uint32) string {
			gs = append(gs, 0)[:len(gs)] // room for &gs[0] when there are none
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
				return "setresuid(0): " + e.Error()
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(unsafe.Pointer(&gs[:1][0])), 0); e != 0 {
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
		if msg := set(uintptr(uid), uintptr(gid), gs); msg != "" {
			done <- msg
			return // the thread stays locked and is discarded
		}
		var panicked any
		func() {
			defer func() { panicked = recover() }()
			fn()
		}()
		if msg := set(0, 0, []uint32{0}); msg != "" {
			done <- "restore root: " + msg
			return
		}
		runtime.UnlockOSThread()
		if panicked != nil {
			done <- fmt.Sprint("panic as uid ", uid, ": ", panicked)
			return
		}
		done <- ""
	}()
	if msg := <-done; msg != "" {
		t.Fatal(msg)
	}
}

// dialAs is Dial as another user; it returns the client or the error.
func dialAs(t testing.TB, uid, gid int, groups []int, sock string, netw Network) (c *Client, err error) {
	asCaller(t, uid, gid, groups, func() { c, err = Dial(sock, netw, nil) })
	return c, err
}

// rawRequest sends b as one request, as the caller on this thread, and returns the response.
func rawRequest(sock string, b []byte) (Response, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return Response{}, err
	}
	defer conn.Close()
	if _, err := conn.Write(b); err != nil {
		return Response{}, err
	}
	if err := conn.CloseWrite(); err != nil {
		return Response{}, err
	}
	r, files, err := readResponse(conn)
	closeAll(files)
	return r, err
}
