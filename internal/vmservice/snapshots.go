package vmservice

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmnet"
)

// Steps of taking a snapshot and of making a VM from one, in order, besides the create steps
// (record, dirs, network) and the resume steps (restore, agent, renew, ready) they share.
// Their names are stable: tests inject faults and pause the daemon by name.
const (
	StepSettle  = "settle"  // a cold-booted guest's systemd finishes starting units (boot snapshots)
	StepCapture = "capture" // the guest paused, saved with a copy of its disk, continued
	StepPublish = "publish" // the snapshot named and visible
	StepClone   = "clone"   // a new VM's disk copied from the snapshot's
)

// SnapshotRequest asks for a snapshot of a running VM (SnapshotVM).
type SnapshotRequest struct {
	// Name is the snapshot's name; "" names it after the VM and the time.
	Name string
	// FailStep and PauseStep: see CreateRequest.
	FailStep, PauseStep string
}

// ForkRequest asks for live clones of a running VM (Fork).
type ForkRequest struct {
	// Count is how many clones; 0 means len(Names), or 1 when there are no names.
	Count int
	// Names are the clones' names, Count of them; none: generated names.
	Names []string
	// FailStep and PauseStep: see CreateRequest. They apply to the capture and to each
	// clone's steps.
	FailStep, PauseStep string
}

// maxForks bounds how many clones one fork makes.
const maxForks = 64

// SnapshotVM saves a running VM (memory, devices, its disk) as a user snapshot and lets it
// run on: its guest is paused while it is saved and continues afterwards, commands running
// in it included. `vm create --from-snapshot` makes VMs from it.
func (s *Service) SnapshotVM(ctx context.Context, ref string, req SnapshotRequest, obs Observer) (snapshot.Info, error) {
	vm, unlock, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return snapshot.Info{}, err
	}
	defer unlock()
	name := req.Name
	if name == "" {
		name = vm.Name + "-" + time.Now().UTC().Format("20060102-150405")
	}
	if err := snapshot.ValidName(name); err != nil {
		return snapshot.Info{}, failure.Wrap(failure.Invalid, err)
	}
	if _, err := s.snaps.Get(name); err == nil {
		return snapshot.Info{}, conflictf("a snapshot named %q exists already; pick another name or remove it with `banger snapshot rm %s`", name, name)
	}
	in, build, err := s.saveable(ctx, vm)
	if err != nil {
		return snapshot.Info{}, err
	}
	st, err := s.snaps.Stage(name)
	if err != nil {
		return snapshot.Info{}, err
	}
	defer st.Discard()
	var info snapshot.Info
	list := []steps.Step{
		{
			Name: StepCapture,
			Do: func(ctx context.Context) error {
				obs.Progress.Stage("vm.snapshot", "saving the guest (paused meanwhile)")
				return s.capture(ctx, vm, in, st)
			},
		},
		{
			Name: StepPublish,
			Do: func(ctx context.Context) (err error) {
				info, err = st.Publish(metaOf(vm, name, snapshot.User, build, guestMAC(vm)))
				return err
			},
		},
	}
	if _, err := steps.Run(ctx, list, s.hooks(vm.Name, req.FailStep, req.PauseStep)); err != nil {
		return snapshot.Info{}, fmt.Errorf("vm %q: snapshot failed: %w", vm.Name, err)
	}
	s.log.Info("saved a snapshot", "vm", vm.Name, "snapshot", name)
	return info, nil
}

