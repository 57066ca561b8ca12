package vmservice

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
	"github.com/banger-dev/banger/internal/wire"
)

// runningVM creates a running VM named name, on the recording network n when it is not nil.
func (e *env) runningVM(name string, n *recordingNetwork) store.VM {
	e.t.Helper()
	if n != nil {
		e.svc.net = n
	}
	vm, err := e.create(CreateRequest{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	return vm
}

// state returns the recorded state of the VM called name.
func (e *env) state(name string) store.VM {
	e.t.Helper()
	vm, err := e.store.GetVM(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return vm
}

// answers checks that the VM called name runs commands.
func (e *env) answers(name string) {
	e.t.Helper()
	st, _, err := e.svc.OpenExec(context.Background(), name, agent.ExecRequest{Argv: []string{"true"}})
	if err != nil {
		e.t.Fatalf("exec in %s: %v", name, err)
	}
	exit, err := wire.Call(st, wire.CallerIO{Stdout: io.Discard, Stderr: io.Discard})
	st.Close()
	if err != nil || exit.Code != 0 {
		e.t.Fatalf("exec in %s = %+v, %v", name, exit, err)
	}
}

// assertSuspended checks that vm is recorded suspended with a complete snapshot, and that
// nothing of a VMM is left: no live machine of the fake driver, no runtime directory.
func (e *env) assertSuspended(name string) {
	e.t.Helper()
	vm := e.state(name)
	if vm.State != StateSuspended || vm.Runtime != nil {
		e.t.Errorf("vm %s: state %q runtime %s, want suspended without a runtime record", name, vm.State, vm.Runtime)
	}
	if _, err := vmm.ReadSnapshot(suspendDir(vm)); err != nil {
		e.t.Errorf("vm %s: snapshot: %v", name, err)
	}
	if _, err := os.Stat(e.svc.runtimeDir(vm.ID)); !os.IsNotExist(err) {
		e.t.Errorf("vm %s: runtime directory left: %v", name, err)
	}
	if e.svc.instance(vm.ID) != nil {
		e.t.Errorf("vm %s: the service still holds an instance", name)
	}
	e.assertNoMachineRuns()
}

// assertNoMachineRuns checks that every machine the fake driver started has ended. A machine
// the service ended through an adopted record (after a restart) is this test process's child:
// Kill returns once it is dead, and Done closes when the driver's own wait has reaped it a
// moment later, so each gets a bounded wait.
func (e *env) assertNoMachineRuns() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, m := range e.driver.Machines() {
		select {
		case <-m.Done():
		case <-ctx.Done():
			e.t.Errorf("VMM process %d still runs", m.Record().PID)
		}
	}
}

func TestSuspendResume(t *testing.T) {
	e := newEnv(t)
	n := &recordingNetwork{}
	e.runningVM("dev", n)
	ctx := context.Background()

	got, changed, err := e.svc.Suspend(ctx, "dev", Observer{})
	if err != nil || !changed || got.State != StateSuspended {
		t.Fatalf("Suspend = %s, %v, %v; want suspended, changed", got.State, changed, err)
	}
	e.assertSuspended("dev")
	if _, changed, err := e.svc.Suspend(ctx, "dev", Observer{}); err != nil || changed {
		t.Errorf("second Suspend = changed %v, %v; want unchanged, nil", changed, err)
	}
	if _, _, err := e.svc.OpenExec(ctx, "dev", agent.ExecRequest{Argv: []string{"true"}}); !errors.Is(err, failure.Conflict) {
		t.Errorf("exec in a suspended VM: %v, want a conflict", err)
	}

	got, timings, err := e.svc.Resume(ctx, "dev", Observer{})
	if err != nil || got.State != StateRunning || timings == nil {
		t.Fatalf("Resume = %s, %v, %v; want running", got.State, timings, err)
	}
	e.answers("dev")
	if _, err := os.Stat(suspendDir(got)); !os.IsNotExist(err) {
		t.Errorf("snapshot left after a resume: %v", err)
	}
	if _, timings, err := e.svc.Resume(ctx, "dev", Observer{}); err != nil || timings != nil {
		t.Errorf("Resume of a running VM = %v, %v; want nothing done", timings, err)
	}
	// The restored VMM holds the tap's queue the resume handed it; the service keeps none.
	n.assertQueuesClosed(t, 2)
	if pid := e.machineOf("dev").Record().PID; !holdsQueue(pid) {
		t.Errorf("the restored VMM (pid %d) does not hold the tap queue it was handed", pid)
	}
	// The guest gave up its tap and name while suspended and got them back, same address.
	want := []string{"allocate 10.0.0.2", "attach dev 10.0.0.2", "announce dev",
		"withdraw dev", "attach dev 10.0.0.2", "announce dev"}
	if got := n.log(); !slices.Equal(got, want) {
		t.Errorf("network calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// vm start resumes a suspended VM (with a notice); vm stop discards the saved guest.
	if _, _, err := e.svc.Suspend(ctx, "dev", Observer{}); err != nil {
		t.Fatal(err)
	}
	var notices []string
	got, _, err = e.svc.Start(ctx, "dev", Observer{Notice: func(s string) { notices = append(notices, s) }})
	if err != nil || got.State != StateRunning {
		t.Fatalf("Start of a suspended VM = %s, %v", got.State, err)
	}
	if !slices.ContainsFunc(notices, func(s string) bool { return strings.Contains(s, "resuming") }) {
		t.Errorf("notices %q do not say the start resumed", notices)
	}
	e.answers("dev")
	if _, _, err := e.svc.Suspend(ctx, "dev", Observer{}); err != nil {
		t.Fatal(err)
	}
	got, stopped, err := e.svc.Stop(ctx, "dev", 0, Observer{})
	if err != nil || !stopped || got.State != StateStopped {
		t.Fatalf("Stop of a suspended VM = %s, %v, %v; want stopped", got.State, stopped, err)
	}
	if _, err := os.Stat(suspendDir(got)); !os.IsNotExist(err) {
		t.Errorf("snapshot left after a stop: %v", err)
	}
	if _, _, err := e.svc.Resume(ctx, "dev", Observer{}); !errors.Is(err, failure.Conflict) {
		t.Errorf("Resume of a stopped VM: %v, want a conflict", err)
	}

	// A suspended VM is deleted without -f: nothing of it runs.
	if _, _, err := e.svc.Start(ctx, "dev", Observer{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.Suspend(ctx, "dev", Observer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Delete(ctx, "dev", false); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft()
}

func TestSuspendStepFailuresLeaveTheVMRunning(t *testing.T) {
	for _, step := range []string{StepPause, StepSnapshot, StepRelease} {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t)
			e.runningVM("dev", nil)
			e.svc.faultStep = step
			_, _, err := e.svc.Suspend(context.Background(), "dev", Observer{})
			if err == nil || !strings.Contains(err.Error(), "fault injected") {
				t.Fatalf("Suspend = %v, want the injected fault", err)
			}
			vm := e.state("dev")
			if vm.State != StateRunning {
				t.Errorf("state %q after a failed suspend, want running", vm.State)
			}
			if _, err := os.Stat(suspendDir(vm)); !os.IsNotExist(err) {
				t.Errorf("snapshot directory left: %v", err)
			}
			ms := e.driver.Machines()
			if m := ms[len(ms)-1]; !m.Running() {
				t.Error("the guest is not running (paused or gone) after a failed suspend")
			}
			e.answers("dev")
			if _, err := e.svc.Delete(context.Background(), "dev", true); err != nil {
				t.Fatal(err)
			}
			e.assertNothingLeft()
		})
	}
}

func TestResumeStepFailuresLeaveTheVMSuspended(t *testing.T) {
	for _, step := range []string{StepNetwork, StepRestore, StepAgent, StepRenew, StepReady} {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t)
			n := &recordingNetwork{}
			e.runningVM("dev", n)
			ctx := context.Background()
			if _, _, err := e.svc.Suspend(ctx, "dev", Observer{}); err != nil {
				t.Fatal(err)
			}
			e.svc.faultStep = step
			_, _, err := e.svc.Resume(ctx, "dev", Observer{})
			if err == nil || !strings.Contains(err.Error(), "fault injected") {
				t.Fatalf("Resume = %v, want the injected fault", err)
			}
			e.assertSuspended("dev")
			if vm := e.state("dev"); !strings.Contains(vm.LastError, "fault injected") {
				t.Errorf("last error %q does not say why the resume failed", vm.LastError)
			}
			if log := n.log(); log[len(log)-1] != "withdraw dev" {
				t.Errorf("network calls end with %q, want the tap withdrawn", log[len(log)-1])
			}
			e.svc.faultStep = ""
			if _, _, err := e.svc.Resume(ctx, "dev", Observer{}); err != nil {
				t.Fatalf("Resume after the failure: %v", err)
			}
			e.answers("dev")
			if _, err := e.svc.Delete(ctx, "dev", true); err != nil {
				t.Fatal(err)
			}
			e.assertNothingLeft()
		})
	}
}

func TestResumeOfAnIncompatibleSnapshotLeavesItSuspended(t *testing.T) {
	e := newEnv(t)
	e.runningVM("dev", nil)
	ctx := context.Background()
	if _, _, err := e.svc.Suspend(ctx, "dev", Observer{}); err != nil {
		t.Fatal(err)
	}
	e.driver.Version = "vmmtest-2" // the VMM was upgraded meanwhile
	_, _, err := e.svc.Resume(ctx, "dev", Observer{})
	if !errors.Is(err, vmm.ErrIncompatibleSnapshot) {
		t.Fatalf("Resume = %v, want an incompatible snapshot", err)
	}
	e.assertSuspended("dev")
	if _, stopped, err := e.svc.Stop(ctx, "dev", 0, Observer{}); err != nil || !stopped {
		t.Fatalf("Stop = %v, %v", stopped, err)
	}
	if _, _, err := e.svc.Start(ctx, "dev", Observer{}); err != nil {
		t.Fatalf("a fresh boot after the snapshot was discarded: %v", err)
	}
	if _, err := e.svc.Delete(ctx, "dev", true); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft()
}

// noRestore is a driver whose machines can be snapshotted but that cannot restore them.
type noRestore struct{ d *vmmtest.Driver }

func (n noRestore) Name() string                               { return n.d.Name() }
func (n noRestore) Probe(ctx context.Context) vmm.Probe        { return n.d.Probe(ctx) }
func (n noRestore) Attach(rec vmm.Record) (vmm.Machine, error) { return n.d.Attach(rec) }
func (n noRestore) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	return n.d.Start(ctx, cfg)
}

