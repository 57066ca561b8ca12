package vmservice

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/store"
)

// Delete removes a VM's disk, files and record. A VM whose VMM runs is refused (conflict)
// unless force is set; then its VMM is ended first.
func (s *Service) Delete(ctx context.Context, ref string, force bool) (store.VM, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return vm, err
	}
	unlock := s.lock(vm.ID)
	defer unlock()
	// Re-read under the lock: a create may have finished or undone itself meanwhile.
	vm, err = s.store.GetVMByID(ctx, vm.ID)
	if errors.Is(err, failure.NotFound) {
		return vm, notFoundf("vm %q no longer exists", ref)
	} else if err != nil {
		return vm, err
	}
	if !force && s.instance(vm.ID) != nil {
		return vm, conflictf("vm %q is %s; stop it first (`banger vm stop %s`), or delete it as it runs with `banger vm delete -f %s`", vm.Name, vm.State, vm.Name, vm.Name)
	}
	if err := s.destroy(ctx, vm); err != nil {
		return vm, fmt.Errorf("delete vm %q: %w", vm.Name, err)
	}
	s.mu.Lock()
	delete(s.locks, vm.ID)
	s.mu.Unlock()
	return vm, nil
}

// destroy kills the VM's process (the one this daemon started, or the one its record names),
// removes its files and its record. The caller holds the VM's lock.
func (s *Service) destroy(ctx context.Context, vm store.VM) error {
	if in := s.instance(vm.ID); in != nil {
		in.endOnPurpose()
		if err := in.machine.Kill(); err != nil {
			return err
		}
		s.setInstance(vm.ID, nil)
	} else if rec, ok := Record(vm); ok {
		if d, ok := s.drivers[rec.Driver]; ok {
			if m, err := d.Attach(rec); err == nil {
				if err := m.Kill(); err != nil {
					return err
				}
			}
		}
	}
	if err := errors.Join(os.RemoveAll(vm.Dir), os.RemoveAll(s.runtimeDir(vm.ID))); err != nil {
		return fmt.Errorf("remove files: %w", err)
	}
	if err := s.store.DeleteVM(ctx, vm.ID); err != nil && !errors.Is(err, failure.NotFound) {
		return err
	}
	s.withdraw(ctx, vm)
	s.forgetSSH(ctx, vm)
	return nil
}