// saveable checks that vm runs under a VMM that can save it and returns its instance and
// the build of the agent it runs. The caller holds vm's lock.
func (s *Service) saveable(ctx context.Context, vm store.VM) (*instance, string, error) {
	in := s.instance(vm.ID)
	if vm.State != StateRunning || in == nil {
		return nil, "", conflictf("vm %q is %s; only a running VM can be saved (`banger vm start %s` first)", vm.Name, vm.State, vm.Name)
	}
	_, snap := in.machine.(vmm.Snapshotter)
	_, pause := in.machine.(vmm.Pauser)
	if !snap || !pause || !warmable(s.drivers[vm.VMM]) {
		return nil, "", conflictf("vm %q runs under %s, which cannot save a running guest", vm.Name, vm.VMM)
	}
	kern, err := s.artifacts.Kernel(ctx, vm.Kernel, nil)
	if err != nil {
		return nil, "", fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return in, agentBuild(kern), nil
}

// guestMAC is the MAC a VM's guest has on banger's network, "" for a VM without one.
func guestMAC(vm store.VM) string {
	if vm.IP == "" {
		return ""
	}
	return vmnet.MAC(vm.ID)
}

// Forked is what a fork made: its clones, in order, and how long each step took.
type Forked struct {
	Clones []store.VM
	// Capture is the timing of the fork's own step, the source saved (StepCapture).
	Capture []steps.Timing
	// Steps[i] is the timing of each step that made Clones[i], in order.
	Steps [][]steps.Timing
}

// Fork makes live clones of a running VM: each continues from the VM's state at the fork
// (processes, page cache, workspace) as a machine of its own (see clone.go). The VM is paused
// while it is saved, then runs on; the saved state is removed once the clones run (they keep
// what they map of it). All clones are made or none: a failure deletes those already made.
func (s *Service) Fork(ctx context.Context, ref string, req ForkRequest, obs Observer) (Forked, error) {
	n := req.Count
	switch {
	case n == 0 && len(req.Names) > 0:
		n = len(req.Names)
	case n == 0:
		n = 1
	}
	if n < 1 || n > maxForks {
		return Forked{}, failure.New(failure.Invalid, "a fork makes 1 to %d clones, not %d", maxForks, n)
	}
	if len(req.Names) > 0 && len(req.Names) != n {
		return Forked{}, failure.New(failure.Invalid, "%d clones asked for but %d names given; give one name per clone, or none", n, len(req.Names))
	}
	seen := map[string]bool{}
	for _, name := range req.Names {
		if seen[name] {
			return Forked{}, failure.New(failure.Invalid, "the name %q is given twice", name)
		}
		seen[name] = true
	}

	parent, unlock, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return Forked{}, err
	}
	in, build, err := s.saveable(ctx, parent)
	if err != nil {
		unlock()
		return Forked{}, err
	}
	st, err := s.snaps.Stage("fork-" + parent.Name)
	if err != nil {
		unlock()
		return Forked{}, err
	}
	defer st.Discard()
	capture := []steps.Step{{
		Name: StepCapture,
		Do: func(ctx context.Context) error {
			obs.Progress.Stage("vm.fork", "saving "+parent.Name+" (paused meanwhile)")
			return s.capture(ctx, parent, in, st)
		},
	}}
	captured, err := steps.Run(ctx, capture, s.hooks(parent.Name, req.FailStep, req.PauseStep))
	unlock() // the parent runs on; the clones need only the saved state
	if err != nil {
		return Forked{}, fmt.Errorf("vm %q: fork failed: %w", parent.Name, err)
	}
	machine, err := vmm.ReadSnapshot(st.Machine())
	if err != nil {
		return Forked{}, fmt.Errorf("vm %q: fork failed: %w", parent.Name, err)
	}
	from := &origin{machine: machine, info: snapshot.Info{
		Meta: metaOf(parent, "fork-"+parent.Name, snapshot.User, build, guestMAC(parent)), Dir: st.Dir()}}

	clones, timings, err := s.makeClones(ctx, n, func(ctx context.Context, i int) (store.VM, []steps.Timing, error) {
		creq := CreateRequest{NoNAT: !parent.NAT, FailStep: req.FailStep, PauseStep: req.PauseStep, from: from}
		if len(req.Names) > 0 {
			creq.Name = req.Names[i]
		}
		return s.Create(ctx, creq, obs)
	})
	if err != nil {
		return Forked{}, fmt.Errorf("vm %q: fork failed: %w", parent.Name, err)
	}
	s.log.Info("forked a VM", "vm", parent.Name, "clones", n)
	return Forked{Clones: clones, Capture: captured, Steps: timings}, nil
}

// makeClones runs create for clones 0 to n-1, up to forkParallel at once, and returns the
// clones in order with the timing of the steps that made each. All are made or none: on the
// first failure the creates not begun are not begun, those under way are cancelled (their
// steps undo themselves), and the clones made are deleted.
func (s *Service) makeClones(ctx context.Context, n int, create func(context.Context, int) (store.VM, []steps.Timing, error)) ([]store.VM, [][]steps.Timing, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clones := make([]store.VM, n)
	timings := make([][]steps.Timing, n)
	made := make([]bool, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(n, forkParallel()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				vm, t, err := create(cctx, i)
				if err != nil {
					errs[i] = err
					cancel()
					continue
				}
				clones[i], timings[i], made[i] = vm, t, true
			}
		}()
	}
	for i := 0; i < n && cctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-cctx.Done():
		}
	}
	close(next)
	wg.Wait()
	// The first failure that is not the cancellation of a create because of another.
	var first error
	at := 0
	for i, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled) && !errors.Is(err, context.Canceled)) {
			first, at = err, i
		}
	}
	all := true
	for _, ok := range made {
		all = all && ok
	}
	if first == nil && all {
		return clones, timings, nil
	}
	if first == nil { // cancelled before every create began
		first = context.Cause(cctx)
		for i, ok := range made {
			if !ok {
				at = i
				break
			}
		}
	}
	var derrs []error
	for i, c := range clones {
		if made[i] {
			if _, err := s.Delete(context.WithoutCancel(ctx), c.ID, true); err != nil {
				derrs = append(derrs, err)
			}
		}
	}
	return nil, nil, errors.Join(fmt.Errorf("clone %d of %d failed (the clones made are deleted): %w", at+1, n, first), errors.Join(derrs...))
}

// forkParallel is how many clones a fork makes at once: one per host CPU (a clone's creation
// is mostly its guest's renewal, CPU work), at least 2 so that one clone's host-side waits
// overlap another's work.
func forkParallel() int { return max(2, runtime.NumCPU()) }

// Snapshots lists the snapshots, boot and user, oldest first.
func (s *Service) Snapshots(ctx context.Context) ([]snapshot.Info, error) { return s.snaps.List() }

// RemoveSnapshot removes a snapshot (boot or user) by name, waiting for restores reading it;
// failure.NotFound when there is none. VMs made from it keep running: they have their own
// disks, and their memory maps of its files outlive the files' names. The spares made from a
// boot snapshot go with it.
func (s *Service) RemoveSnapshot(ctx context.Context, name string) error {
	if err := s.snaps.Remove(name); err != nil {
		return err
	}
	s.SparesOf(ctx, []string{name})
	return nil
}

// DropBootSnapshots removes the boot snapshots whose description match selects (those of an
// image that was rebuilt or deleted, of a kernel replaced, of another agent build) and
// returns their names.
func (s *Service) DropBootSnapshots(ctx context.Context, match func(snapshot.Meta) bool) ([]string, error) {
	list, err := s.snaps.List()
	if err != nil {
		return nil, err
	}
	var dropped []string
	var errs []error
	for _, i := range list {
		if i.Kind != snapshot.Boot || !match(i.Meta) {
			continue
		}
		if err := s.snaps.Remove(i.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		dropped = append(dropped, i.Name)
	}
	s.SparesOf(ctx, dropped)
	return dropped, errors.Join(errs...)
}
