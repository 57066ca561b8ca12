package vmservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/names"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// Record returns the VMM record of vm, if it has one.
func Record(vm store.VM) (vmm.Record, bool) {
	if len(vm.Runtime) == 0 {
		return vmm.Record{}, false
	}
	var rec vmm.Record
	if json.Unmarshal(vm.Runtime, &rec) != nil {
		return vmm.Record{}, false
	}
	return rec, true
}

// generateName makes friendly VM names; tests replace it to force collisions.
var generateName = names.Generate

// NewName returns a generated name no VM has yet.
func (s *Service) NewName(ctx context.Context) string {
	return generateName(func(n string) bool {
		_, err := s.store.GetVM(ctx, n)
		return err == nil
	})
}

// List returns every VM, oldest first.
func (s *Service) List(ctx context.Context) ([]store.VM, error) {
	return s.store.ListVMs(ctx)
}

// Resolve finds a VM by reference: its full name, its full id, or a prefix of either that
// matches exactly one VM.
func (s *Service) Resolve(ctx context.Context, ref string) (store.VM, error) {
	if ref == "" {
		return store.VM{}, invalidf("empty VM reference; give a VM name or id (see `banger vm list`)")
	}
	if vm, err := s.store.GetVM(ctx, ref); err == nil {
		return vm, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.VM{}, err
	}
	if vm, err := s.store.GetVMByID(ctx, ref); err == nil {
		return vm, nil
	}
	matches, err := s.store.FindVMs(ctx, ref)
	if err != nil {
		return store.VM{}, err
	}
	switch len(matches) {
	case 0:
		return store.VM{}, notFoundf("no VM named %q (see `banger vm list`)", ref)
	case 1:
		return matches[0], nil
	}
	var names []string
	for _, m := range matches {
		names = append(names, m.Name)
	}
	return store.VM{}, invalidf("%q matches %d VMs (%s); give more of the name", ref, len(matches), strings.Join(names, ", "))
}

// watch records a VMM that exits on its own (guest poweroff, crash) as stopped.
func (s *Service) watch(id string, in *instance) {
	go func() {
		<-in.machine.Done()
		in.mu.Lock()
		deleting := in.deleting
		in.mu.Unlock()
		if deleting {
			return // banger ended it on purpose
		}
		unlock := s.lock(id)
		defer unlock()
		in.mu.Lock()
		deleting = in.deleting
		if in.agent != nil {
			in.agent.Close()
			in.agent = nil
		}
		in.mu.Unlock()
		if deleting || s.instance(id) != in {
			return
		}
		s.setInstance(id, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		vm, err := s.store.GetVMByID(ctx, id)
		if err != nil {
			return
		}
		rec, _ := Record(vm)
		reason := "the VMM exited on its own (the guest powered off, or the process was killed)"
		if tail := vmm.LogTail(rec.Log, 3); !strings.HasPrefix(tail, "(") {
			reason = "the VMM exited: " + tail
		}
		if vm.State != StateRunning {
			// It died while starting: the start's own error handling records it.
			return
		}
		s.log.Info("VMM exited", "vm", vm.Name, "reason", reason)
		if _, err := s.markStopped(ctx, vm, reason); err != nil {
			s.log.Error("record VMM exit", "vm", vm.Name, "err", err)
		}
	}()
}

// endOnPurpose marks the VMM's coming exit as banger's doing (stop, kill, delete, a failed
// start), so the exit watcher does not record it as a crash; it also drops the agent session.
func (in *instance) endOnPurpose() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.deleting = true
	if in.agent != nil {
		in.agent.Close()
		in.agent = nil
	}
}

// client returns the VM's agent session, connecting again if the last one ended.
func (in *instance) client(ctx context.Context) (*agent.Client, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.agent != nil {
		select {
		case <-in.agent.Done():
			in.agent = nil
		default:
			return in.agent, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := in.machine.DialAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the guest agent: %w", err)
	}
	c, err := agent.Connect(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("connect to the guest agent: %w", err)
	}
	in.agent = c
	return c, nil
}

// OpenExec starts a command in a running VM and returns the agent stream that carries the
// session's frames (package wire).
func (s *Service) OpenExec(ctx context.Context, ref string, req agent.ExecRequest) (net.Conn, store.VM, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return nil, vm, err
	}
	if len(req.Argv) == 0 {
		return nil, vm, invalidf("exec in vm %q: no command given", vm.Name)
	}
	in := s.instance(vm.ID)
	if vm.State != StateRunning || in == nil {
		return nil, vm, conflictf("vm %q is %s, not running", vm.Name, vm.State)
	}
	c, err := in.client(ctx)
	if err != nil {
		return nil, vm, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	st, err := c.Open(ctx, agent.Request{Op: agent.OpExec, Exec: &req})
	if err != nil {
		return nil, vm, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return st, vm, nil
}

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
	if errors.Is(err, store.ErrNotFound) {
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
		in.mu.Lock()
		in.deleting = true
		if in.agent != nil {
			in.agent.Close()
			in.agent = nil
		}
		in.mu.Unlock()
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
	if err := s.store.DeleteVM(ctx, vm.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	s.withdraw(ctx, vm)
	s.forgetSSH(ctx, vm)
	return nil
}

// Reconcile brings records in line with reality when the daemon starts: VMs whose VMM still
// runs are adopted again; VMs whose VMM is gone are marked stopped (ephemeral ones are
// deleted); creates that a crashed daemon left half done are undone; VM directories without
// a record are removed.
func (s *Service) Reconcile(ctx context.Context) error {
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
	switch {
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
