package client

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/peercred"
	"github.com/banger-dev/banger/internal/version"
)

// nobody is the uid and gid of "another local user".
const nobody = 65534

// nobodyDaemon starts the test binary as another user (nobody) listening on a socket in a
// directory anyone may write to, and returns the socket and the lines the impostor prints
// (one "received N" per connection).
func nobodyDaemon(t *testing.T) (string, *bufio.Scanner) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a listener as another user")
	}
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "bangerd.sock")
	killDaemonsOnCleanup(t, socket)
	cmd := exec.Command(selfBinary(t))
	cmd.Env = append(os.Environ(), "BANGER_SOCKET="+socket)
	cmd.Env = append(cmd.Env, fakeEnv(version.Get(), "", "nobody")...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "listening" {
		t.Fatalf("impostor did not start: %q %v", lines.Text(), lines.Err())
	}
	return socket, lines
}

// TestClientRefusesSocketOfAnotherUser: another user's socket file is refused before the
// client even connects, and Ensure does not start a daemon over it.
func TestClientRefusesSocketOfAnotherUser(t *testing.T) {
	socket, _ := nobodyDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := New(socket).Version(ctx)
	if !errors.Is(err, peercred.ErrUntrusted) {
		t.Fatalf("Version = %v; want a refusal (peercred.ErrUntrusted)", err)
	}
	for _, want := range []string{"socket file " + socket, "uid 65534", "posing as banger's daemon", "BANGER_SOCKET"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	var notices []string
	_, err = New(socket).Ensure(ctx, StartOptions{
		Daemon: "/nonexistent/bangerd", LogPath: filepath.Join(t.TempDir(), "log"),
		Notice: func(s string) { notices = append(notices, s) },
	})
	if !errors.Is(err, peercred.ErrUntrusted) || len(notices) > 0 {
		t.Errorf("Ensure = %v, notices %q; want the refusal and no daemon started", err, notices)
	}
}

// TestClientRefusesPeerOfAnotherUser: even when the socket file looks right (root's), a
// process of another user listening on it (SO_PEERCRED) gets the connection closed before the
// client sends a byte.
func TestClientRefusesPeerOfAnotherUser(t *testing.T) {
	socket, lines := nobodyDaemon(t)
	if err := os.Lchown(socket, 0, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := New(socket).Version(ctx)
	if !errors.Is(err, peercred.ErrUntrusted) {
		t.Fatalf("Version = %v; want a refusal (peercred.ErrUntrusted)", err)
	}
	for _, want := range []string{"the process serving " + socket, "uid 65534", "not to 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	got := make(chan string, 1)
	go func() {
		lines.Scan()
		got <- lines.Text()
	}()
	select {
	case line := <-got:
		if line != "received 0" {
			t.Errorf("the impostor says %q; want \"received 0\": the client must send nothing", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the impostor never saw the connection end")
	}
}

// TestClientTrustsItsOwnDaemon: a socket of root's, served by root, is used.
func TestClientTrustsItsOwnDaemon(t *testing.T) {
	s := newDaemonSetup(t)
	s.startDirectly(t, version.Get(), s.stateDir)
	if _, err := New(s.socket).Version(context.Background()); err != nil {
		t.Fatalf("Version: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(s.socket, &st); err != nil || int(st.Uid) != os.Geteuid() {
		t.Errorf("socket owner %d, %v", st.Uid, err)
	}
}
