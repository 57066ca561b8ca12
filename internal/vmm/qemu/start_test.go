package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// These tests run the real qemu-system-x86_64 under TCG. They boot no guest to completion:
// the kernel either cannot be loaded or panics for want of a root file system, which is all
// the driver needs to start, talk QMP to and kill a machine.

// envKernel points the tests at a vmlinux when none is found in banger's state dir.
const envKernel = "BANGER_TEST_VMLINUX"

func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Skipf("%s is not installed (Debian: apt-get install qemu-system-x86); skipping the tests that run it", DefaultBinary)
	}
}

// testKernel finds a vmlinux to boot: $BANGER_TEST_VMLINUX, then kernels pulled by banger into
// $XDG_STATE_HOME or $HOME, then those left in a HOME under /tmp by the end-to-end tests.
func testKernel(t *testing.T) string {
	t.Helper()
	if k := os.Getenv(envKernel); k != "" {
		if _, err := os.Stat(k); err != nil {
			t.Fatalf("%s=%s: %v", envKernel, k, err)
		}
		return k
	}
	var patterns []string
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		patterns = append(patterns, filepath.Join(d, "banger/kernels/*/vmlinux"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		patterns = append(patterns, filepath.Join(h, ".local/state/banger/kernels/*/vmlinux"))
	}
	patterns = append(patterns, "/tmp/*/.local/state/banger/kernels/*/vmlinux")
	for _, p := range patterns {
		if m, _ := filepath.Glob(p); len(m) > 0 {
			return m[0]
		}
	}
	t.Skipf("no vmlinux found (looked in %s); run `banger kernel pull debian-6.1` or set %s", strings.Join(patterns, ", "), envKernel)
	return ""
}

// runtimeDir is a short directory for the machine's sockets (t.TempDir() can exceed the
// 108-byte socket path limit).
func runtimeDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// processesMentioning lists the pids whose command line contains s (here: a test's unique
// runtime dir, so only the QEMU that test started).
func processesMentioning(t *testing.T, s string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killLeftoversOnCleanup SIGKILLs any process still mentioning dir when the test ends, so that
// a failing test leaves no QEMU behind, and reports it as an error.
func killLeftoversOnCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		for _, pid := range processesMentioning(t, dir) {
			t.Errorf("QEMU pid %d still runs at the end of the test; killing it", pid)
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	})
}

// qmpStatus asks QEMU's QMP socket for the run state ("running", "paused", …).
func qmpStatus(ctx context.Context, socket string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	read := func() (map[string]json.RawMessage, error) {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return nil, err
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(line, &m); err != nil {
				return nil, err
			}
			if _, isEvent := m["event"]; !isEvent {
				return m, nil
			}
		}
	}
	if _, err := read(); err != nil { // greeting
		return "", err
	}
	var status struct {
		Status string `json:"status"`
	}
	for _, cmd := range []string{"qmp_capabilities", "query-status"} {
		if _, err := fmt.Fprintf(conn, "{\"execute\":%q}\n", cmd); err != nil {
			return "", err
		}
		m, err := read()
		if err != nil {
			return "", err
		}
		if e, ok := m["error"]; ok {
			return "", fmt.Errorf("%s: %s", cmd, e)
		}
		if cmd == "query-status" {
			if err := json.Unmarshal(m["return"], &status); err != nil {
				return "", err
			}
		}
	}
	return status.Status, nil
}

