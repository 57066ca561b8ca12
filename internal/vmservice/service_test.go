package vmservice

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/catalog"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/names"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
	"github.com/banger-dev/banger/internal/wire"
)

// These tests exercise the service's bookkeeping — steps, undo, locks, exec plumbing,
// reconcile — against the stand-in VMM of package vmmtest (real processes, a real agent, no
// guest). Booting real guests is the end-to-end tests' job (package e2e).

type fakeArtifacts struct{}

func (fakeArtifacts) Kernel(ctx context.Context, name string, p progress.Func) (catalog.Kernel, error) {
	if name != "debian-6.1" {
		return catalog.Kernel{}, errors.New("unknown kernel " + name)
	}
	return catalog.Kernel{Name: name, Release: "6.1.0-test", Vmlinux: "/nonexistent/vmlinux", Initrd: "/nonexistent/initrd"}, nil
}

func (fakeArtifacts) Image(ctx context.Context, name string, p progress.Func) (catalog.Image, error) {
	return catalog.Image{Name: name, Rootfs: "/nonexistent/rootfs.ext4"}, nil
}

type env struct {
	t      *testing.T
	layout paths.Layout
	store  *store.Store
	driver *vmmtest.Driver
	cfg    config.Config
	log    *slog.Logger // nil: the service logs nothing
	svc    *Service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	// Short: unix socket paths are limited to 108 bytes and t.TempDir() names can be long.
	dir, err := os.MkdirTemp("", "vs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vars := map[string]string{"BANGER_SOCKET": filepath.Join(dir, "run", "bangerd.sock")}
	l, err := paths.New(func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, os.Getuid(), filepath.Join(dir, "home"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Create(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(l.DBFile())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, layout: l, store: st, driver: &vmmtest.Driver{}, cfg: config.Default(l)}
	e.cfg.BootTimeout = 10 * time.Second
	one, small := 1, int64(512<<20)
	e.cfg.VMDefaults = config.VMDefaults{VCPU: one, MemoryMiB: 512, DiskBytes: small * 2}
	e.svc = e.newService()
	t.Cleanup(e.driver.KillAll)
	return e
}

func (e *env) newService() *Service {
	return New(Options{
		Store: e.store, Layout: e.layout, Host: host.Root("/"), Artifacts: fakeArtifacts{},
		Drivers: []vmm.Driver{e.driver},
		Config:  func() (config.Config, error) { return e.cfg, nil },
		Log:     e.log,
	})
}

func (e *env) create(req CreateRequest) (store.VM, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, _, err := e.svc.Create(ctx, req, Observer{})
	return vm, err
}

// assertNothingLeft checks that no VM record, VM directory, runtime directory or live
// process remains.
func (e *env) assertNothingLeft() {
	e.t.Helper()
	vms, err := e.store.ListVMs(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	if len(vms) != 0 {
		e.t.Errorf("records left behind: %+v", vms)
	}
	for _, d := range []string{e.layout.VMsDir(), e.layout.VMRuntimeDir()} {
		entries, _ := os.ReadDir(d)
		if len(entries) != 0 {
			e.t.Errorf("files left behind in %s: %v", d, entries)
		}
	}
	for _, m := range e.driver.Machines() {
		select {
		case <-m.Done():
		case <-time.After(5 * time.Second):
			e.t.Errorf("process %d still running", m.Record().PID)
		}
	}
}

func TestCreateExecDelete(t *testing.T) {
	e := newEnv(t)
	vm, err := e.create(CreateRequest{Name: "dev"})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if vm.State != StateRunning || vm.VCPU != 1 || vm.MemoryMiB != 512 {
		t.Errorf("created VM = %+v, want running with the config's 1 vCPU and 512 MiB", vm)
	}
	if _, err := os.Stat(filepath.Join(vm.Dir, diskFile)); err != nil {
		t.Errorf("VM disk missing: %v", err)
	}

	st, _, err := e.svc.OpenExec(context.Background(), "de", agent.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 5"}})
	if err != nil {
		t.Fatalf("OpenExec by prefix: %v", err)
	}
	var out, errb bytes.Buffer
	exit, err := wire.Call(st, wire.CallerIO{Stdout: &out, Stderr: &errb})
	st.Close()
	if err != nil || exit.Code != 5 || out.String() != "out\n" || errb.String() != "err\n" {
		t.Errorf("exec = %+v %v, stdout %q stderr %q; want exit 5 with separate streams", exit, err, out.String(), errb.String())
	}

	if _, err := e.svc.Delete(context.Background(), "dev", true); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	e.assertNothingLeft()
}

func TestEveryStepFailureIsUndone(t *testing.T) {
	for _, step := range StepNames {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t)
			_, err := e.create(CreateRequest{Name: "dev", FailStep: step})
			if err == nil || !strings.Contains(err.Error(), "fault injected") || !strings.Contains(err.Error(), step) {
				t.Fatalf("err = %v, want the injected fault at %s as the root cause", err, step)
			}
			e.assertNothingLeft()
		})
	}
}

func TestDriverStartFailureIsReportedAndUndone(t *testing.T) {
	e := newEnv(t)
	e.driver.StartErr = errors.New("qemu-system-x86_64: cannot open kernel")
	_, err := e.create(CreateRequest{Name: "dev"})
	if err == nil || !strings.Contains(err.Error(), "cannot open kernel") || !strings.Contains(err.Error(), "step vmm") {
		t.Fatalf("err = %v, want the driver's error at step vmm", err)
	}
	e.assertNothingLeft()
}

func TestBootTimeoutKeepsConsoleAndCleansUp(t *testing.T) {
	e := newEnv(t)
	e.driver.NoAgent = true
	e.cfg.BootTimeout = 500 * time.Millisecond
	_, err := e.create(CreateRequest{Name: "dev"})
	if err == nil || !strings.Contains(err.Error(), "did not answer within 500ms") || !strings.Contains(err.Error(), "fake init says hello") {
		t.Fatalf("err = %v, want a boot timeout with the end of the console", err)
	}
	kept, _ := filepath.Glob(filepath.Join(e.layout.StateDir, "logs", "failed-dev-*.console.log"))
	if len(kept) != 1 {
		t.Errorf("console log copies = %v, want one kept for diagnosis", kept)
	}
	e.assertNothingLeft()
}

func TestVMMExitDuringBootIsReported(t *testing.T) {
	e := newEnv(t)
	e.driver.NoAgent = true
	e.driver.ExitEarly = true
	_, err := e.create(CreateRequest{Name: "dev"})
	if err == nil || !errors.Is(err, errVMMExited) {
		t.Fatalf("err = %v, want errVMMExited", err)
	}
	e.assertNothingLeft()
}

func TestCancelDuringBootIsUndone(t *testing.T) {
	e := newEnv(t)
	e.driver.NoAgent = true
	ctx, cancel := context.WithCancel(context.Background())
	obs := Observer{Progress: func(u progress.Update) {
		if u.Stage == "vm.boot" {
			cancel() // the boot step waits for the agent with its context ended
		}
	}}
	_, _, err := e.svc.Create(ctx, CreateRequest{Name: "dev"}, obs)
	if err == nil || !strings.Contains(err.Error(), "cancelled") || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want a cancelled create that errors.Is context.Canceled", err)
	}
	e.assertNothingLeft()
}

// vm run asks to keep a VM whose guest never answers: the VMM is ended and the tap gone, but
// the record (stopped, with the reason, no longer ephemeral), the disk and the console stay.
func TestUnreachableGuestIsKeptWhenAsked(t *testing.T) {
	for _, exitEarly := range []bool{false, true} {
		t.Run(fmt.Sprintf("vmm-exits=%v", exitEarly), func(t *testing.T) {
			e := newEnv(t)
			e.driver.NoAgent = true
			e.driver.ExitEarly = exitEarly
			e.cfg.BootTimeout = 500 * time.Millisecond
			_, err := e.create(CreateRequest{Name: "dev", AutoRemove: true, KeepUnreachable: true})
			if err == nil || !strings.Contains(err.Error(), "never became reachable") || !strings.Contains(err.Error(), "banger vm logs dev") {
				t.Fatalf("err = %v, want the VM kept and how to read its logs", err)
			}
			vm, err := e.store.GetVM(context.Background(), "dev")
			if err != nil {
				t.Fatalf("the record is gone: %v", err)
			}
			if vm.State != StateStopped || vm.AutoRemove || vm.LastError == "" {
				t.Errorf("kept VM = state %s, auto-remove %v, last error %q; want stopped, not ephemeral, with the reason", vm.State, vm.AutoRemove, vm.LastError)
			}
			for _, f := range []string{diskFile, "console.log"} {
				if _, err := os.Stat(filepath.Join(vm.Dir, f)); err != nil {
					t.Errorf("%s not kept: %v", f, err)
				}
			}
			if _, err := os.Stat(e.svc.runtimeDir(vm.ID)); !os.IsNotExist(err) {
				t.Errorf("runtime directory left: %v", err)
			}
			for _, m := range e.driver.Machines() {
				select {
				case <-m.Done():
				case <-time.After(5 * time.Second):
					t.Errorf("VMM %d still running", m.Record().PID)
				}
			}
			if _, err := e.svc.Delete(context.Background(), "dev", true); err != nil {
				t.Fatal(err)
			}
			e.assertNothingLeft()
		})
	}
}

// Keeping is for guests that never answered: a failed step before or after that, or a
// cancelled boot, still undoes everything.
func TestKeepUnreachableOnlyKeepsUnreachableGuests(t *testing.T) {
	for _, step := range StepNames {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t)
			if _, err := e.create(CreateRequest{Name: "dev", FailStep: step, KeepUnreachable: true}); err == nil {
				t.Fatal("create succeeded")
			}
			e.assertNothingLeft()
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		e := newEnv(t)
		e.driver.NoAgent = true
		ctx, cancel := context.WithCancel(context.Background())
		obs := Observer{Progress: func(u progress.Update) {
			if u.Stage == "vm.boot" {
				cancel() // the boot step waits for the agent with its context ended
			}
		}}
		if _, _, err := e.svc.Create(ctx, CreateRequest{Name: "dev", KeepUnreachable: true}, obs); err == nil {
			t.Fatal("create succeeded")
		}
		e.assertNothingLeft()
	})
}

