package vmservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// Bounds of a graceful stop.
const (
	// DefaultStopTimeout is how long a guest gets to power off after the agent asked it to.
	DefaultStopTimeout = 30 * time.Second
	// vmmShutdownWait is how long the VMM's own shutdown (ACPI power button) gets next.
	vmmShutdownWait = 10 * time.Second
)

// Stop shuts a VM down gracefully: the agent powers the guest off; if the VMM has not exited
// within timeout, the VMM's own shutdown is tried, then the VMM is killed. The VM ends in
// state stopped with its disk kept; obs hears the stage once a shutdown begins. A suspended
// VM's saved guest is discarded: it ends stopped, its disk as the guest left it. Stopping a VM
// that is not running does nothing and returns stopped false (a VM whose VMM was already gone
// is recorded as stopped and counts as stopped now).
func (s *Service) Stop(ctx context.Context, ref string, timeout time.Duration, obs Observer) (vm store.VM, stopped bool, err error) {
	vm, unlock, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return vm, false, err
	}
	defer unlock()
	in := s.instance(vm.ID)
	if in == nil && vm.State == StateSuspended {
		obs.Progress.Stage("vm.stop", "discarding the suspended guest")
		vm, err = s.discardSuspended(ctx, vm)
		return vm, err == nil, err
	}
	if in == nil {
		if vmmExpected(vm) {
			vm, err = s.markStopped(ctx, vm, "")
			return vm, err == nil, err
		}
		return vm, false, nil
	}
	obs.Progress.Stage("vm.stop", "stopping: asking the guest to power off")
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	if err := s.store.SetVMState(ctx, vm.ID, StateStopping, ""); err != nil {
		return vm, false, err
	}
	how := s.shutdown(ctx, in, timeout)
	s.log.Info("stopped VM", "vm", vm.Name, "how", how)
	vm, err = s.markStopped(ctx, vm, "")
	return vm, err == nil, err
}

// resolveLocked resolves ref, locks the VM and reads it again under the lock (it may have
// changed or gone meanwhile). The caller must call unlock; on error nothing is held.
func (s *Service) resolveLocked(ctx context.Context, ref string) (vm store.VM, unlock func(), err error) {
	if vm, err = s.Resolve(ctx, ref); err != nil {
		return vm, nil, err
	}
	unlock = s.lock(vm.ID)
	if vm, err = s.reload(ctx, vm, ref); err != nil {
		unlock()
		return vm, nil, err
	}
	return vm, unlock, nil
}

// vmmExpected reports whether the VM's state says a VMM runs for it. A VM in such a state that
// has no instance lost its VMM and is really stopped.
func vmmExpected(vm store.VM) bool {
	return vm.State == StateRunning || vm.State == StateStarting || vm.State == StateStopping
}

// shutdown ends a running VMM as gently as it can and says how it went.
func (s *Service) shutdown(ctx context.Context, in *instance, timeout time.Duration) string {
	// Ask the guest first; the agent replies before it starts powering off.
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := s.session(actx, in)
	if err == nil {
		err = c.Poweroff(actx)
	}
	cancel()
	in.endOnPurpose()
	if err == nil && waitDone(ctx, in.machine, timeout) {
		return "guest powered off"
	}
	if sd, ok := in.machine.(vmm.Shutdowner); ok {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		serr := sd.Shutdown(sctx)
		cancel()
		if serr == nil && waitDone(ctx, in.machine, vmmShutdownWait) {
			return "VMM shutdown"
		}
	}
	_ = in.machine.Kill()
	return "killed after the guest did not power off"
}

func waitDone(ctx context.Context, m vmm.Machine, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.Done():
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// markStopped records a VM whose VMM is gone: no runtime record, no sockets.
func (s *Service) markStopped(ctx context.Context, vm store.VM, lastError string) (store.VM, error) {
	s.setInstance(vm.ID, nil)
	_ = os.RemoveAll(s.runtimeDir(vm.ID))
	vm.State, vm.LastError, vm.Runtime = StateStopped, lastError, nil
	err := s.store.UpdateVM(context.WithoutCancel(ctx), &vm)
	s.withdraw(ctx, vm)
	return vm, err
}

// Restart stops a VM (gracefully) and starts it again: a fresh boot.
func (s *Service) Restart(ctx context.Context, ref string, timeout time.Duration, obs Observer) (store.VM, error) {
	if _, _, err := s.Stop(ctx, ref, timeout, obs); err != nil {
		return store.VM{}, err
	}
	vm, _, err := s.Start(ctx, ref, obs)
	return vm, err
}

// Kill sends sig (SIGKILL when 0) to a VM's VMM process and waits for it to exit. The VM ends
// in state stopped, not error: the user asked for it.
func (s *Service) Kill(ctx context.Context, ref string, sig syscall.Signal) (store.VM, error) {
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	vm, unlock, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return vm, err
	}
	defer unlock()
	in := s.instance(vm.ID)
	if in == nil {
		if vmmExpected(vm) {
			return s.markStopped(ctx, vm, "")
		}
		return vm, conflictf("vm %q is %s: there is no process to kill", vm.Name, vm.State)
	}
	in.endOnPurpose()
	pid := in.machine.Record().PID
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return vm, fmt.Errorf("vm %q: send %s to pid %d: %w", vm.Name, sig, pid, err)
	}
	if !waitDone(ctx, in.machine, 10*time.Second) {
		in.mu.Lock()
		in.deleting = false // it is still running: a later exit is news again
		in.mu.Unlock()
		return vm, fmt.Errorf("vm %q: the VMM (pid %d) is still running 10s after %s; `banger vm kill %s` sends SIGKILL", vm.Name, pid, sig, vm.Name)
	}
	return s.markStopped(ctx, vm, "")
}

