package vmservice

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
	"github.com/banger-dev/banger/internal/vmnet"
)

// machineOf is the fake machine a running VM runs as.
func (e *env) machineOf(name string) *vmmtest.Machine {
	e.t.Helper()
	vm := e.state(name)
	in := e.svc.instance(vm.ID)
	if in == nil {
		e.t.Fatalf("vm %s does not run", name)
	}
	return in.machine.(*vmmtest.Machine)
}

// snapshots lists the store's snapshots by kind.
func (e *env) snapshots(kind snapshot.Kind) []snapshot.Info {
	e.t.Helper()
	all, err := e.svc.Snapshots(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []snapshot.Info
	for _, i := range all {
		if i.Kind == kind {
			out = append(out, i)
		}
	}
	return out
}

// assertClone checks that the VM called name is a clone that took its own identity: host
// name, network identity moved from the MAC the snapshot saved to its own, its own host key
// and a machine id of its own.
func (e *env) assertClone(name, savedMAC string) {
	e.t.Helper()
	vm := e.state(name)
	if vm.State != StateRunning {
		e.t.Fatalf("clone %s is %s", name, vm.State)
	}
	m := e.machineOf(name)
	if got := m.Guest().Hostname(); got != name {
		e.t.Errorf("clone %s: the guest's host name was set to %q", name, got)
	}
	link := m.Guest().Link()
	if link == nil {
		e.t.Fatalf("clone %s: its network identity was not renewed", name)
	}
	if link.OldMAC.String() != savedMAC || link.MAC.String() != vmnet.MAC(vm.ID) || link.Address.Addr().String() != vm.IP {
		e.t.Errorf("clone %s: network renewed from %s to %s %s, want from %s to %s %s", name, link.OldMAC, link.MAC, link.Address, savedMAC, vmnet.MAC(vm.ID), vm.IP)
	}
	key, err := os.ReadFile(filepath.Join(m.GuestRoot(), "etc/ssh/ssh_host_ed25519_key.pub"))
	if err != nil {
		e.t.Fatalf("clone %s: no host key was written: %v", name, err)
	}
	own, err := os.ReadFile(filepath.Join(vm.Dir, "ssh_host_ed25519_key.pub"))
	if err != nil || string(own) != string(key) {
		e.t.Errorf("clone %s: the guest's host key is not the one banger made and pinned for it (%v)", name, err)
	}
	id, err := os.ReadFile(filepath.Join(m.GuestRoot(), "etc/machine-id"))
	if err != nil || len(strings.TrimSpace(string(id))) != 32 {
		e.t.Errorf("clone %s: machine id %q, %v", name, id, err)
	}
}

func TestWarmStartRestoresTheBootSnapshotAsAnotherMachine(t *testing.T) {
	e := newEnv(t)
	n := &recordingNetwork{}
	first := e.runningVM("first", n)
	boots := e.snapshots(snapshot.Boot)
	if len(boots) != 1 || boots[0].From != "first" || boots[0].MAC != vmnet.MAC(first.ID) {
		t.Fatalf("after the first create: boot snapshots %+v, want one of vm first", boots)
	}
	if got := e.machineOf("first").Guest().Hostname(); got != "" {
		t.Errorf("the cold-booted VM was renewed (host name %q): only clones are", got)
	}
	e.runningVM("second", nil)
	e.assertClone("second", vmnet.MAC(first.ID))
	e.answers("second")
	e.runningVM("third", nil)
	e.assertClone("third", vmnet.MAC(first.ID))
	if a, b := readFile(t, e.machineOf("second").GuestRoot(), "etc/machine-id"), readFile(t, e.machineOf("third").GuestRoot(), "etc/machine-id"); a == b {
		t.Errorf("two clones of one boot snapshot got the same machine id %s", a)
	}
	if len(e.snapshots(snapshot.Boot)) != 1 {
		t.Errorf("warm starts made more boot snapshots: %+v", e.snapshots(snapshot.Boot))
	}
	// Each warm start handed its restored VMM the tap's queue, and kept no copy.
	n.assertQueuesClosed(t, 3)
	for _, name := range []string{"second", "third"} {
		if pid := e.machineOf(name).Record().PID; !holdsQueue(pid) {
			t.Errorf("the VMM of warm-started %s (pid %d) does not hold the tap queue it was handed", name, pid)
		}
	}
}

func readFile(t *testing.T, root, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestColdCreatesMakeAndUseNoBootSnapshot(t *testing.T) {
	e := newEnv(t)
	if _, err := e.create(CreateRequest{Name: "cold", Cold: true}); err != nil {
		t.Fatal(err)
	}
	e.cfg.WarmStart = false
	if _, err := e.create(CreateRequest{Name: "off"}); err != nil {
		t.Fatal(err)
	}
	if b := e.snapshots(snapshot.Boot); len(b) != 0 {
		t.Fatalf("cold creates saved boot snapshots: %+v", b)
	}
	e.cfg.WarmStart = true
	e.runningVM("warm", &recordingNetwork{})
	if _, err := e.create(CreateRequest{Name: "cold2", Cold: true}); err != nil {
		t.Fatal(err)
	}
	if got := e.machineOf("cold2").Guest().Hostname(); got != "" {
		t.Errorf("a --cold create was restored from the boot snapshot (renewed to %q)", got)
	}
}

// A boot snapshot that the VMM refuses (it was upgraded) is dropped; the VM boots cold, with a
// notice, and saves a new one.
func TestRefusedBootSnapshotFallsBackToAColdBoot(t *testing.T) {
	e := newEnv(t)
	e.runningVM("old", &recordingNetwork{})
	before := e.snapshots(snapshot.Boot)
	e.driver.Version = "vmmtest-2"
	var notices []string
	vm, _, err := e.svc.Create(context.Background(), CreateRequest{Name: "new"}, Observer{Notice: func(s string) { notices = append(notices, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if vm.State != StateRunning || e.machineOf("new").Guest().Hostname() != "" {
		t.Errorf("after the refused restore: state %s, renewed to %q; want a cold-booted running VM", vm.State, e.machineOf("new").Guest().Hostname())
	}
	if !strings.Contains(strings.Join(notices, "\n"), "booting cold") {
		t.Errorf("no notice of the cold boot: %q", notices)
	}
	after := e.snapshots(snapshot.Boot)
	if len(after) != 1 || len(before) != 1 || !after[0].Created.After(before[0].Created) || after[0].From != "new" {
		t.Errorf("boot snapshots before %+v, after %+v: want the old one replaced by one of vm new", before, after)
	}
}

func TestSnapshotVMAndCreateFromIt(t *testing.T) {
	e := newEnv(t)
	n := &recordingNetwork{}
	e.cfg.WarmStart = false
	src := e.runningVM("src", n)
	ctx := context.Background()
	info, err := e.svc.SnapshotVM(ctx, "src", SnapshotRequest{Name: "saved"}, Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != snapshot.User || info.From != "src" || info.Bytes == 0 {
		t.Errorf("snapshot %+v", info)
	}
	e.answers("src") // the VM runs on
	if _, err := e.svc.SnapshotVM(ctx, "src", SnapshotRequest{Name: "saved"}, Observer{}); !errors.Is(err, failure.Conflict) {
		t.Errorf("a second snapshot of the same name: %v, want a conflict", err)
	}
	if _, err := e.create(CreateRequest{Name: "bad", FromSnapshot: "saved", Image: "other"}); !errors.Is(err, failure.Invalid) {
		t.Errorf("a create from a snapshot with another image: %v, want invalid", err)
	}
	if _, err := e.create(CreateRequest{Name: "restored", FromSnapshot: "saved"}); err != nil {
		t.Fatal(err)
	}
	e.assertClone("restored", vmnet.MAC(src.ID))
	n.assertQueuesClosed(t, 2)
	if pid := e.machineOf("restored").Record().PID; !holdsQueue(pid) {
		t.Errorf("the VMM restored from a snapshot (pid %d) does not hold the tap queue it was handed", pid)
	}
	if _, err := e.create(CreateRequest{Name: "missing", FromSnapshot: "nope"}); !errors.Is(err, failure.NotFound) {
		t.Errorf("a create from a missing snapshot: %v, want not found", err)
	}
	if err := e.svc.RemoveSnapshot(ctx, "saved"); err != nil {
		t.Fatal(err)
	}
	e.answers("restored") // a clone outlives its snapshot
	if err := e.svc.RemoveSnapshot(ctx, "saved"); !errors.Is(err, failure.NotFound) {
		t.Errorf("removing it twice: %v, want not found", err)
	}
}

// A snapshot taken of a guest with another build of the agent is refused by name.
func TestCreateFromSnapshotOfAnotherAgentIsRefused(t *testing.T) {
	e := newEnv(t)
	e.runningVM("src", &recordingNetwork{})
	ctx := context.Background()
	if _, err := e.svc.SnapshotVM(ctx, "src", SnapshotRequest{Name: "saved"}, Observer{}); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(e.layout.SnapshotsDir(), "saved", snapshot.MetaFile)
	b, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(meta, []byte(strings.Replace(string(b), `"agent": "initrd"`, `"agent": "initrd-older"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = e.create(CreateRequest{Name: "restored", FromSnapshot: "saved"})
	if !errors.Is(err, vmm.ErrIncompatibleSnapshot) || !strings.Contains(err.Error(), "initrd-older") {
		t.Fatalf("create from a snapshot of another agent build: %v", err)
	}
}

func TestForkMakesLiveClones(t *testing.T) {
	e := newEnv(t)
	e.cfg.WarmStart = false
	parent := e.runningVM("parent", &recordingNetwork{})
	forked, err := e.svc.Fork(context.Background(), "parent", ForkRequest{Names: []string{"c1", "c2"}}, Observer{})
	if err != nil {
		t.Fatal(err)
	}
	clones := forked.Clones
	if len(clones) != 2 {
		t.Fatalf("clones %+v", clones)
	}
	// The timings name the capture, then each clone's steps from its record to its ready.
	if len(forked.Capture) != 1 || forked.Capture[0].Name != StepCapture {
		t.Errorf("capture timings %+v; want the one step %s", forked.Capture, StepCapture)
	}
	if len(forked.Steps) != 2 {
		t.Fatalf("step timings for %d clones, want 2", len(forked.Steps))
	}
	for i, list := range forked.Steps {
		var names []string
		for _, st := range list {
			names = append(names, st.Name)
		}
		if !slices.Contains(names, StepRestore) || !slices.Contains(names, StepRenew) || names[len(names)-1] != StepReady {
			t.Errorf("clone %d's step timings %v; want its restore and renew among them, ready last", i+1, names)
		}
	}
	for _, c := range clones {
		e.assertClone(c.Name, vmnet.MAC(parent.ID))
		e.answers(c.Name)
	}
	e.answers("parent")
	if got := e.machineOf("parent").Guest().Hostname(); got != "" {
		t.Errorf("the parent was renewed to %q", got)
	}
	// What can be copied while the parent runs is copied before its pause.
	if n, paused := e.machineOf("parent").Precopies(); n != 1 || paused != 0 {
		t.Errorf("the parent had %d copies ahead of its save, %d of them while paused; want one, while it ran", n, paused)
	}
	entries, _ := os.ReadDir(e.layout.SnapshotsDir())
	if len(entries) != 0 {
		t.Errorf("the fork left its saved state: %v", entries)
	}
}

// A fork whose clone fails deletes the clones it made; the parent runs on.
func TestFailedForkLeavesNoClone(t *testing.T) {
	e := newEnv(t)
	e.cfg.WarmStart = false
	e.runningVM("parent", &recordingNetwork{})
	for _, step := range []string{StepCapture, StepClone, StepRestore, StepRenew, StepReady} {
		_, err := e.svc.Fork(context.Background(), "parent", ForkRequest{Count: 2, FailStep: step}, Observer{})
		if err == nil {
			t.Fatalf("fork failing at %s succeeded", step)
		}
		vms, _ := e.store.ListVMs(context.Background())
		if len(vms) != 1 || vms[0].Name != "parent" || vms[0].State != StateRunning {
			t.Errorf("after a fork failing at %s: %+v", step, vms)
		}
		e.answers("parent")
		entries, _ := os.ReadDir(e.layout.SnapshotsDir())
		if len(entries) != 0 {
			t.Errorf("a fork failing at %s left %v", step, entries)
		}
	}
}

// What a daemon killed during a capture leaves (a staging directory) is removed by the next
// daemon's Reconcile.
func TestReconcileRemovesUnfinishedSnapshots(t *testing.T) {
	e := newEnv(t)
	st, err := e.svc.snaps.Stage("cut-short")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st.Disk(), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(e.layout.SnapshotsDir()); len(entries) != 0 {
		t.Errorf("left after reconcile: %v", entries)
	}
}

func TestForkRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	e.runningVM("parent", nil)
	for _, req := range []ForkRequest{{Count: -1}, {Count: maxForks + 1}, {Count: 2, Names: []string{"a"}}, {Names: []string{"a", "a"}}} {
		if _, err := e.svc.Fork(context.Background(), "parent", req, Observer{}); !errors.Is(err, failure.Invalid) {
			t.Errorf("fork %+v: %v, want invalid", req, err)
		}
	}
	stopped, err := e.create(CreateRequest{Name: "stopped", NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Fork(context.Background(), stopped.Name, ForkRequest{}, Observer{}); !errors.Is(err, failure.Conflict) {
		t.Errorf("fork of a VM that does not run: %v, want a conflict", err)
	}
	_ = store.VM{}
	_ = time.Now
}

// A daemon killed while it captured a VM leaves the guest paused; the next daemon lets it go
// on when it adopts it.
func TestReconcileContinuesAGuestACaptureLeftPaused(t *testing.T) {
	e := newEnv(t)
	e.runningVM("paused", nil)
	m := e.machineOf("paused")
	if err := m.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if !e.machineOf("paused").Running() {
		t.Error("after a daemon restart the guest a capture paused is still paused")
	}
	e.answers("paused")
}

// A fork makes its clones at once (up to forkParallel): two clones both reach their renew
// step, where the test holds them, before either is done; cancelled there, the fork leaves
// neither. Made one after the other, the second clone never began while the first was held.
func TestForkMakesClonesAtOnce(t *testing.T) {
	e := newEnv(t)
	e.cfg.WarmStart = false
	e.runningVM("parent", &recordingNetwork{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := e.svc.Fork(ctx, "parent", ForkRequest{Count: 2, PauseStep: StepRenew}, Observer{})
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		vms, err := e.store.ListVMs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(vms) == 3 {
			break
		}
		if time.Now().After(deadline) {
			var names []string
			for _, vm := range vms {
				names = append(names, vm.Name+" "+vm.State)
			}
			t.Fatalf("after 30s the VMs are %v; want the parent and two clones under way at once", names)
		}
		select {
		case err := <-done:
			t.Fatalf("the fork ended before both clones were under way: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a fork cancelled while its clones were made succeeded")
	}
	vms, _ := e.store.ListVMs(context.Background())
	if len(vms) != 1 || vms[0].Name != "parent" || vms[0].State != StateRunning {
		t.Errorf("after a cancelled fork: %+v; want the parent alone, running", vms)
	}
	e.answers("parent")
}