func TestStartReportsQEMUsOwnErrorAndLeavesNothingRunning(t *testing.T) {
	requireQEMU(t)
	rt := runtimeDir(t)
	killLeftoversOnCleanup(t, rt)
	cfg := vmm.Config{
		ID: "bad-kernel", Name: "bad-kernel", Dir: t.TempDir(), RuntimeDir: rt,
		VCPU: 1, MemoryMiB: 64, Accel: host.TCG,
		Kernel: filepath.Join(t.TempDir(), "no-such-vmlinux"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m, err := (&Driver{}).Start(ctx, cfg)
	if err == nil {
		_ = m.Kill()
		t.Fatal("Start with a kernel that does not exist succeeded; want QEMU's failure")
	}
	if miss := missing(err.Error(), "qemu exited during start", "could not open kernel file", cfg.Kernel); miss != "" {
		t.Errorf("Start error %q lacks %q; want it to quote QEMU's own message from qemu.log", err, miss)
	}
	if pids := processesMentioning(t, rt); len(pids) != 0 {
		t.Errorf("QEMU processes %v remain after the failed Start, want none", pids)
	}
}

func TestStartTalkAttachAndKillARealMachine(t *testing.T) {
	requireQEMU(t)
	kernel := testKernel(t)
	rt := runtimeDir(t)
	killLeftoversOnCleanup(t, rt)
	cfg := vmm.Config{
		ID: "qemu-test", Name: "qemu-test",
		// Commas in the paths check that QEMU gets them escaped.
		Dir: filepath.Join(t.TempDir(), "vm,1"), RuntimeDir: filepath.Join(rt, "r,1"),
		VCPU: 1, MemoryMiB: 256, Accel: host.TCG,
		Kernel: kernel,
		// No initrd and no root disk: the guest panics and then idles (panic=0), harmlessly.
		Cmdline: "root=/dev/banger-none panic=0 quiet",
	}
	d := &Driver{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	m, err := d.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = m.Kill() })
	t.Logf("Start took %s", time.Since(start))

	rec := m.Record()
	t.Run("record", func(t *testing.T) {
		if rec.Driver != "qemu" {
			t.Errorf("Record().Driver = %q, want qemu", rec.Driver)
		}
		for name, want := range map[string]string{"agent": filepath.Join(cfg.RuntimeDir, "agent.sock"), "qmp": filepath.Join(cfg.RuntimeDir, "qmp.sock")} {
			if rec.Sockets[name] != want {
				t.Errorf("Record().Sockets[%q] = %q, want %q", name, rec.Sockets[name], want)
			}
			if st, err := os.Stat(want); err != nil {
				t.Errorf("%s socket after Start: %v", name, err)
			} else if st.Mode()&os.ModeSocket == 0 {
				t.Errorf("%s is %v after Start, want a unix socket", want, st.Mode())
			}
		}
		if want := filepath.Join(cfg.Dir, "console.log"); rec.Console != want {
			t.Errorf("Record().Console = %q, want %q", rec.Console, want)
		}
		if want := filepath.Join(cfg.Dir, "qemu.log"); rec.Log != want {
			t.Errorf("Record().Log = %q, want %q", rec.Log, want)
		}
		st, err := vmm.StartTime(rec.PID)
		if err != nil || st != rec.StartTime {
			t.Errorf("/proc/%d start time = %d, %v; want Record().StartTime %d", rec.PID, st, err, rec.StartTime)
		}
		if pids := processesMentioning(t, rt); len(pids) != 1 || pids[0] != rec.PID {
			t.Errorf("processes running this machine = %v, want just Record().PID %d", pids, rec.PID)
		}
	})

	attached, err := d.Attach(rec)
	if err != nil {
		t.Fatalf("Attach(Record()) of the running machine: %v", err)
	}
	if !reflect.DeepEqual(attached.Record(), rec) {
		t.Errorf("attached Record() = %+v, want %+v", attached.Record(), rec)
	}

	t.Run("pause and resume through vmm.Pauser on the attached machine", func(t *testing.T) {
		p, ok := attached.(vmm.Pauser)
		if !ok {
			t.Fatalf("%T does not implement vmm.Pauser", attached)
		}
		for _, step := range []struct {
			name string
			do   func(context.Context) error
			want string
		}{
			{"Pause", p.Pause, "paused"},
			{"Resume", p.Resume, "running"},
		} {
			if err := step.do(ctx); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			if got, err := qmpStatus(ctx, rec.Sockets["qmp"]); err != nil || got != step.want {
				t.Errorf("after %s QEMU's status is %q, %v; want %q", step.name, got, err, step.want)
			}
		}
	})

	t.Run("agent socket accepts a connection", func(t *testing.T) {
		conn, err := m.DialAgent(ctx)
		if err != nil {
			t.Fatalf("DialAgent: %v", err)
		}
		conn.Close()
	})

	t.Run("shutdown through vmm.Shutdowner", func(t *testing.T) {
		s, ok := m.(vmm.Shutdowner)
		if !ok {
			t.Fatalf("%T does not implement vmm.Shutdowner", m)
		}
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	if err := m.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	for name, mm := range map[string]vmm.Machine{"started": m, "attached": attached} {
		select {
		case <-mm.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("Done() of the %s machine not closed after Kill", name)
		}
	}
	if _, err := d.Attach(rec); !errors.Is(err, vmm.ErrGone) {
		t.Errorf("Attach after Kill = %v, want an error wrapping vmm.ErrGone", err)
	}
	if pids := processesMentioning(t, rt); len(pids) != 0 {
		t.Errorf("processes %v still run this machine after Kill, want none", pids)
	}
}

// missing returns the first of subs that s lacks, or "" when s has them all.
func missing(s string, subs ...string) string {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return sub
		}
	}
	return ""
}
