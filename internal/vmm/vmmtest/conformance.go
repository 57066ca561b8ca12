package vmmtest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// Harness is one driver under test in Conformance.
type Harness struct {
	Driver vmm.Driver
	// Config is a VM that Start runs until it is killed (no guest needs to boot: a paused or
	// idle machine will do). Its RuntimeDir must be empty or absent, and only its.
	Config func(t *testing.T) vmm.Config
	// FailingConfig is a VM whose Start fails after the VMM process was spawned (a kernel that
	// does not exist, a runtime directory the VMM cannot use), for the "nothing left" contract.
	FailingConfig func(t *testing.T) vmm.Config
	// Running, when set, asks the VMM whether m's vCPUs run (not paused); the Snapshot
	// subtest checks with it that Snapshot and Restore leave machines running.
	Running func(t *testing.T, m vmm.Machine) bool
	// NICByFile says that the driver hands its VMM the tap's queue (vmm.NIC.File) rather
	// than having it open the tap by name; the NICByFile subtest checks that contract.
	NICByFile bool
	// NoSnapshots, when set, says why the driver's machines refuse snapshots although they
	// implement vmm.Snapshotter (a Firecracker in a jail); the Snapshot subtest then skips
	// saying so.
	NoSnapshots string
}

// bound guards against a contract's call that hangs: far above every time bound in package
// vmm's contracts, so that it fails only a call that does not return at all.
const bound = time.Minute

// Conformance checks the contracts stated in package vmm's doc comments against a driver, one
// subtest per contract: newHarness is called afresh for each. The optional capabilities a
// Machine may implement (vmm.Shutdowner, vmm.Pauser, vmm.Snapshotter with the driver's
// vmm.Restorer) have subtests that skip, saying why, when the driver's machines do not
// implement them. To add a capability, state its contract on its
// interface in package vmm and add its subtest to capabilities below.
func Conformance(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("Probe", func(t *testing.T) {
		h := newHarness(t)
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		p := h.Driver.Probe(ctx)
		if p.Driver != h.Driver.Name() || p.Title == "" {
			t.Errorf("Probe() = %+v; want Driver %q and a Title", p, h.Driver.Name())
		}
		if p.Err != nil || p.Found == "" {
			t.Errorf("Probe() = %+v; the harness's driver must be able to run here, and say what it found", p)
		}
	})

	t.Run("StartFailureLeavesNothing", func(t *testing.T) {
		h := newHarness(t)
		cfg := h.FailingConfig(t)
		before := children(t)
		m, err := start(t, h.Driver, cfg)
		if err == nil {
			_ = m.Kill()
			t.Fatal("Start of the failing config succeeded")
		}
		t.Logf("Start failed as it should: %v", err)
		for pid := range children(t) {
			if !before[pid] {
				t.Errorf("process %d (%s) started by the failed Start still runs", pid, cmdline(pid))
			}
		}
		noSockets(t, cfg.RuntimeDir, "after the failed Start")
	})

	t.Run("StartRecordAttachKill", func(t *testing.T) {
		h := newHarness(t)
		cfg := h.Config(t)
		m := mustStart(t, h.Driver, cfg)
		rec := m.Record()
		if rec.Driver != h.Driver.Name() {
			t.Errorf("Record().Driver = %q; want the driver's Name %q", rec.Driver, h.Driver.Name())
		}
		if st, err := vmm.StartTime(rec.PID); err != nil || st != rec.StartTime {
			t.Errorf("pid %d start time = %d, %v; want Record().StartTime %d (Start returns a running process)", rec.PID, st, err, rec.StartTime)
		}
		for name, s := range rec.Sockets {
			if _, err := os.Lstat(s); err != nil {
				t.Errorf("socket %s (%s) after Start: %v; Start returns once the sockets exist", name, s, err)
			}
		}

		attached, err := h.Driver.Attach(rec)
		if err != nil {
			t.Fatalf("Attach(Record()) of the running machine: %v", err)
		}
		if got := attached.Record(); got.Driver != rec.Driver || got.PID != rec.PID || got.StartTime != rec.StartTime {
			t.Errorf("attached Record() = %+v; want the machine's %+v", got, rec)
		}

		kill(t, m, "Kill")
		for name, mm := range map[string]vmm.Machine{"started": m, "attached": attached} {
			select {
			case <-mm.Done():
			case <-time.After(bound):
				t.Errorf("Done() of the %s machine is not closed after Kill", name)
			}
		}
		if st, err := vmm.StartTime(rec.PID); err == nil && st == rec.StartTime {
			t.Errorf("pid %d still runs after Kill returned", rec.PID)
		}
		for name, s := range rec.Sockets {
			if _, err := os.Lstat(s); err == nil {
				t.Errorf("socket %s (%s) is left after Kill", name, s)
			}
		}
		noSockets(t, cfg.RuntimeDir, "after Kill")
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		if conn, err := m.DialAgent(ctx); err == nil {
			conn.Close()
			t.Error("DialAgent after Kill succeeded; want an error")
		} else if ctx.Err() != nil {
			t.Errorf("DialAgent after Kill = %v only once the context was done; want a prompt error", err)
		}
		// Idempotent: the started machine again, and the attached one whose process is gone.
		kill(t, m, "a second Kill")
		kill(t, attached, "Kill of the attached machine after the process is gone")

		_, err = h.Driver.Attach(rec)
		if !errors.Is(err, vmm.ErrGone) {
			t.Errorf("Attach of the killed machine = %v; want an error wrapping vmm.ErrGone", err)
		}
	})

	t.Run("AttachGoneRemovesLeftovers", func(t *testing.T) {
		h := newHarness(t)
		cfg := h.Config(t)
		m := mustStart(t, h.Driver, cfg)
		rec := m.Record()
		kill(t, m, "Kill")
		// What a VMM killed while no daemon ran leaves: its socket files.
		for _, s := range rec.Sockets {
			if err := os.WriteFile(s, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := h.Driver.Attach(rec); !errors.Is(err, vmm.ErrGone) {
			t.Fatalf("Attach of a gone machine = %v; want an error wrapping vmm.ErrGone", err)
		}
		for name, s := range rec.Sockets {
			if _, err := os.Lstat(s); err == nil {
				t.Errorf("socket %s (%s) is left after Attach returned ErrGone", name, s)
			}
		}
	})

	t.Run("AttachReusedPIDIsGone", func(t *testing.T) {
		h := newHarness(t)
		// This test's own process stands for a pid reused by another process: the record's
		// start time is not its.
		st, err := vmm.StartTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		rec := vmm.Record{Driver: h.Driver.Name(), PID: os.Getpid(), StartTime: st + 1}
		if _, err := h.Driver.Attach(rec); !errors.Is(err, vmm.ErrGone) {
			t.Errorf("Attach of a record whose pid now runs another process = %v; want an error wrapping vmm.ErrGone", err)
		}
	})

	t.Run("AttachOtherDriversRecord", func(t *testing.T) {
		h := newHarness(t)
		st, err := vmm.StartTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		rec := vmm.Record{Driver: "not-" + h.Driver.Name(), PID: os.Getpid(), StartTime: st}
		m, err := h.Driver.Attach(rec)
		if err == nil {
			t.Fatalf("Attach of a %q record succeeded (%+v); want an error", rec.Driver, m.Record())
		}
		if errors.Is(err, vmm.ErrGone) {
			t.Errorf("Attach of another driver's record = %v; want an error that is not ErrGone (the machine may well run)", err)
		}
	})

	t.Run("NICByFile", func(t *testing.T) { nicByFile(t, newHarness) })

	for _, c := range capabilities {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			m := mustStart(t, h.Driver, h.Config(t))
			defer m.Kill()
			c.run(t, h, m)
		})
	}
}