func TestSuspendIsRefusedWithoutTheCapability(t *testing.T) {
	e := newEnv(t)
	e.svc = New(Options{Store: e.store, Layout: e.layout, Host: e.svc.host, Artifacts: fakeArtifacts{},
		Drivers: []vmm.Driver{noRestore{e.driver}}, Config: e.svc.config})
	e.runningVM("dev", nil)
	_, _, err := e.svc.Suspend(context.Background(), "dev", Observer{})
	if !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "cannot save") {
		t.Fatalf("Suspend = %v, want a conflict saying the VMM cannot", err)
	}
	if vm := e.state("dev"); vm.State != StateRunning {
		t.Errorf("state %q, want running", vm.State)
	}
	e.answers("dev")
	if _, err := e.svc.Delete(context.Background(), "dev", true); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft()
}

// restart stands for a daemon killed and started again: a new service over the same store
// reconciles.
func (e *env) restart() {
	e.t.Helper()
	e.svc = e.newService()
	if err := e.svc.Reconcile(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func TestReconcileKeepsSuspendedVMs(t *testing.T) {
	e := newEnv(t)
	e.runningVM("dev", nil)
	ephemeral, err := e.create(CreateRequest{Name: "eph", AutoRemove: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []string{"dev", ephemeral.Name} {
		if _, _, err := e.svc.Suspend(ctx, n, Observer{}); err != nil {
			t.Fatal(err)
		}
	}
	e.restart()
	e.assertSuspended("dev")
	e.assertSuspended("eph")
	if _, _, err := e.svc.Resume(ctx, "dev", Observer{}); err != nil {
		t.Fatal(err)
	}
	e.answers("dev")
	for _, n := range []string{"dev", "eph"} {
		if _, err := e.svc.Delete(ctx, n, true); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNothingLeft()
}

// A daemon killed during a suspend, before the VMM ended: the VM runs on, the partial
// snapshot is removed, the guest continues.
func TestReconcileSuspendingWithItsVMM(t *testing.T) {
	e := newEnv(t)
	vm := e.runningVM("dev", nil)
	ctx := context.Background()
	ms := e.driver.Machines()
	m := ms[len(ms)-1]
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(suspendDir(vm), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(suspendDir(vm), "state"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetVMState(ctx, vm.ID, StateSuspending, ""); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if got := e.state("dev"); got.State != StateRunning {
		t.Errorf("state %q, want running", got.State)
	}
	if _, err := os.Stat(suspendDir(vm)); !os.IsNotExist(err) {
		t.Errorf("partial snapshot left: %v", err)
	}
	ms = e.driver.Machines()
	if !ms[len(ms)-1].Running() {
		t.Error("the adopted guest is still paused")
	}
	e.answers("dev")
	if _, err := e.svc.Delete(ctx, "dev", true); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft()
}

// A daemon killed during a suspend after the VMM ended: a complete snapshot makes the VM
// suspended, a partial one stopped (its memory is lost; its disk is kept).
func TestReconcileSuspendingWithoutItsVMM(t *testing.T) {
	for _, complete := range []bool{true, false} {
		t.Run(map[bool]string{true: "complete", false: "partial"}[complete], func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			vm := e.runningVM("dev", nil)
			if _, _, err := e.svc.Suspend(ctx, "dev", Observer{}); err != nil {
				t.Fatal(err)
			}
			if !complete {
				if err := os.Remove(filepath.Join(suspendDir(vm), vmm.SnapshotFile)); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.store.SetVMState(ctx, vm.ID, StateSuspending, ""); err != nil {
				t.Fatal(err)
			}
			e.restart()
			if complete {
				e.assertSuspended("dev")
			} else {
				got := e.state("dev")
				if got.State != StateStopped || got.LastError == "" {
					t.Errorf("state %q (%q), want stopped with the reason", got.State, got.LastError)
				}
				if _, err := os.Stat(suspendDir(vm)); !os.IsNotExist(err) {
					t.Errorf("partial snapshot left: %v", err)
				}
				if _, err := os.Stat(filepath.Join(vm.Dir, diskFile)); err != nil {
					t.Errorf("disk gone: %v", err)
				}
			}
			if _, _, err := e.svc.Start(ctx, "dev", Observer{}); err != nil {
				t.Fatal(err)
			}
			e.answers("dev")
			if _, err := e.svc.Delete(ctx, "dev", true); err != nil {
				t.Fatal(err)
			}
			e.assertNothingLeft()
		})
	}
}

// A daemon killed during a resume: the VMM it started from the snapshot is ended, the VM is
// suspended again with its snapshot.
func TestReconcileResuming(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm := e.runningVM("dev", nil)
	if _, _, err := e.svc.Suspend(ctx, "dev", Observer{}); err != nil {
		t.Fatal(err)
	}
	snap, err := vmm.ReadSnapshot(suspendDir(vm))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := e.layout.SecureVMRuntimeDir(vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.driver.Restore(ctx, vmm.Config{ID: vm.ID, Name: vm.Name, Dir: vm.Dir, RuntimeDir: rt, VCPU: vm.VCPU,
		MemoryMiB: vm.MemoryMiB, Disks: make([]vmm.Disk, 2)}, snap)
	if err != nil {
		t.Fatal(err)
	}
	vm = e.state("dev")
	vm.State = StateResuming
	vm.Runtime, _ = json.Marshal(m.Record())
	if err := e.store.UpdateVM(ctx, &vm); err != nil {
		t.Fatal(err)
	}
	e.restart()
	e.assertSuspended("dev")
	if _, _, err := e.svc.Resume(ctx, "dev", Observer{}); err != nil {
		t.Fatal(err)
	}
	e.answers("dev")
	if _, err := e.svc.Delete(ctx, "dev", true); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft()
}

// endSession ends the service's agent session with the running VM name, as capture does.
func (e *env) endSession(name string) {
	e.t.Helper()
	vm, err := e.svc.Resolve(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	in := e.svc.instance(vm.ID)
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closeSessionLocked()
}

// staleFirst is a machine whose first agent connection lands in a session nobody answers, as
// a guest saved in the middle of its session with the suspending daemon does.
type staleFirst struct {
	vmm.Machine
	stale net.Conn
	dials int
}

func (m *staleFirst) DialAgent(ctx context.Context) (net.Conn, error) {
	m.dials++
	if m.dials == 1 {
		return m.stale, nil
	}
	return m.Machine.DialAgent(ctx)
}

func TestARestoredGuestIsConnectedAnewWhenItsFirstSessionHangs(t *testing.T) {
	e := newEnv(t)
	// Cold: no boot snapshot, whose capture would reset the clock over a session of its own.
	if _, err := e.create(CreateRequest{Name: "dev", Cold: true}); err != nil {
		t.Fatal(err)
	}
	ms := e.driver.Machines()
	host, guest := net.Pipe()
	defer guest.Close()
	go func() { _, _ = io.Copy(io.Discard, guest) }() // reads, never answers
	m := &staleFirst{Machine: ms[len(ms)-1], stale: host}
	e.endSession("dev") // the machine serves one agent connection at a time
	c, err := e.svc.connectAnew(context.Background(), m, time.Minute, "")
	if err != nil {
		t.Fatalf("connectRestored: %v", err)
	}
	c.Close()
	if m.dials < 2 {
		t.Errorf("%d dials, want a second one after the stale session", m.dials)
	}
	if _, err := e.svc.Delete(context.Background(), "dev", true); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft()
}

// A daemon killed with -9 leaves its guest's agent in a session nobody reads: the next
// daemon's first handshake can land in it and go unanswered. The agent session of a running
// VM is then made anew, on a new connection, instead of waiting out the first one.
func TestAnAdoptedGuestIsConnectedAnewWhenItsFirstSessionHangs(t *testing.T) {
	e := newEnv(t)
	// Cold: no boot snapshot, whose capture would reset the clock over a session of its own.
	if _, err := e.create(CreateRequest{Name: "dev", Cold: true}); err != nil {
		t.Fatal(err)
	}
	ms := e.driver.Machines()
	host, guest := net.Pipe()
	defer guest.Close()
	go func() { _, _ = io.Copy(io.Discard, guest) }() // reads, never answers
	m := &staleFirst{Machine: ms[len(ms)-1], stale: host}
	e.endSession("dev") // the machine serves one agent connection at a time
	in := &instance{machine: m}
	c, err := e.svc.session(context.Background(), in)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	if _, err := c.Health(context.Background()); err != nil {
		t.Errorf("health over the new session: %v", err)
	}
	if m.dials < 2 {
		t.Errorf("%d dials, want a second one after the stale session", m.dials)
	}
	if _, err := e.svc.Delete(context.Background(), "dev", true); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft()
}
