package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/version"
)

// StartOptions say how to find and start the daemon.
type StartOptions struct {
	// Daemon is the bangerd binary; empty means the one next to this executable, then PATH.
	Daemon string
	// StateDir is the state dir this CLI expects the daemon to serve; a daemon serving
	// another one is refused with a clear error rather than silently shared.
	StateDir string
	// LogPath receives the daemon's stdout and stderr when the client starts it.
	LogPath string
	// Notice is told when the client starts or restarts the daemon.
	Notice func(string)
	// Env is extra environment for a started daemon (tests).
	Env []string
}

// startWait bounds how long a started daemon may take to answer, and an old one to exit. It
// is a variable so that tests can shorten it.
var startWait = 15 * time.Second

// Ensure makes sure a daemon of this very build answers on the socket: it starts one when
// nothing answers and replaces one of another build (after asking it to exit; VMs keep
// running). It returns the daemon's version.
func (c *Client) Ensure(ctx context.Context, o StartOptions) (api.Version, error) {
	v, err := c.Version(ctx)
	// A daemon that is dying (killed, or exiting) can still hold its listener for a moment and
	// then reset the connection; ask again until it is clearly there or clearly gone.
	for i := 0; i < 20 && errors.Is(err, syscall.ECONNRESET) && ctx.Err() == nil; i++ {
		time.Sleep(50 * time.Millisecond)
		v, err = c.Version(ctx)
	}
	switch {
	case err == nil:
		if err := c.sameState(v, o); err != nil {
			return v, err
		}
		mine := version.Get()
		if (version.Info{Version: v.Version, Commit: v.Commit, Date: v.Date}).Same(mine) {
			return v, nil
		}
		notice(o, fmt.Sprintf("restarting daemon: it is build %s@%s (%s), this CLI is build %s@%s (%s)",
			v.Version, short(v.Commit), v.Date, mine.Version, short(mine.Commit), mine.Date))
		if err := c.Shutdown(ctx); err != nil {
			return v, fmt.Errorf("ask the old daemon (pid %d) to exit: %w", v.PID, err)
		}
		if err := c.WaitGone(ctx, v.PID); err != nil {
			return v, err
		}
	case errors.Is(err, ErrNoDaemon):
	default:
		return v, err
	}
	exited, logStart, err := c.start(o)
	if err != nil {
		return api.Version{}, err
	}
	deadline := time.Now().Add(startWait)
	for {
		// Bound each probe too: a daemon that accepts connections but never answers must not
		// hang the CLI past the deadline.
		pctx, cancel := context.WithDeadline(ctx, deadline)
		v, err := c.Version(pctx)
		cancel()
		if err == nil {
			return v, c.sameState(v, o)
		}
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
		select {
		case <-exited:
			return v, fmt.Errorf("the daemon exited right after it started: %s (log: %s)", logTail(o.LogPath, logStart), o.LogPath)
		default:
		}
		if !errors.Is(err, ErrNoDaemon) || time.Now().After(deadline) {
			return v, fmt.Errorf("started the daemon but it does not answer on %s: %w; see %s", c.socket, err, o.LogPath)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// logTail returns the last line the daemon wrote to its log from offset on (where this start
// began; the log is shared with earlier daemons), which says why it stopped.
func logTail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no log"
	}
	if offset >= 0 && offset <= int64(len(b)) {
		b = b[offset:]
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "it wrote nothing to its log"
	}
	lines := strings.Split(s, "\n")
	return lines[len(lines)-1]
}

func notice(o StartOptions, msg string) {
	if o.Notice != nil {
		o.Notice(msg)
	}
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	if commit == "" {
		return "unknown"
	}
	return commit
}

func (c *Client) sameState(v api.Version, o StartOptions) error {
	if o.StateDir == "" || v.StateDir == "" || filepath.Clean(v.StateDir) == filepath.Clean(o.StateDir) {
		return nil
	}
	return &api.Error{
		Code:    "conflict",
		Message: fmt.Sprintf("the daemon on %s serves state dir %s, but this CLI's is %s", c.socket, v.StateDir, o.StateDir),
		Hint:    "set BANGER_SOCKET to a socket of your own (e.g. $HOME/.banger.sock) so each state dir has its own daemon",
	}
}

// WaitGone waits until the daemon process pid has exited.
func (c *Client) WaitGone(ctx context.Context, pid int) error {
	deadline := time.Now().Add(startWait)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if _, err := c.Version(ctx); errors.Is(err, ErrNoDaemon) {
			// Socket closed; give the process a moment to exit completely.
			if syscall.Kill(pid, 0) != nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("the old daemon (pid %d) did not exit within %s", pid, startWait)
}

// DaemonBinary finds bangerd: next to this executable first (so side-by-side installs under
// different prefixes each use their own daemon), then in PATH.
func DaemonBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "bangerd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("bangerd")
	if err != nil {
		return "", fmt.Errorf("bangerd not found next to banger or in PATH; reinstall banger (make install)")
	}
	return p, nil
}

// start launches the daemon detached (own session, output to the log) and returns a channel
// closed if it exits while this CLI still waits for it, and the log's size before it started.
func (c *Client) start(o StartOptions) (<-chan struct{}, int64, error) {
	bin := o.Daemon
	if bin == "" {
		var err error
		if bin, err = DaemonBinary(); err != nil {
			return nil, 0, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(o.LogPath), 0o700); err != nil {
		return nil, 0, fmt.Errorf("start daemon: %w", err)
	}
	logf, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("start daemon: open log: %w", err)
	}
	defer logf.Close()
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, 0, fmt.Errorf("start daemon: %w", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, 0, err
	}
	defer devnull.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "BANGER_SOCKET="+c.socket)
	cmd.Env = append(cmd.Env, o.Env...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start daemon %s: %w", bin, err)
	}
	notice(o, fmt.Sprintf("started daemon %s (pid %d)", bin, cmd.Process.Pid))
	// Reap it if it exits while we wait; once this CLI exits, init adopts it.
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	return exited, logStart, nil
}