func TestCreateRejectsBadRequests(t *testing.T) {
	e := newEnv(t)
	if _, err := e.create(CreateRequest{Name: "Bad_Name"}); !errors.Is(err, failure.Invalid) {
		t.Errorf("bad name: err = %v, want failure.Invalid", err)
	}
	zero := 0
	if _, err := e.create(CreateRequest{Name: "dev", VCPU: &zero}); !errors.Is(err, failure.Invalid) || !strings.Contains(err.Error(), "--vcpu") {
		t.Errorf("vcpu 0: err = %v, want failure.Invalid naming --vcpu", err)
	}
	e.assertNothingLeft()
	if _, err := e.create(CreateRequest{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.create(CreateRequest{Name: "dev"}); !errors.Is(err, failure.Conflict) {
		t.Errorf("duplicate name: err = %v, want failure.Conflict", err)
	}
	// An unknown kernel: the error names the VM only when the user named it; a generated
	// name belongs to a VM that never existed.
	if _, err := e.create(CreateRequest{Kernel: "nosuch"}); err == nil || strings.Contains(err.Error(), "vm ") {
		t.Errorf("unknown kernel, generated name: err = %v; want the kernel's error alone", err)
	}
	if _, err := e.create(CreateRequest{Name: "mine", Kernel: "nosuch"}); err == nil || !strings.Contains(err.Error(), `vm "mine": unknown kernel nosuch`) {
		t.Errorf("unknown kernel, given name: err = %v; want it to name the VM", err)
	}
}

func TestGeneratedNameAndResolve(t *testing.T) {
	e := newEnv(t)
	a, err := e.create(CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a.Name, "-") {
		t.Errorf("generated name %q, want adjective-noun", a.Name)
	}
	if _, err := e.create(CreateRequest{Name: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.create(CreateRequest{Name: "dev-2"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if vm, err := e.svc.Resolve(ctx, a.ID); err != nil || vm.Name != a.Name {
		t.Errorf("Resolve(id) = %v, %v", vm.Name, err)
	}
	if _, err := e.svc.Resolve(ctx, "dev"); !errors.Is(err, failure.Invalid) || !strings.Contains(err.Error(), "dev-1, dev-2") {
		t.Errorf("ambiguous prefix: err = %v, want failure.Invalid listing both", err)
	}
	if _, err := e.svc.Resolve(ctx, "nope"); !errors.Is(err, failure.NotFound) {
		t.Errorf("missing: err = %v, want failure.NotFound", err)
	}
}

// Two creates without a name can draw the same generated name before either records its VM
// (seen at 8 concurrent `vm run`). The one that loses the race must pick another name, not
// fail; a name the user chose must still be refused.
func TestGeneratedNameCollisionPicksAnother(t *testing.T) {
	e := newEnv(t)
	if _, err := e.create(CreateRequest{Name: "twin-owl"}); err != nil {
		t.Fatal(err)
	}
	// The generator hands out the name the other create just took, as it would when both
	// checked before either recorded, then a free one.
	calls := 0
	generateName = func(func(string) bool) string {
		calls++
		if calls == 1 {
			return "twin-owl"
		}
		return "calm-yak"
	}
	t.Cleanup(func() { generateName = names.Generate })

	vm, err := e.create(CreateRequest{})
	if err != nil {
		t.Fatalf("create with a colliding generated name: %v; want it to pick another name", err)
	}
	if vm.Name != "calm-yak" {
		t.Errorf("name = %q, want the second generated name calm-yak", vm.Name)
	}
	if _, err := e.create(CreateRequest{Name: "twin-owl"}); !errors.Is(err, failure.Conflict) {
		t.Errorf("create with a taken user-given name: %v, want failure.Conflict", err)
	}
}

func TestReconcileAfterDaemonRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alive, err := e.create(CreateRequest{Name: "alive"})
	if err != nil {
		t.Fatal(err)
	}
	dead, err := e.create(CreateRequest{Name: "dead"})
	if err != nil {
		t.Fatal(err)
	}
	ephemeral, err := e.create(CreateRequest{Name: "ephemeral", AutoRemove: true})
	if err != nil {
		t.Fatal(err)
	}
	// A create the crashed daemon never finished, and files nobody recorded.
	half := store.VM{ID: "00000000000000aa", Name: "half", State: StateCreating, Dir: filepath.Join(e.layout.VMsDir(), "00000000000000aa")}
	if err := os.MkdirAll(half.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := e.store.CreateVM(ctx, &half); err != nil {
		t.Fatal(err)
	}
	// A start (of an existing VM) the crashed daemon never finished: the VM stays, stopped.
	halfStarted := store.VM{ID: "00000000000000bb", Name: "half-started", State: StateStarting, Dir: filepath.Join(e.layout.VMsDir(), "00000000000000bb")}
	if err := os.MkdirAll(halfStarted.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := e.store.CreateVM(ctx, &halfStarted); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(e.layout.VMsDir(), "ffffffffffffffff")
	if err := os.MkdirAll(orphan, 0o700); err != nil {
		t.Fatal(err)
	}

	// The old daemon goes away without touching its VMs; two VMMs die meanwhile.
	for _, vm := range []store.VM{dead, ephemeral} {
		rec, _ := Record(vm)
		p, err := vmm.Watch(rec.PID, rec.StartTime)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Kill(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	e.svc = e.newService()
	if err := e.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}

	got := map[string]string{}
	vms, _ := e.store.ListVMs(ctx)
	for _, vm := range vms {
		got[vm.Name] = vm.State
	}
	want := map[string]string{"alive": StateRunning, "dead": StateStopped, "half-started": StateStopped}
	if len(got) != len(want) || got["alive"] != want["alive"] || got["dead"] != want["dead"] || got["half-started"] != want["half-started"] {
		t.Errorf("after reconcile: %v, want %v (ephemeral and half-created removed)", got, want)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan VM directory still there: %v", err)
	}
	if _, err := os.Stat(half.Dir); !os.IsNotExist(err) {
		t.Errorf("half-created VM's directory still there: %v", err)
	}
	// The adopted VM still answers.
	st, _, err := e.svc.OpenExec(ctx, alive.Name, agent.ExecRequest{Argv: []string{"true"}})
	if err != nil {
		t.Fatalf("exec in adopted VM: %v", err)
	}
	exit, err := wire.Call(st, wire.CallerIO{Stdout: io.Discard, Stderr: io.Discard})
	st.Close()
	if err != nil || exit.Code != 0 {
		t.Errorf("exec in adopted VM = %+v, %v", exit, err)
	}
	if _, err := e.svc.Delete(ctx, "alive", true); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"dead", "half-started"} {
		if _, err := e.svc.Delete(ctx, n, true); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNothingLeft()
}

// loggedOnce is a log handler that drops every record and closes seen when msg is logged.
type loggedOnce struct {
	msg  string
	seen chan struct{}
	once *sync.Once
}

func (h loggedOnce) Enabled(context.Context, slog.Level) bool { return true }
func (h loggedOnce) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h loggedOnce) WithGroup(string) slog.Handler            { return h }
func (h loggedOnce) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}

// The exit watcher logs "VMM exited" and records the VM stopped while it holds the VM's lock:
// once the log line is seen, taking the lock waits for the record.
func TestVMMExitAfterBootMarksStopped(t *testing.T) {
	e := newEnv(t)
	exited := make(chan struct{})
	e.log = slog.New(loggedOnce{msg: "VMM exited", seen: exited, once: new(sync.Once)})
	e.svc = e.newService()
	vm, err := e.create(CreateRequest{Name: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := Record(vm)
	p, _ := vmm.Watch(rec.PID, rec.StartTime)
	_ = p.Kill(5 * time.Second)
	select {
	case <-exited:
	case <-time.After(time.Minute): // a guard against hanging, not a timing check
		t.Fatal("the service did not notice its VMM died")
	}
	e.svc.lock(vm.ID)()
	got, _ := e.store.GetVM(context.Background(), "dev")
	if got.State != StateStopped || !strings.Contains(got.LastError, "VMM exited") {
		t.Errorf("after its VMM died: state %s, last error %q; want stopped, with the reason", got.State, got.LastError)
	}
}

func TestLifecycleCreateNoStartStartStopRestartKill(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm, err := e.create(CreateRequest{Name: "dev", NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	if vm.State != StateCreated || len(e.driver.Machines()) != 0 {
		t.Fatalf("--no-start: state %s with %d VMMs, want created and none", vm.State, len(e.driver.Machines()))
	}
	if _, err := os.Stat(filepath.Join(vm.Dir, diskFile)); err != nil {
		t.Errorf("--no-start must still make the disk: %v", err)
	}

	vm, _, err = e.svc.Start(ctx, "dev", Observer{})
	if err != nil || vm.State != StateRunning {
		t.Fatalf("Start = %s, %v; want running", vm.State, err)
	}
	first, _ := Record(vm)
	if again, timings, err := e.svc.Start(ctx, "dev", Observer{}); err != nil || again.State != StateRunning || timings != nil {
		t.Errorf("starting a running VM = %s, %v, %d steps; want a no-op", again.State, err, len(timings))
	}

	var stages []string
	heard := Observer{Progress: func(u progress.Update) { stages = append(stages, u.Message) }}
	vm, stopped, err := e.svc.Stop(ctx, "dev", 5*time.Second, heard)
	if err != nil || vm.State != StateStopped || vm.LastError != "" || !stopped || len(stages) != 1 {
		t.Fatalf("Stop = %+v, %v, %v, stages %q; want stopped without error, one stage", vm, stopped, err, stages)
	}
	if _, err := os.Stat(filepath.Join(vm.Dir, diskFile)); err != nil {
		t.Errorf("stop must keep the disk: %v", err)
	}
	if _, err := os.Stat(e.svc.runtimeDir(vm.ID)); !os.IsNotExist(err) {
		t.Errorf("stop must remove the sockets: %v", err)
	}
	stages = nil
	if again, stopped, err := e.svc.Stop(ctx, "dev", time.Second, heard); err != nil || again.State != StateStopped || stopped || len(stages) != 0 {
		t.Errorf("stopping a stopped VM = %s, %v, %v, stages %q; want a no-op that says nothing", again.State, stopped, err, stages)
	}
	if _, _, err := e.svc.Stop(ctx, "nosuchvm", time.Second, heard); err == nil || len(stages) != 0 {
		t.Errorf("stopping a VM that does not exist: %v, stages %q; want the error alone", err, stages)
	}

	vm, err = e.svc.Restart(ctx, "dev", 5*time.Second, Observer{})
	if err != nil || vm.State != StateRunning {
		t.Fatalf("Restart of a stopped VM = %s, %v", vm.State, err)
	}
	vm, err = e.svc.Restart(ctx, "dev", 5*time.Second, Observer{})
	second, _ := Record(vm)
	if err != nil || vm.State != StateRunning || second.PID == first.PID {
		t.Fatalf("Restart = %s pid %d (was %d), %v; want running in a new VMM", vm.State, second.PID, first.PID, err)
	}

	vm, err = e.svc.Kill(ctx, "dev", syscall.SIGTERM)
	if err != nil || vm.State != StateStopped || vm.LastError != "" {
		t.Fatalf("Kill = %+v, %v; want stopped, not error", vm, err)
	}
	if _, err := e.svc.Kill(ctx, "dev", 0); !errors.Is(err, failure.Conflict) {
		t.Errorf("killing a stopped VM: err = %v, want Conflict", err)
	}
	if _, err := e.svc.Delete(ctx, "dev", true); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft()
}

func TestFailedStartLeavesTheVMInErrorWithItsDisk(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm, err := e.create(CreateRequest{Name: "dev", NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	e.driver.NoAgent = true
	e.cfg.BootTimeout = 300 * time.Millisecond
	_, _, err = e.svc.Start(ctx, "dev", Observer{})
	if err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("Start = %v, want a boot timeout", err)
	}
	got, _ := e.store.GetVM(ctx, "dev")
	if got.State != StateError || !strings.Contains(got.LastError, "did not answer") || len(got.Runtime) != 0 {
		t.Errorf("after a failed start: %+v; want state error, the reason kept, no runtime record", got)
	}
	if _, err := os.Stat(filepath.Join(vm.Dir, diskFile)); err != nil {
		t.Errorf("a failed start must keep the disk: %v", err)
	}
	for _, m := range e.driver.Machines() {
		select {
		case <-m.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("VMM %d still running after a failed start", m.Record().PID)
		}
	}
	// It can be started again once the cause is gone.
	e.driver.NoAgent = false
	if vm, _, err := e.svc.Start(ctx, "dev", Observer{}); err != nil || vm.State != StateRunning || vm.LastError != "" {
		t.Errorf("start after fixing = %+v, %v", vm, err)
	}
}

func TestSet(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.create(CreateRequest{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	two := 2
	if _, err := e.svc.Set(ctx, "dev", SetRequest{VCPU: &two}); !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("set on a running VM: err = %v, want Conflict saying to stop it", err)
	}
	if _, _, err := e.svc.Stop(ctx, "dev", time.Second, Observer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Set(ctx, "dev", SetRequest{}); !errors.Is(err, failure.Invalid) {
		t.Errorf("set with nothing: err = %v, want Invalid", err)
	}
	small := int64(256 << 20)
	if _, err := e.svc.Set(ctx, "dev", SetRequest{MemoryBytes: &small}); !errors.Is(err, failure.Invalid) || !strings.Contains(err.Error(), "--memory") {
		t.Errorf("memory below the floor: err = %v, want Invalid naming --memory", err)
	}
	shrink := int64(512 << 20)
	if _, err := e.svc.Set(ctx, "dev", SetRequest{DiskBytes: &shrink}); !errors.Is(err, failure.Invalid) {
		t.Errorf("shrinking the disk: err = %v, want Invalid", err)
	}
	grow, mem := int64(2<<30), int64(768<<20)
	vm, err := e.svc.Set(ctx, "dev", SetRequest{VCPU: &two, MemoryBytes: &mem, DiskBytes: &grow})
	if err != nil || vm.VCPU != 2 || vm.MemoryMiB != 768 || vm.DiskBytes != grow {
		t.Fatalf("Set = %+v, %v", vm, err)
	}
	apparent, _, err := disk.Usage(filepath.Join(vm.Dir, diskFile))
	if err != nil || apparent != grow {
		t.Errorf("disk file is %d bytes (%v), want %d", apparent, err, grow)
	}
	var spec config.VMSpec
	_ = json.Unmarshal(vm.Spec, &spec)
	if spec.VCPU.Source != config.SourceFlag || spec.DiskBytes.Value != grow {
		t.Errorf("spec after set = %+v, want the new values with their provenance", spec)
	}
	if vm, _, err := e.svc.Start(ctx, "dev", Observer{}); err != nil || vm.State != StateRunning {
		t.Errorf("start after set = %v", err)
	}
}

func TestPruneDeletesOnlyVMsThatDoNotRun(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, req := range []CreateRequest{{Name: "running"}, {Name: "created", NoStart: true}, {Name: "stopped"}} {
		if _, err := e.create(req); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := e.svc.Stop(ctx, "stopped", time.Second, Observer{}); err != nil {
		t.Fatal(err)
	}
	deleted, err := e.svc.Prune(ctx)
	if err != nil || len(deleted) != 2 {
		t.Fatalf("Prune = %d VMs, %v; want created and stopped", len(deleted), err)
	}
	vms, _ := e.store.ListVMs(ctx)
	if len(vms) != 1 || vms[0].Name != "running" {
		t.Errorf("left: %+v, want only the running VM", vms)
	}
}

func TestFileSyncCopiesAtCreate(t *testing.T) {
	e := newEnv(t)
	host := t.TempDir()
	dotfiles := filepath.Join(host, "dotfiles")
	_ = os.MkdirAll(filepath.Join(dotfiles, "nested"), 0o755)
	_ = os.WriteFile(filepath.Join(dotfiles, "nested", "a.conf"), []byte("a"), 0o644)
	outside := filepath.Join(host, "secret")
	_ = os.WriteFile(outside, []byte("must not travel"), 0o600)
	_ = os.Symlink(outside, filepath.Join(dotfiles, "escape"))
	_ = os.WriteFile(filepath.Join(host, "gitconfig"), []byte("[user]\n"), 0o644)
	// The stand-in agent runs on the test host: its "/root" is redirected by the upload's
	// destination, so the test reads the files from wherever the agent put them.
	e.cfg.FileSync = []config.FileSync{
		{Host: filepath.Join(host, "gitconfig"), Guest: "/root/.gitconfig"},
		{Host: dotfiles, Guest: "/root/dot", Mode: 0o640},
		{Host: filepath.Join(host, "missing"), Guest: "/root/missing"},
	}
	var notices []string
	var mu sync.Mutex
	obs := Observer{Notice: func(m string) { mu.Lock(); notices = append(notices, m); mu.Unlock() }}
	var buf strings.Builder
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeFileSync(pw, e.cfg.FileSync, obs.notice)) }()
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&buf, "%s %o\n", h.Name, h.Mode)
	}
	got := buf.String()
	for _, want := range []string{".gitconfig 600\n", "dot/ 700\n", "dot/nested/a.conf 640\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("tar lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "escape") {
		t.Errorf("a symlink was followed or copied:\n%s", got)
	}
	joined := strings.Join(notices, "\n")
	if !strings.Contains(joined, "file_sync[3]") || !strings.Contains(joined, "escape is a symlink; skipped") {
		t.Errorf("notices:\n%s", joined)
	}
}

// A new VM's disk carries the ssh files in the guest's overlay upper layer, owned by root with
// sshd's modes, so the first boot needs no provisioning round trip and no sshd restart.
func TestNewDiskCarriesTheSSHFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only a daemon running as root seeds disks")
	}
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		t.Skip("debugfs not installed (apt-get install e2fsprogs)")
	}
	e := newEnv(t)
	vm, err := e.create(CreateRequest{Name: "seeded"})
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(vm.Dir, diskFile)
	key, err := os.ReadFile(filepath.Join(vm.Dir, "ssh_host_ed25519_key"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(debugfs, "-R", "cat /root/etc/ssh/ssh_host_ed25519_key", img).Output()
	if err != nil || !bytes.Equal(got, key) {
		t.Errorf("host key on the disk = %q, %v; want the VM's host key", got, err)
	}
	for path, mode := range map[string]string{
		"/root/etc/ssh/ssh_host_ed25519_key":      "0600",
		"/root/etc/ssh/banger_authorized_keys":    "0644",
		"/root/etc/ssh/sshd_config.d/banger.conf": "0644",
		"/root/etc/ssh": "0755",
		"/root/etc":     "0755",
	} {
		out, err := exec.Command(debugfs, "-R", "stat "+path, img).Output()
		if err != nil || !strings.Contains(string(out), "Mode:  "+mode) || !strings.Contains(string(out), "User:     0") {
			t.Errorf("%s on the disk: %v\n%s\nwant mode %s, owner root", path, err, out, mode)
		}
	}
	if entries, _ := filepath.Glob(filepath.Join(vm.Dir, ".seed-*")); len(entries) != 0 {
		t.Errorf("staging left behind: %v", entries)
	}
}

// SpeaksHTTP tells an HTTP server from one that speaks first (sshd's banner), one that answers
// something else and one that never answers, which costs a probe timeout, not a hang.
func TestSpeaksHTTP(t *testing.T) {
	e := newEnv(t)
	if _, err := e.create(CreateRequest{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	serve := func(handle func(net.Conn)) int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); handle(c) }()
			}
		}()
		return ln.Addr().(*net.TCPAddr).Port
	}
	httpd := serve(func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err == nil && req.Method == http.MethodHead && req.Host == "dev.vm" {
			io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\n")
		}
	})
	sshd := serve(func(c net.Conn) { io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n"); io.Copy(io.Discard, c) })
	other := serve(func(c net.Conn) { io.WriteString(c, "220 smtp ready\r\n") })
	silent := serve(func(c net.Conn) { io.Copy(io.Discard, c) })
	// The caller's context never ends: SpeaksHTTP returns only if the probe of the silent
	// port gives up on its own timeout.
	probed := make(chan []bool, 1)
	go func() {
		probed <- e.svc.SpeaksHTTP(context.Background(), "dev", "dev.vm", []ListenAddr{
			{"127.0.0.1", httpd}, {"127.0.0.1", sshd}, {"127.0.0.1", other}, {"127.0.0.1", silent}, {"not-an-ip", httpd},
		})
	}()
	var got []bool
	select {
	case got = <-probed:
	case <-time.After(time.Minute): // a guard against hanging, not a timing check
		t.Fatal("SpeaksHTTP hangs on a silent port")
	}
	if want := []bool{true, false, false, false, false}; !slices.Equal(got, want) {
		t.Errorf("SpeaksHTTP = %v, want %v", got, want)
	}
}
