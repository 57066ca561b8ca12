package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/version"
)

// The test binary doubles as a fake bangerd: started with envFake=1 it serves the daemon's
// version and shutdown routes on $BANGER_SOCKET instead of running the tests. These variables
// steer it.
const (
	envFake         = "BANGER_FAKE_DAEMON"    // "1": be the fake daemon
	envFakeMode     = "BANGER_FAKE_MODE"      // "" serve; "hang": accept but never answer; "silent": never listen; "fail": exit 1 at once; "nobody": see runNobodyListener
	envFakeVersion  = "BANGER_FAKE_VERSION"   // api.Version.Version it reports
	envFakeCommit   = "BANGER_FAKE_COMMIT"    // api.Version.Commit it reports
	envFakeDate     = "BANGER_FAKE_DATE"      // api.Version.Date it reports
	envFakeStateDir = "BANGER_FAKE_STATE_DIR" // api.Version.StateDir it reports
)

// fakeFailure is what the fake prints before exiting in "fail" mode, as a daemon with a broken
// config would.
const fakeFailure = "bangerd: config.toml: unknown key \"colour\""

func TestMain(m *testing.M) {
	if os.Getenv(envFake) == "1" {
		os.Exit(runFakeDaemon())
	}
	os.Exit(m.Run())
}

func runFakeDaemon() int {
	// Never outlive the test run, whatever becomes of the test that started it.
	time.AfterFunc(2*time.Minute, func() { os.Exit(3) })
	socket := os.Getenv("BANGER_SOCKET")
	switch os.Getenv(envFakeMode) {
	case "fail":
		fmt.Fprintln(os.Stderr, "bangerd: starting")
		fmt.Fprintln(os.Stderr, fakeFailure)
		return 1
	case "silent":
		// A daemon that never listens: the tests that start it kill it (or it exits after
		// two minutes, above); nothing waits for this sleep to end.
		time.Sleep(time.Hour)
		return 0
	case "nobody":
		return runNobodyListener(socket)
	}
	_ = os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake bangerd: %v\n", err)
		return 1
	}
	fmt.Println("listening") // for startDirectly: connections are queued from here on
	if os.Getenv(envFakeMode) == "hang" {
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				return 1
			}
			held = append(held, c) // never answered, never closed
		}
	}
	stop := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc(string(api.RouteVersion), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(api.Version{
			Version:  os.Getenv(envFakeVersion),
			Commit:   os.Getenv(envFakeCommit),
			Date:     os.Getenv(envFakeDate),
			API:      version.API,
			PID:      os.Getpid(),
			StateDir: os.Getenv(envFakeStateDir),
		})
	})
	mux.HandleFunc(string(api.RouteShutdown), func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		select {
		case <-stop:
		default:
			close(stop)
		}
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	<-stop
	// Shutdown lets the shutdown answer go out, then closes (and removes) the socket.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return 0
}

// fakeEnv is the environment that makes the test binary a fake daemon of build info serving
// stateDir, in mode ("" for a normal daemon).
func fakeEnv(info version.Info, stateDir, mode string) []string {
	return []string{
		// Under -race the runtime sleeps a second before exiting; a daemon asked to shut down
		// would then look slow to go.
		"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
		envFake + "=1",
		envFakeMode + "=" + mode,
		envFakeVersion + "=" + info.Version,
		envFakeCommit + "=" + info.Commit,
		envFakeDate + "=" + info.Date,
		envFakeStateDir + "=" + stateDir,
	}
}

// shortTempDir is a fresh directory whose socket paths fit the 108-byte unix socket limit
// (t.TempDir() paths, made from the test name, can be too long). It is removed after the test.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bc")
	if err != nil {
		t.Fatal(err)
	}
	if len(dir)+len("/bangerd.sock") >= 108 {
		os.RemoveAll(dir)
		if dir, err = os.MkdirTemp("/tmp", "bc"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// daemonsOn lists the live processes started with BANGER_SOCKET=socket in their environment:
// every fake daemon (and stand-in binary) a test started for that socket. Zombies, whose
// environment is gone, are not listed.
func daemonsOn(t *testing.T, socket string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	needle := []byte("\x00BANGER_SOCKET=" + socket + "\x00")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if bytes.Contains(append([]byte{0}, env...), needle) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killDaemonsOnCleanup makes sure no process started for socket survives the test: at cleanup
// it SIGKILLs them and waits until each has exited, through a pidfd that becomes readable
// when the process ends, and looks again for any started meanwhile.
func killDaemonsOnCleanup(t *testing.T, socket string) {
	t.Cleanup(func() {
		for range 10 {
			pids := daemonsOn(t, socket)
			if len(pids) == 0 {
				return
			}
			for _, pid := range pids {
				if err := killAndWait(pid); err != nil {
					t.Errorf("process %d started for %s: %v", pid, socket, err)
					return
				}
			}
		}
		t.Errorf("processes %v started for %s keep coming back", daemonsOn(t, socket), socket)
	})
}

// killAndWait sends SIGKILL to pid and waits until it has exited (a zombie at least); a pid
// that is already gone is fine.
func killAndWait(pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send SIGKILL: %w", err)
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 10_000) // a guard against hanging, not a timing check
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("wait for its exit: %w", err)
		case n == 0:
			return errors.New("survives SIGKILL")
		}
		return nil
	}
}

// selfBinary is the test binary, which is the fake daemon too.
func selfBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return self
}

// socketPath joins a file name to a short directory.
func socketPath(t *testing.T) string {
	return filepath.Join(shortTempDir(t), "bangerd.sock")
}

// missingFrom returns the first of subs that s lacks, or "" when s has them all.
func missingFrom(s string, subs ...string) string {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return sub
		}
	}
	return ""
}

// runNobodyListener is another local user posing as the daemon: it becomes uid and gid nobody
// (65534), listens on socket, prints "listening", and for each connection prints how many
// bytes the client sent before closing it.
func runNobodyListener(socket string) int {
	if err := syscall.Setgroups(nil); err != nil {
		fmt.Fprintf(os.Stderr, "fake: setgroups: %v\n", err)
		return 1
	}
	if err := syscall.Setgid(nobody); err != nil {
		fmt.Fprintf(os.Stderr, "fake: setgid: %v\n", err)
		return 1
	}
	if err := syscall.Setuid(nobody); err != nil {
		fmt.Fprintf(os.Stderr, "fake: setuid: %v\n", err)
		return 1
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake: %v\n", err)
		return 1
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		fmt.Printf("received %d\n", n)
	}
}
