package roothelper

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenMakesTheSocketForTheGroup(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "run", "banger")
	sock := filepath.Join(dir, "helper.sock")
	for range 2 { // the second replaces the first's stale socket
		l, err := Listen(sock, testGID)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != testGID {
			t.Fatalf("socket %s: mode %s, owner %d:%d; want 0660 root:%d", sock, fi.Mode(), st.Uid, st.Gid, testGID)
		}
		// Leave the file behind as a crashed helper would.
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	}
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sock, []byte("not a socket"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(sock, testGID); err == nil {
		t.Fatal("Listen replaced a file that is not a socket")
	}
}

// TestSocketActivation starts the test binary as systemd would (the listening socket at
// descriptor 3, LISTEN_PID and LISTEN_FDS naming it) and talks to the helper it serves.
func TestSocketActivation(t *testing.T) {
	if os.Getenv("BANGER_RH_ACTIVATED") == "1" {
		activatedHelper(t)
		return
	}
	ns := testNS(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "helper.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -test.run='^TestSocketActivation$' -test.v`, os.Args[0])
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), "BANGER_RH_ACTIVATED=1", "BANGER_RH_PREFIX="+nsPrefix, "BANGER_RH_STATE="+t.TempDir())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("the activated helper's output:\n%s", out.String())
		}
	}()
	c, err := Dial(sock, netOf(ns), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, uid, err := c.Hello(); err != nil || uid != 0 {
		t.Fatalf("hello: uid %d, %v", uid, err)
	}
}

// activatedHelper is the child of TestSocketActivation: a helper on the socket systemd
// would pass.
func activatedHelper(t *testing.T) {
	l, err := ActivationListener()
	if err != nil || l == nil {
		t.Fatalf("ActivationListener = %v, %v", l, err)
	}
	if os.Getenv("LISTEN_PID") != "" || os.Getenv("LISTEN_FDS") != "" {
		t.Error("LISTEN_PID and LISTEN_FDS are still set: children would inherit them")
	}
	cfg := DefaultConfig()
	cfg.NamespacePrefix = os.Getenv("BANGER_RH_PREFIX")
	cfg.HostNamespace = false
	cfg.StateDir = os.Getenv("BANGER_RH_STATE")
	srv, err := NewServer(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Fatal(srv.Serve(l)) // until the parent kills it
}

func TestActivationListenerIgnoresAnotherProcesssVariables(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	if l, err := ActivationListener(); l != nil || err != nil {
		t.Fatalf("ActivationListener with LISTEN_PID of another process = %v, %v", l, err)
	}
}

// TestOutsiderProcess runs the test binary as a separate process of a uid outside the group
// (syscall.Credential, no supplementary groups): the helper refuses it, and a member process
// is served.
func TestOutsiderProcess(t *testing.T) {
	if who := os.Getenv("BANGER_RH_CHILD"); who != "" {
		_, err := Dial(os.Getenv("BANGER_RH_SOCK"), netOf(os.Getenv("BANGER_RH_NS")), nil)
		switch {
		case who == "outsider" && !errors.Is(err, ErrDenied):
			t.Fatalf("outsider: Dial = %v, want ErrDenied", err)
		case who == "member" && err != nil:
			t.Fatalf("member: Dial = %v", err)
		}
		return
	}
	ns := testNS(t)
	sock, _ := startServer(t, testConfig(t))
	// A copy of the test binary the other uids can run.
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "roothelper.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for who, cred := range map[string]*syscall.Credential{
		"outsider": {Uid: outsider, Gid: outsider, Groups: []uint32{}},
		"member":   {Uid: memberUID, Gid: memberUID, Groups: []uint32{testGID}},
	} {
		cmd := exec.Command(bin, "-test.run=^TestOutsiderProcess$")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Env = append(os.Environ(), "BANGER_RH_CHILD="+who, "BANGER_RH_SOCK="+sock, "BANGER_RH_NS="+ns, "GOCACHE="+dir, "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s (uid %d): %v\n%s", who, cred.Uid, err, out)
		}
	}
}
