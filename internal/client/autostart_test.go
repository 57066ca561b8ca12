package client

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/version"
)

// The Ensure tests are not parallel: some shorten startWait, which Ensure reads.

// daemonSetup is one test's daemon socket, state dir and log, with the StartOptions that start
// the fake daemon for them.
type daemonSetup struct {
	socket   string
	stateDir string
	logPath  string
	notices  []string
}

func newDaemonSetup(t *testing.T) *daemonSetup {
	t.Helper()
	s := &daemonSetup{
		socket:   socketPath(t),
		stateDir: filepath.Join(t.TempDir(), "state"),
		logPath:  filepath.Join(t.TempDir(), "log", "bangerd.log"),
	}
	killDaemonsOnCleanup(t, s.socket)
	return s
}

// options start the fake daemon of build info in mode ("" for a normal one).
func (s *daemonSetup) options(t *testing.T, info version.Info, mode string) StartOptions {
	return StartOptions{
		Daemon:   selfBinary(t),
		StateDir: s.stateDir,
		LogPath:  s.logPath,
		Notice:   func(msg string) { s.notices = append(s.notices, msg) },
		Env:      fakeEnv(info, s.stateDir, mode),
	}
}

// log is what the started daemons wrote, for failure messages.
func (s *daemonSetup) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// startDirectly starts a fake daemon the way another CLI would have (not through this
// client), waits until it listens (it says so on its stdout) and answers, and returns its pid.
func (s *daemonSetup) startDirectly(t *testing.T, info version.Info, stateDir string) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd := exec.Command(selfBinary(t))
	cmd.Env = append(os.Environ(), "BANGER_SOCKET="+s.socket)
	cmd.Env = append(cmd.Env, fakeEnv(info, stateDir, "")...)
	cmd.Stdout = w
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	// A read error means the fake exited first: its stdout closed.
	if line, err := bufio.NewReader(r).ReadString('\n'); line != "listening\n" {
		t.Fatalf("fake daemon on %s said %q (%v), want \"listening\"", s.socket, line, err)
	}
	v, err := New(s.socket).Version(context.Background())
	if err != nil {
		t.Fatalf("fake daemon does not answer on %s: %v", s.socket, err)
	}
	if v.PID != cmd.Process.Pid {
		t.Fatalf("fake daemon answers with pid %d, want %d", v.PID, cmd.Process.Pid)
	}
	return cmd.Process.Pid
}

// otherBuild is this build with another commit, as a daemon left over from an upgrade.
func otherBuild() version.Info {
	info := version.Get()
	info.Commit = "0ldc0mm1t0ld"
	info.Date = "2020-01-02T03:04:05Z"
	return info
}

func setStartWait(t *testing.T, d time.Duration) {
	old := startWait
	startWait = d
	t.Cleanup(func() { startWait = old })
}

func TestEnsureStartsADaemonWhenNothingAnswers(t *testing.T) {
	s := newDaemonSetup(t)
	c := New(s.socket)
	mine := version.Get()

	v, err := c.Ensure(context.Background(), s.options(t, mine, ""))
	if err != nil {
		t.Fatalf("Ensure with nothing listening: %v\ndaemon log:\n%s", err, s.log())
	}
	if got := (version.Info{Version: v.Version, Commit: v.Commit, Date: v.Date}); !got.Same(mine) {
		t.Errorf("Ensure returned build %+v, want this build %+v", got, mine)
	}
	if v.StateDir != s.stateDir {
		t.Errorf("Ensure returned state dir %q, want %q", v.StateDir, s.stateDir)
	}
	if pids := daemonsOn(t, s.socket); !slices.Equal(pids, []int{v.PID}) {
		t.Errorf("daemons running on the socket = %v, want just the one Ensure returned (pid %d)", pids, v.PID)
	}
	if len(s.notices) != 1 || missingFrom(s.notices[0], "started daemon", selfBinary(t), strconv.Itoa(v.PID)) != "" {
		t.Errorf("notices = %q, want one saying \"started daemon %s (pid %d)\"", s.notices, selfBinary(t), v.PID)
	}
	if _, err := os.Stat(s.logPath); err != nil {
		t.Errorf("the daemon's log was not created: %v", err)
	}
}

