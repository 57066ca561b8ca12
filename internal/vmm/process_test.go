package vmm

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSpawnDetachesAndKill(t *testing.T) {
	p, err := Spawn(exec.Command("sleep", "30"))
	if err != nil {
		t.Fatal(err)
	}
	sid, err := getsid(p.PID)
	if err != nil || sid != p.PID {
		t.Errorf("session of spawned process = %d, %v; want its own session (%d)", sid, err, p.PID)
	}
	if err := p.Kill(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Kill")
	}
}

func TestWatchFindsAProcessAgainAndSeesItExit(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Watch(cmd.Process.Pid, st)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	select {
	case <-p.Done():
	case <-time.After(time.Minute): // a guard against hanging, not a timing check
		t.Fatal("Watch did not notice the exit")
	}
}

func TestWatchRefusesAnotherProcessOnTheSamePID(t *testing.T) {
	st, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Watch(os.Getpid(), st+1); !errors.Is(err, ErrGone) {
		t.Errorf("Watch with a wrong start time: err = %v, want ErrGone", err)
	}
	if _, err := Watch(0, 0); !errors.Is(err, ErrGone) {
		t.Errorf("Watch(0): err = %v, want ErrGone", err)
	}
}

func TestWatchTreatsAZombieAsGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the exit without reaping (WNOWAIT): the child stays a zombie, whose /proc
	// entry (and start time) still exists.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			t.Fatalf("wait for the child's exit: %v", err)
		}
	}
	if _, state, err := stat(cmd.Process.Pid); err != nil || state != 'Z' {
		t.Fatalf("exited child: state %q, %v; want a zombie", state, err)
	}
	if _, err := Watch(cmd.Process.Pid, st); !errors.Is(err, ErrGone) {
		t.Errorf("Watch of a zombie: err = %v, want ErrGone", err)
	}
}

// A socket path over the unix limit is refused with the driver's name, before any VMM runs;
// one that fits is cleared of a stale file.
func TestClearSockets(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "api.sock")
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ClearSockets("qemu", map[string]string{"api": stale}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale socket file still there: %v", err)
	}
	long := "/" + strings.Repeat("x", 107)
	err := ClearSockets("firecracker", map[string]string{"api": long})
	if err == nil || !strings.HasPrefix(err.Error(), "firecracker: socket path") || !strings.Contains(err.Error(), "108 bytes, over the 107-byte unix socket limit") {
		t.Errorf("108-byte path: %v; want the limit error naming the driver", err)
	}
	if err := ClearSockets("qemu", map[string]string{"api": long[:107]}); err != nil {
		t.Errorf("107-byte path refused: %v", err)
	}
}
