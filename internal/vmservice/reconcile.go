package vmservice

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// Reconcile brings records in line with reality when the daemon starts: VMs whose VMM still
// runs are adopted again; suspended VMs stay suspended, and suspends or resumes a crashed
// daemon left half done are settled (see StateSuspending); VMs whose VMM is gone are marked stopped (ephemeral ones are
// deleted); creates that a crashed daemon left half done are undone; VM directories without
// a record are removed.
func (s *Service) Reconcile(ctx context.Context) error {
	// Snapshots a dead daemon was putting together (a capture cut short, a fork's saved
	// state) are not snapshots.
	if removed, err := s.snaps.Clean(ctx); err != nil {
		s.log.Error("clean up the snapshots directory", "err", err)
	} else if len(removed) > 0 {
		s.log.Info("removed unfinished snapshots", "names", removed)
	}
	vms, err := s.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, vm := range vms {
		known[vm.ID] = true
		s.reconcileOne(ctx, vm)
	}
	s.reconcileNetwork(ctx)
	s.sweepOrphans()
	for _, dir := range []string{s.layout.VMsDir(), s.layout.VMRuntimeDir()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !known[e.Name()] {
				s.log.Info("removing leftover VM files without a record", "path", filepath.Join(dir, e.Name()))
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
	return nil
}

// orphanSweeper is a driver that can end VMMs no record names: processes a daemon started
// and then crashed before it recorded them (the Firecracker driver's jails of banger's root
// helper). SweepOrphans ends and removes every such VMM of the daemon's whose VM id is not in
// live, and leaves those in live alone.
type orphanSweeper interface {
	SweepOrphans(live map[string]bool) error
}

// sweepOrphans has the drivers that can end VMMs no running VM owns.
func (s *Service) sweepOrphans() {
	live := map[string]bool{}
	s.mu.Lock()
	for id := range s.running {
		live[id] = true
	}
	s.mu.Unlock()
	for name, d := range s.drivers {
		if sw, ok := d.(orphanSweeper); ok {
			if err := sw.SweepOrphans(live); err != nil {
				s.log.Warn("end VMMs no VM owns", "driver", name, "err", err)
			}
		}
	}
}

func (s *Service) reconcileOne(ctx context.Context, vm store.VM) {
	unlock := s.lock(vm.ID)
	defer unlock()
	var m vmm.Machine
	if rec, ok := Record(vm); ok {
		if d, ok := s.drivers[rec.Driver]; ok {
			var err error
			if m, err = d.Attach(rec); err != nil {
				m = nil
			}
		}
	}
	if s.reconcileSuspend(ctx, vm, m) {
		return
	}
	switch {
	case vm.State == StateSpare:
		// Spares are a cache of the daemon that made them (see spares.go).
		s.log.Info("deleting a spare VM of the previous daemon", "vm", vm.Name)
		if err := s.destroy(ctx, vm); err != nil {
			s.log.Error("delete spare VM", "vm", vm.Name, "err", err)
		}
	case vm.State == StateCreating || (vm.AutoRemove && vm.State == StateStarting):
		// (A create stays "creating" through its boot; its VMM, if one started, is ended too.)
		// A create the daemon did not finish: undo it as the create would have.
		s.log.Info("undoing a create the daemon did not finish", "vm", vm.Name, "state", vm.State)
		if err := s.destroy(ctx, vm); err != nil {
			s.log.Error("undo half-finished create", "vm", vm.Name, "err", err)
		}
	case vm.State == StateStarting:
		// A start the daemon did not finish: end it; the VM and its disk stay.
		s.log.Info("ending a start the daemon did not finish", "vm", vm.Name)
		if m != nil {
			_ = m.Kill()
		}
		_, _ = s.markStopped(ctx, vm, "the daemon stopped while this VM was starting; start it again")
	case m != nil && (vm.State == StateRunning || vm.State == StateStopping):
		in := &instance{machine: m}
		s.setInstance(vm.ID, in)
		s.watch(vm.ID, in)
		if vm.State == StateStopping {
			// The stop was cut short; the VM still runs, so say so. Stopping it is the user's call.
			_ = s.store.SetVMState(ctx, vm.ID, StateRunning, "a stop was interrupted by a daemon restart")
		}
		// A snapshot or fork cut short left its guest paused (nothing else pauses a running
		// VM): let it go on. Resuming a running machine is a no-op (vmm.Pauser).
		if p, ok := m.(vmm.Pauser); ok {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := p.Resume(rctx); err != nil {
				s.log.Warn("continue a VM a snapshot may have left paused", "vm", vm.Name, "err", err)
			}
			cancel()
		}
		s.log.Info("adopted running VM", "vm", vm.Name, "pid", m.Record().PID)
	case m != nil:
		// A VMM runs for a VM recorded as not running: nothing should. End it.
		s.log.Warn("ending a VMM whose VM is not recorded as running", "vm", vm.Name, "state", vm.State, "pid", m.Record().PID)
		_ = m.Kill()
		_, _ = s.markStopped(ctx, vm, vm.LastError)
	case vm.AutoRemove && vm.State != StateCreated:
		s.log.Info("deleting ephemeral VM whose VMM is gone", "vm", vm.Name)
		if err := s.destroy(ctx, vm); err != nil {
			s.log.Error("delete ephemeral VM", "vm", vm.Name, "err", err)
		}
	case vm.State == StateRunning || vm.State == StateStopping:
		_, _ = s.markStopped(ctx, vm, "the VMM exited while the daemon was not running")
	}
}