func TestEnsureKeepsARunningDaemonOfThisBuild(t *testing.T) {
	s := newDaemonSetup(t)
	pid := s.startDirectly(t, version.Get(), s.stateDir)

	v, err := New(s.socket).Ensure(context.Background(), s.options(t, version.Get(), ""))
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if v.PID != pid {
		t.Errorf("Ensure returned pid %d, want the running daemon's %d", v.PID, pid)
	}
	if len(s.notices) != 0 {
		t.Errorf("notices = %q, want none: nothing was started or restarted", s.notices)
	}
	if pids := daemonsOn(t, s.socket); !slices.Equal(pids, []int{pid}) {
		t.Errorf("daemons running on the socket = %v, want just the original %d", pids, pid)
	}
}

func TestEnsureRestartsADaemonOfAnotherBuild(t *testing.T) {
	mine := version.Get()
	for _, tc := range []struct {
		name string
		// start runs the old daemon and returns its pid.
		start func(t *testing.T, s *daemonSetup) (pid int)
	}{
		{"old daemon started by another CLI", func(t *testing.T, s *daemonSetup) int {
			pid := s.startDirectly(t, otherBuild(), s.stateDir)
			return pid
		}},
		{"old daemon started by this process's own Ensure", func(t *testing.T, s *daemonSetup) int {
			v, err := New(s.socket).Ensure(context.Background(), s.options(t, otherBuild(), ""))
			if err != nil {
				t.Fatalf("start the old daemon: %v", err)
			}
			s.notices = nil
			return v.PID
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newDaemonSetup(t)
			oldPID := tc.start(t, s)

			v, err := New(s.socket).Ensure(context.Background(), s.options(t, mine, ""))
			if err != nil {
				t.Fatalf("Ensure over a daemon of another build: %v\ndaemon log:\n%s", err, s.log())
			}
			if got := (version.Info{Version: v.Version, Commit: v.Commit, Date: v.Date}); !got.Same(mine) {
				t.Errorf("Ensure returned build %+v, want this build %+v", got, mine)
			}
			if v.PID == oldPID {
				t.Errorf("Ensure returned the old daemon (pid %d), want a new one", oldPID)
			}
			// Ensure returns once the old daemon has exited; daemonsOn lists no zombies.
			if slices.Contains(daemonsOn(t, s.socket), oldPID) {
				t.Errorf("the old daemon (pid %d) still runs after Ensure replaced it", oldPID)
			}
			if pids := daemonsOn(t, s.socket); !slices.Equal(pids, []int{v.PID}) {
				t.Errorf("daemons running on the socket = %v, want just the new one (pid %d)", pids, v.PID)
			}
			if len(s.notices) != 2 ||
				missingFrom(s.notices[0], "restarting daemon", "0ldc0mm1t0ld") != "" ||
				missingFrom(s.notices[1], "started daemon") != "" {
				t.Errorf("notices = %q, want \"restarting daemon: it is build …0ldc0mm1t0ld…\" then \"started daemon …\"", s.notices)
			}
		})
	}
}

