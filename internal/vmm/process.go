package vmm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Process is a VMM process identified by pid and start time, so that a recycled pid is never
// mistaken for it. It is safe for concurrent use.
type Process struct {
	PID       int
	StartTime uint64

	once sync.Once
	done chan struct{}
}

// StartTime returns field 22 of /proc/<pid>/stat (start time in clock ticks since boot).
func StartTime(pid int) (uint64, error) {
	st, _, err := stat(pid)
	return st, err
}

// stat reads a process's start time and state letter (R, S, D, Z, …) from /proc/<pid>/stat.
func stat(pid int) (uint64, byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may contain spaces and parentheses; fields after it start
	// after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, f[0][0], err
}

// Spawn starts cmd detached from the caller: in its own session, with no controlling
// terminal and no parent-death signal, so it survives the daemon. The caller's process reaps
// it while the caller lives; after a daemon restart Watch takes over.
func Spawn(cmd *exec.Cmd) (*Process, error) { return SpawnIn("", cmd) }

// SpawnIn is Spawn with the process started inside the network namespace at netnsPath ("" is
// the caller's own), so that the tap devices it opens are the namespace's.
func SpawnIn(netnsPath string, cmd *exec.Cmd) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	if err := startIn(netnsPath, cmd); err != nil {
		return nil, err
	}
	p := &Process{PID: cmd.Process.Pid, done: make(chan struct{})}
	st, err := StartTime(p.PID)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("read start time of pid %d: %w", p.PID, err)
	}
	p.StartTime = st
	go func() {
		_ = cmd.Wait()
		p.markDone()
	}()
	return p, nil
}

// Watch returns the Process for pid if it still runs with the given start time, and watches
// it through a pidfd (it need not be our child). It returns ErrGone otherwise.
func Watch(pid int, startTime uint64) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	st, state, err := stat(pid)
	if err != nil || st != startTime {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d now belongs to another process: %w", pid, ErrGone)
	}
	if state == 'Z' || state == 'X' {
		// Exited, not yet reaped by its parent: as gone as it gets.
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d has exited: %w", pid, ErrGone)
	}
	return watchFD(fd, pid, startTime), nil
}

// WatchPidfd is Watch for a process the caller was handed a pidfd of (banger's root helper
// starts jailed Firecrackers and returns one): Done is closed when it exits. It takes f over
// (closes it); the pid and start time are recorded for a later Watch.
func WatchPidfd(f *os.File, pid int, startTime uint64) (*Process, error) {
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	unix.CloseOnExec(fd)
	return watchFD(fd, pid, startTime), nil
}

// watchFD polls the pidfd fd (which it closes) until the process exits.
func watchFD(fd, pid int, startTime uint64) *Process {
	p := &Process{PID: pid, StartTime: startTime, done: make(chan struct{})}
	go func() {
		defer unix.Close(fd)
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			break
		}
		// Reap it if it happens to be our child (after a re-exec); ignore errors otherwise.
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		p.markDone()
	}()
	return p
}

func (p *Process) markDone() { p.once.Do(func() { close(p.done) }) }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process unless it has already exited.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	err := syscall.Kill(p.PID, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Kill sends SIGKILL and waits up to timeout for the process to be gone.
func (p *Process) Kill(timeout time.Duration) error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill pid %d: %w", p.PID, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("pid %d still running %s after SIGKILL", p.PID, timeout)
	}
}

// startIn starts cmd from a thread that has entered the network namespace: a child inherits
// the namespace of the thread that forks it.
func startIn(netnsPath string, cmd *exec.Cmd) error {
	if netnsPath == "" {
		return cmd.Start()
	}
	target, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", netnsPath, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", netnsPath, err)
			return
		}
		serr := cmd.Start()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine instead of running others
			// in the wrong namespace.
			errc <- errors.Join(serr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- serr
	}()
	return <-errc
}