// capabilities are the subtests of the optional Machine interfaces. Each skips, saying why,
// when the machine does not implement its interface.
var capabilities = []struct {
	name string
	run  func(t *testing.T, h Harness, m vmm.Machine)
}{
	{"Shutdowner", func(t *testing.T, _ Harness, m vmm.Machine) {
		s, ok := m.(vmm.Shutdowner)
		if !ok {
			t.Skipf("%T does not implement vmm.Shutdowner", m)
		}
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown of a running machine: %v", err)
		}
		kill(t, m, "Kill")
		if err := s.Shutdown(ctx); err == nil {
			t.Error("Shutdown after Kill succeeded; want an error")
		} else if ctx.Err() != nil {
			t.Errorf("Shutdown after Kill = %v only once the context was done; want a prompt error", err)
		}
	}},
	{"Pauser", func(t *testing.T, _ Harness, m vmm.Machine) {
		p, ok := m.(vmm.Pauser)
		if !ok {
			t.Skipf("%T does not implement vmm.Pauser", m)
		}
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		for _, step := range []struct {
			name string
			do   func(context.Context) error
		}{{"Pause", p.Pause}, {"Pause of a paused machine", p.Pause}, {"Resume", p.Resume}, {"Resume of a running machine", p.Resume}} {
			if err := step.do(ctx); err != nil {
				t.Errorf("%s: %v", step.name, err)
			}
		}
		kill(t, m, "Kill")
		for name, do := range map[string]func(context.Context) error{"Pause": p.Pause, "Resume": p.Resume} {
			if err := do(ctx); err == nil {
				t.Errorf("%s after Kill succeeded; want an error", name)
			} else if ctx.Err() != nil {
				t.Errorf("%s after Kill = %v only once the context was done; want a prompt error", name, err)
			}
		}
	}},
	{"Snapshot", snapshot},
}

func start(t *testing.T, d vmm.Driver, cfg vmm.Config) (vmm.Machine, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	m, err := d.Start(ctx, cfg)
	if ctx.Err() != nil {
		t.Errorf("Start returned (%v) only after %s; its contract bounds it to 15 seconds", err, bound)
	}
	return m, err
}

func mustStart(t *testing.T, d vmm.Driver, cfg vmm.Config) vmm.Machine {
	t.Helper()
	m, err := start(t, d, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = m.Kill() })
	return m
}

// kill calls m.Kill, which must return nil and not hang.
func kill(t *testing.T, m vmm.Machine, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- m.Kill() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(bound):
		t.Fatalf("%s did not return within %s; its contract bounds it to ten seconds", what, bound)
	}
}

// children returns the live (not zombie) child processes of this test process.
func children(t *testing.T) map[int]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	out := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == me {
			out[pid] = true
		}
	}
	return out
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

// noSockets fails t for every socket or named pipe left under dir.
func noSockets(t *testing.T, dir, when string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err == nil && e.Type()&(fs.ModeSocket|fs.ModeNamedPipe) != 0 {
			t.Errorf("%s is left in the runtime directory %s", path, when)
		}
		return nil
	})
}