func TestEnsureRefusesADaemonServingAnotherStateDir(t *testing.T) {
	s := newDaemonSetup(t)
	otherState := filepath.Join(t.TempDir(), "someone-elses-state")
	pid := s.startDirectly(t, version.Get(), otherState)

	_, err := New(s.socket).Ensure(context.Background(), s.options(t, version.Get(), ""))
	var apiErr *api.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("Ensure against a daemon of another state dir: err = %v (%T), want an *api.Error", err, err)
	}
	if apiErr.Code != "conflict" {
		t.Errorf("error code = %q, want \"conflict\"", apiErr.Code)
	}
	if m := missingFrom(apiErr.Message, s.socket, otherState, s.stateDir); m != "" {
		t.Errorf("error message %q does not name %q (want socket, its state dir and ours)", apiErr.Message, m)
	}
	if !strings.Contains(apiErr.Hint, "BANGER_SOCKET") {
		t.Errorf("hint %q does not mention BANGER_SOCKET", apiErr.Hint)
	}
	if len(s.notices) != 0 {
		t.Errorf("notices = %q, want none: the daemon must not be restarted", s.notices)
	}
	if pids := daemonsOn(t, s.socket); !slices.Equal(pids, []int{pid}) {
		t.Errorf("daemons running on the socket = %v, want just the original %d", pids, pid)
	}
	if v, err := New(s.socket).Version(context.Background()); err != nil || v.PID != pid {
		t.Errorf("after the refusal the socket answers pid %d, %v; want the original daemon %d", v.PID, err, pid)
	}
}

func TestEnsureReportsADaemonThatExitsAtStart(t *testing.T) {
	// An earlier daemon's last words, already in the log: never to be quoted as this one's.
	const earlier = "bangerd: shutting down (asked by the CLI)"
	for _, tc := range []struct {
		name string
		// daemon (empty: the fake) and mode start the stand-in; want are pieces of the error.
		daemon, mode string
		want         []string
	}{
		{"a daemon that fails says why, from its log", "", "fail", []string{"exited", fakeFailure}},
		{"a daemon that exits silently says it wrote nothing", "/bin/true", "", []string{"exited", "wrote nothing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newDaemonSetup(t)
			if err := os.MkdirAll(filepath.Dir(s.logPath), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.logPath, []byte("bangerd: listening\n"+earlier+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			o := s.options(t, version.Get(), tc.mode)
			if tc.daemon != "" {
				o.Daemon = tc.daemon
			}
			// Ensure must notice the exit, not wait out startWait: with an hour to wait, only
			// noticing makes it return.
			setStartWait(t, time.Hour)
			errc := make(chan error, 1)
			go func() {
				_, err := New(s.socket).Ensure(context.Background(), o)
				errc <- err
			}()
			var err error
			select {
			case err = <-errc:
			case <-time.After(time.Minute): // a guard against hanging, not a timing check
				t.Fatalf("Ensure did not notice that the daemon exited; want it at once, not after waiting out startWait")
			}
			if err == nil {
				t.Fatal("Ensure with a daemon that exits at once: err = nil, want an error")
			}
			if m := missingFrom(err.Error(), append(tc.want, s.logPath)...); m != "" {
				t.Errorf("error %q lacks %q; want it to say the daemon exited, why, and name the log", err, m)
			}
			if strings.Contains(err.Error(), earlier) {
				t.Errorf("error %q quotes an earlier daemon's log line %q as the reason", err, earlier)
			}
		})
	}
}

func TestEnsureGivesUpOnADaemonThatNeverAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, mode string
	}{
		{"never listens on the socket", "silent"},
		{"accepts connections but never answers", "hang"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setStartWait(t, time.Second)
			s := newDaemonSetup(t)
			// A deadline far beyond startWait, so that only Ensure's own bound can end it early.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			start := time.Now()
			_, err := New(s.socket).Ensure(ctx, s.options(t, version.Get(), tc.mode))
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("Ensure with a daemon that never answers: err = nil, want an error")
			}
			if m := missingFrom(err.Error(), "does not answer", s.socket, s.logPath); m != "" {
				t.Errorf("error %q lacks %q; want it to say the daemon does not answer on the socket and name the log", err, m)
			}
			// Not before its bound (both clocks are the monotonic one, so this cannot fail on a
			// slow machine); not on the context's 30 s either: the error says why it gave up.
			if elapsed < startWait {
				t.Errorf("Ensure gave up after %s, before its bound startWait (%s)", elapsed, startWait)
			}
			if len(s.notices) != 1 || !strings.Contains(s.notices[0], "started daemon") {
				t.Errorf("notices = %q, want one saying \"started daemon …\"", s.notices)
			}
		})
	}
}