// SetRequest changes a stopped VM's resources; nil fields stay as they are.
type SetRequest struct {
	VCPU        *int
	MemoryBytes *int64
	DiskBytes   *int64
}

// Set reconfigures a VM that is not running. vCPUs and memory are checked like flags of vm
// create; the disk can grow (the filesystem with it) but never shrinks.
func (s *Service) Set(ctx context.Context, ref string, req SetRequest) (store.VM, error) {
	vm, unlock, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return vm, err
	}
	defer unlock()
	switch vm.State {
	case StateCreated, StateStopped, StateError:
	default:
		return vm, conflictf("vm %q is %s; stop it first (`banger vm stop %s`), then change it", vm.Name, vm.State, vm.Name)
	}
	if req.VCPU == nil && req.MemoryBytes == nil && req.DiskBytes == nil {
		return vm, invalidf("nothing to change: give --vcpu, --memory or --disk-size")
	}
	cfg, err := s.config()
	if err != nil {
		return vm, invalidf("%v", err)
	}
	facts, err := s.host.ReadFacts()
	if err != nil {
		return vm, err
	}
	// Validate the given values exactly as flags of vm create are validated.
	spec, err := config.ResolveVMSpec(config.Overrides{VCPU: req.VCPU, MemoryBytes: req.MemoryBytes, DiskBytes: req.DiskBytes}, cfg,
		config.HostFacts{CPUs: facts.CPUs, MemoryBytes: facts.MemoryBytes})
	if err != nil {
		return vm, failure.Wrap(failure.Invalid, err)
	}
	var old config.VMSpec
	_ = json.Unmarshal(vm.Spec, &old)
	if req.DiskBytes != nil {
		switch {
		case *req.DiskBytes < vm.DiskBytes:
			return vm, invalidf("vm %q: the disk can grow but never shrinks: it is %s, --disk-size asks for %s", vm.Name, bytesize.Format(vm.DiskBytes), bytesize.Format(*req.DiskBytes))
		case *req.DiskBytes > vm.DiskBytes:
			if err := disk.Grow(ctx, filepath.Join(vm.Dir, diskFile), *req.DiskBytes); err != nil {
				return vm, fmt.Errorf("vm %q: %w", vm.Name, err)
			}
		}
		vm.DiskBytes = *req.DiskBytes
		old.DiskBytes = spec.DiskBytes
	}
	if req.VCPU != nil {
		vm.VCPU = *req.VCPU
		old.VCPU = spec.VCPU
	}
	if req.MemoryBytes != nil {
		vm.MemoryMiB = spec.MemoryMiB.Value
		old.MemoryMiB = spec.MemoryMiB
	}
	vm.Spec, _ = json.Marshal(old)
	if err := s.store.UpdateVM(ctx, &vm); err != nil {
		return vm, err
	}
	return vm, nil
}

// Prune deletes every VM that is not running (created, stopped or in error) and returns them.
func (s *Service) Prune(ctx context.Context) ([]store.VM, error) {
	vms, err := s.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	var deleted []store.VM
	var errs []error
	for _, vm := range vms {
		unlock := s.lock(vm.ID)
		fresh, err := s.store.GetVMByID(ctx, vm.ID)
		if err == nil && (fresh.State == StateCreated || fresh.State == StateStopped || fresh.State == StateError) && s.instance(vm.ID) == nil {
			if err := s.destroy(ctx, fresh); err != nil {
				errs = append(errs, fmt.Errorf("vm %q: %w", vm.Name, err))
			} else {
				deleted = append(deleted, fresh)
			}
		}
		unlock()
	}
	return deleted, errors.Join(errs...)
}

// LogFiles returns the paths of a VM's guest console log and VMM log. Drivers write them into
// the VM's directory as console.log and <driver>.log; a running VM's record says exactly.
func (s *Service) LogFiles(ctx context.Context, ref string) (store.VM, string, string, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return vm, "", "", err
	}
	console, vmmLog := filepath.Join(vm.Dir, "console.log"), filepath.Join(vm.Dir, vm.VMM+".log")
	if rec, ok := Record(vm); ok {
		if rec.Console != "" {
			console = rec.Console
		}
		if rec.Log != "" {
			vmmLog = rec.Log
		}
	}
	return vm, console, vmmLog, nil
}
