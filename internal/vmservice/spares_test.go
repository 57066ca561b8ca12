package vmservice

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
	"github.com/banger-dev/banger/internal/vmnet"
)

// backgroundWork runs the service's background work as the daemon does, and lets a test wait
// until it has all ended.
type backgroundWork struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (b *backgroundWork) start(name string, fn func(ctx context.Context)) bool {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn(b.ctx)
	}()
	return true
}

// withSpares gives e's service background work (so that it makes spares, config
// warm_spares of them) and returns it. Fills start at once after a claim.
func (e *env) withSpares(n int) *backgroundWork {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bg := &backgroundWork{ctx: ctx, cancel: cancel}
	e.t.Cleanup(func() { cancel(); bg.wg.Wait() })
	e.cfg.WarmSpares = n
	e.svc = e.newService()
	e.svc.background = bg.start
	old := refillDelay
	refillDelay = 0
	e.t.Cleanup(func() { refillDelay = old })
	return bg
}

// spares returns the spare records in the store.
func (e *env) spares() []store.VM {
	e.t.Helper()
	vms, err := e.store.ListVMs(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []store.VM
	for _, vm := range vms {
		if vm.Spare() {
			out = append(out, vm)
		}
	}
	return out
}

// oneSpare waits for the background work and returns the one spare it made.
func (e *env) oneSpare(bg *backgroundWork) store.VM {
	e.t.Helper()
	bg.wg.Wait()
	sp := e.spares()
	if len(sp) != 1 {
		e.t.Fatalf("spares: %+v, want one", sp)
	}
	if !strings.HasPrefix(sp[0].Name, "spare-") {
		e.t.Errorf("spare named %q", sp[0].Name)
	}
	return sp[0]
}

// warmWithSpare makes a VM cold (first) and one warm (warm) and returns the spare the
// warm start left.
func (e *env) warmWithSpare(bg *backgroundWork) store.VM {
	e.t.Helper()
	e.runningVM("first", &recordingNetwork{})
	e.runningVM("warm", nil)
	return e.oneSpare(bg)
}

func TestWarmCreatesTakeSpares(t *testing.T) {
	e := newEnv(t)
	bg := e.withSpares(1)
	first := e.runningVM("first", &recordingNetwork{})
	bg.wg.Wait()
	if sp := e.spares(); len(sp) != 0 {
		t.Fatalf("spares after the first, cold, VM of a combination: %+v", sp)
	}
	e.runningVM("warm", nil)
	sp := e.oneSpare(bg)

	// A spare is nobody's VM: not listed, not resolved, renewed under its own name.
	vms, err := e.svc.List(context.Background())
	if err != nil || len(vms) != 2 || vms[0].Name != "first" || vms[1].Name != "warm" {
		t.Errorf("List = %+v, %v; want vms first and warm only", vms, err)
	}
	for _, ref := range []string{sp.Name, sp.ID, sp.ID[:6]} {
		if _, err := e.svc.Resolve(context.Background(), ref); failure.Of(err) != failure.NotFound {
			t.Errorf("Resolve(%q) = %v, want not found", ref, err)
		}
	}
	spareGuest := e.svc.instance(sp.ID).machine.(*vmmtest.Machine)
	if got := spareGuest.Guest().Hostname(); got != sp.Name {
		t.Errorf("the spare's guest is called %q, want %q", got, sp.Name)
	}

	// The next warm create takes it: same VM (id, address, disk), its user's name.
	ctx := context.Background()
	vm, timings, err := e.svc.Create(ctx, CreateRequest{Name: "second"}, Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if vm.ID != sp.ID || vm.IP != sp.IP || vm.State != StateRunning || vm.Name != "second" {
		t.Errorf("second = %+v, want spare %+v renamed and running", vm, sp)
	}
	if len(timings) == 0 || timings[0].Name != StepClaim {
		t.Errorf("steps %+v, want the claim first", timings)
	}
	g := spareGuest.Guest()
	if got := g.Hostname(); got != "second" {
		t.Errorf("the claimed guest is called %q, want second", got)
	}
	if link := g.Link(); link == nil || link.OldMAC.String() != vmnet.MAC(sp.ID) || link.MAC.String() != vmnet.MAC(sp.ID) {
		t.Errorf("claim renewed the link %+v, want it kept at %s", link, vmnet.MAC(sp.ID))
	}
	if hosts := readFile(t, spareGuest.GuestRoot(), "etc/hosts"); !strings.Contains(hosts, vm.IP+"\tsecond.vm second") {
		t.Errorf("/etc/hosts does not name second:\n%s", hosts)
	}
	known, err := os.ReadFile(e.svc.ssh.KnownHostsFile())
	if err != nil || !strings.Contains(string(known), "second") || strings.Contains(string(known), sp.Name) {
		t.Errorf("known_hosts after the claim (%v):\n%s", err, known)
	}
	e.answers("second")

	// A new spare is made behind it, a machine of its own.
	next := e.oneSpare(bg)
	if next.ID == sp.ID || next.IP == sp.IP || next.IP == first.IP {
		t.Errorf("the new spare %+v is not a VM of its own", next)
	}

	// Deleting the user's VM deletes what was the spare.
	if _, err := e.svc.Delete(ctx, "second", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the claimed spare's directory is left: %v", err)
	}

	// Spares go when the daemon stops.
	e.svc.RemoveSpares(ctx)
	if left := e.spares(); len(left) != 0 {
		t.Errorf("spares left after RemoveSpares: %+v", left)
	}
	for _, name := range []string{"first", "warm"} {
		if _, err := e.svc.Delete(ctx, name, true); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNothingLeft()
}

// A spare goes with the boot snapshot it was made from: no create would take it any more.
func TestSparesGoWithTheirBootSnapshot(t *testing.T) {
	e := newEnv(t)
	bg := e.withSpares(1)
	sp := e.warmWithSpare(bg)
	boots := e.snapshots(snapshot.Boot)
	if len(boots) != 1 {
		t.Fatalf("boot snapshots %+v", boots)
	}
	if got := e.svc.SpareCounts(); len(got) != 1 || got[boots[0].Name] != 1 {
		t.Errorf("SpareCounts = %v; want one spare of %s", got, boots[0].Name)
	}
	if err := e.svc.RemoveSnapshot(context.Background(), boots[0].Name); err != nil {
		t.Fatal(err)
	}
	if got := e.svc.SpareCounts(); len(got) != 0 {
		t.Errorf("SpareCounts after the boot snapshot went = %v", got)
	}
	if left := e.spares(); len(left) != 0 {
		t.Errorf("spares left after their boot snapshot went: %+v", left)
	}
	if _, err := os.Stat(sp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the spare's directory is left: %v", err)
	}
}

// warm_spares = 0 keeps none, and a create without spares restores as before.
func TestNoSparesWhenNoneAreWanted(t *testing.T) {
	e := newEnv(t)
	bg := e.withSpares(0)
	e.runningVM("first", &recordingNetwork{})
	e.runningVM("warm", nil)
	bg.wg.Wait()
	if sp := e.spares(); len(sp) != 0 {
		t.Fatalf("spares with warm_spares = 0: %+v", sp)
	}
	_, timings, err := e.svc.Create(context.Background(), CreateRequest{Name: "second"}, Observer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tm := range timings {
		if tm.Name == StepClaim {
			t.Errorf("a claim without spares: %+v", timings)
		}
	}
	e.assertClone("second", e.snapshots(snapshot.Boot)[0].MAC)
}

// A claim that fails deletes the spare (it is no use half renamed) and leaves no VM of the
// create behind.
func TestFailedClaimLeavesNothing(t *testing.T) {
	e := newEnv(t)
	bg := e.withSpares(1)
	sp := e.warmWithSpare(bg)
	_, _, err := e.svc.Create(context.Background(), CreateRequest{Name: "second", FailStep: StepRenew}, Observer{})
	if err == nil || !strings.Contains(err.Error(), "fault injected") {
		t.Fatalf("Create = %v, want the injected fault", err)
	}
	bg.wg.Wait()
	if _, err := e.store.GetVMByID(context.Background(), sp.ID); failure.Of(err) != failure.NotFound {
		t.Errorf("the spare of a failed claim is left: %v", err)
	}
	if _, err := e.store.GetVM(context.Background(), "second"); failure.Of(err) != failure.NotFound {
		t.Errorf("the failed create's VM is left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sp.Dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the spare's directory is left: %v", err)
	}
}

// After a crash, the next daemon deletes the spares of the last one: they are its cache.
func TestReconcileDeletesSpares(t *testing.T) {
	e := newEnv(t)
	bg := e.withSpares(1)
	sp := e.warmWithSpare(bg)
	m := e.svc.instance(sp.ID).machine

	e.svc = e.newService() // a new daemon: knows no instance
	if err := e.svc.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := e.spares(); len(left) != 0 {
		t.Errorf("spares after Reconcile: %+v", left)
	}
	<-m.Done()
	if e.state("first").State != StateRunning {
		t.Errorf("Reconcile touched the user's VM: %+v", e.state("first"))
	}
}

// A create that asks for something a spare does not have — no NAT (its filter rules are
// made at attach), a cold boot — restores or boots as before and leaves the spare ready.
func TestSparesOnlyForCreatesLikeThem(t *testing.T) {
	e := newEnv(t)
	bg := e.withSpares(1)
	sp := e.warmWithSpare(bg)
	for _, req := range []CreateRequest{{Name: "nonat", NoNAT: true}, {Name: "cold", Cold: true}} {
		vm, timings, err := e.svc.Create(context.Background(), req, Observer{})
		if err != nil {
			t.Fatal(err)
		}
		if vm.ID == sp.ID || len(timings) > 0 && timings[0].Name == StepClaim {
			t.Errorf("create %+v took the spare", req)
		}
		bg.wg.Wait()
	}
	if left := e.spares(); len(left) != 1 || left[0].ID != sp.ID {
		t.Errorf("spares after creates that take none: %+v; want %s still ready", left, sp.Name)
	}
}
