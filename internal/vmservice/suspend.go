package vmservice

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// Suspend and resume.
//
// A suspended VM has no VMM process: its guest (vCPUs, devices, memory) is saved in its
// directory (suspendDir) and its disk stays as the guest left it. It has no tap, no filter
// rules and no name in DNS while suspended; its address stays reserved (the record keeps it)
// and resume attaches the same tap with the same MAC (both follow from the VM's id), so the
// guest finds its network as it was. The snapshot's description (vmm.SnapshotFile) is what
// the driver writes last, so a directory that holds one holds a complete snapshot: that is
// how Reconcile tells a finished suspend from one a killed daemon cut short.
//
// Intermediate states, for a daemon that dies half way (Reconcile):
//   - suspending: the VMM may still run (paused) and the snapshot may be partial.
//   - resuming: a VMM may run from the snapshot; the snapshot is intact (restores only read it).
const (
	StateSuspending = "suspending"
	StateSuspended  = "suspended"
	StateResuming   = "resuming"
)

// Suspend and resume steps, in order. Their names are stable: tests inject faults by name.
const (
	StepPause    = "pause"    // the guest's vCPUs stop, so its disk stops changing
	StepSnapshot = "snapshot" // the guest saved into the VM's directory
	StepRelease  = "release"  // the VMM ended, its tap and sockets gone: the point of no return
	StepRestore  = "restore"  // a VMM started from the snapshot
	StepRenew    = "renew"    // the guest told the time and given fresh entropy
)

// suspendDirName is where a VM's suspended guest is kept, inside the VM's directory.
const suspendDirName = "suspend"

func suspendDir(vm store.VM) string { return filepath.Join(vm.Dir, suspendDirName) }

// Suspend saves a running VM's guest to disk and ends its VMM, which frees the guest's memory;
// the VM ends in state suspended. A suspended VM is returned as it is with changed false.
//
// If saving fails the VM runs on as it was. Once the snapshot is complete the VMM is killed;
// from there on the VM is suspended even if recording it fails (Reconcile finds the
// snapshot). A VMM that cannot save its guests, or a machine started by a banger that could
// not, is refused (conflict) with the reason.
func (s *Service) Suspend(ctx context.Context, ref string, obs Observer) (vm store.VM, changed bool, err error) {
	vm, unlock, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return vm, false, err
	}
	defer unlock()
	in := s.instance(vm.ID)
	switch {
	case vm.State == StateSuspended:
		return vm, false, nil
	case vm.State != StateRunning || in == nil:
		return vm, false, conflictf("vm %q is %s; only a running VM can be suspended", vm.Name, vm.State)
	}
	snapper, ok := in.machine.(vmm.Snapshotter)
	pauser, pok := in.machine.(vmm.Pauser)
	_, rok := s.drivers[vm.VMM].(vmm.Restorer)
	if !ok || !pok || !rok {
		return vm, false, conflictf("vm %q runs under %s, which cannot save a running guest; `banger vm stop %s` shuts it down instead", vm.Name, vm.VMM, vm.Name)
	}
	dir := suspendDir(vm)
	list := []steps.Step{
		{
			Name: StepPause,
			Do: func(ctx context.Context) error {
				obs.Progress.Stage("vm.suspend", "pausing the guest")
				// Recorded first: a daemon that dies from here on leaves a VM that
				// Reconcile recognises (see StateSuspending).
				if err := s.store.SetVMState(ctx, vm.ID, StateSuspending, ""); err != nil {
					return err
				}
				// The agent session ends here: the guest's side of it would otherwise be
				// saved half open.
				in.mu.Lock()
				in.closeSessionLocked()
				in.mu.Unlock()
				if err := pauser.Pause(ctx); err != nil {
					return errors.Join(err, s.store.SetVMState(context.WithoutCancel(ctx), vm.ID, StateRunning, ""))
				}
				return nil
			},
			Undo: func(ctx context.Context) error {
				return errors.Join(pauser.Resume(ctx), s.store.SetVMState(ctx, vm.ID, StateRunning, ""))
			},
		},
		{
			Name: StepSnapshot,
			Do: func(ctx context.Context) error {
				obs.Progress.Stage("vm.suspend", "saving the guest's memory to "+dir)
				// A leftover of a suspend that was cut short is no snapshot of this guest.
				if err := os.RemoveAll(dir); err != nil {
					return fmt.Errorf("remove the old %s: %w", dir, err)
				}
				if err := os.Mkdir(dir, 0o700); err != nil {
					return fmt.Errorf("create %s: %w", dir, err)
				}
				if _, err := snapper.Snapshot(ctx, dir); err != nil {
					// A failed step is not undone: its directory goes here.
					return errors.Join(fmt.Errorf("save the guest: %w", err), os.RemoveAll(dir))
				}
				return nil
			},
			Undo: func(ctx context.Context) error { return os.RemoveAll(dir) },
		},
		{
			Name: StepRelease,
			Do: func(ctx context.Context) error {
				obs.Progress.Stage("vm.suspend", "ending the VMM")
				in.endOnPurpose()
				if err := in.machine.Kill(); err != nil {
					// The guest is saved and paused: a VMM that lingers holds memory, not state.
					s.log.Error("end the VMM of a suspended VM", "vm", vm.Name, "err", err)
				}
				return s.markSuspended(ctx, &vm, "")
			},
		},
	}
	if _, err := steps.Run(ctx, list, s.hooks(vm.Name, s.faultStep, "")); err != nil {
		fresh, _ := s.store.GetVMByID(context.WithoutCancel(ctx), vm.ID)
		if fresh.ID != "" {
			vm = fresh
		}
		return vm, false, fmt.Errorf("vm %q: suspend failed: %w", vm.Name, err)
	}
	s.log.Info("suspended VM", "vm", vm.Name, "dir", dir)
	return vm, true, nil
}

// markSuspended records a VM whose VMM is gone and whose guest is saved in its suspend
// directory: no runtime record, no sockets, no tap. It is recorded even when ctx is done.
func (s *Service) markSuspended(ctx context.Context, vm *store.VM, lastError string) error {
	s.setInstance(vm.ID, nil)
	_ = os.RemoveAll(s.runtimeDir(vm.ID))
	vm.State, vm.LastError, vm.Runtime = StateSuspended, lastError, nil
	err := s.store.UpdateVM(context.WithoutCancel(ctx), vm)
	s.withdraw(ctx, *vm)
	return err
}

// Resume starts a suspended VM's guest again from its snapshot, where it was: same disk,
// same tap, MAC and address. Once its agent answers it is told the host's time and given
// fresh entropy (an agent too old for that is a notice, not a failure), the VM is running,
// and the snapshot is removed. If it fails, everything it started is ended and the VM stays
// suspended with its snapshot, the reason in its last error. (A restored guest whose agent
// never answered ran meanwhile and may have written to its disk, which the snapshot does not
// know: resuming it again is then a guest whose disk moved on under it. vm stop, which
// discards the snapshot, is the safe way out.) A running VM is returned as it is, with nil
// timings.
func (s *Service) Resume(ctx context.Context, ref string, obs Observer) (store.VM, []steps.Timing, error) {
	vm, unlock, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return vm, nil, err
	}
	defer unlock()
	switch vm.State {
	case StateRunning:
		return vm, nil, nil
	case StateSuspended:
	default:
		return vm, nil, conflictf("vm %q is %s, not suspended; `banger vm start %s` boots it", vm.Name, vm.State, vm.Name)
	}
	return s.resume(ctx, vm, obs)
}

// resume does Resume's work on a suspended VM; the caller holds its lock.
func (s *Service) resume(ctx context.Context, vm store.VM, obs Observer) (store.VM, []steps.Timing, error) {
	dir := suspendDir(vm)
	snap, err := vmm.ReadSnapshot(dir)
	if err != nil {
		return vm, nil, fmt.Errorf("vm %q: its saved guest cannot be read (%w); `banger vm stop %s` discards it, then `banger vm start %s` boots the VM afresh", vm.Name, err, vm.Name, vm.Name)
	}
	b, err := s.prepareBoot(ctx, &vm, obs)
	if err != nil {
		return vm, nil, err
	}
	restorer, ok := b.driver.(vmm.Restorer)
	if !ok {
		return vm, nil, conflictf("vm %q: the %s VMM cannot restore a saved guest; `banger vm stop %s` discards it, then `banger vm start %s` boots the VM afresh", vm.Name, vm.VMM, vm.Name, vm.Name)
	}
	// The VMM's accelerator is the one the guest was saved under: QEMU refuses another.
	if vm.Accel != "" {
		b.accel = host.Accel(vm.Accel)
	}
	list := []steps.Step{
		s.networkStep(b),
		{
			Name: StepRestore,
			Do: func(ctx context.Context) error {
				b.obs.Progress.Stage("vm.resume", fmt.Sprintf("restoring the guest under %s (%s)", b.driver.Name(), b.accel))
				if err := s.store.SetVMState(ctx, vm.ID, StateResuming, ""); err != nil {
					return err
				}
				m, err := s.spawn(b, func(cfg vmm.Config) (vmm.Machine, error) { return restorer.Restore(ctx, cfg, snap) })
				if err != nil {
					return err
				}
				vm.Runtime, vm.State, vm.LastError = s.adopt(b, m), StateResuming, ""
				return s.store.UpdateVM(ctx, &vm)
			},
			Undo: func(ctx context.Context) error { return s.endMachine(b) },
		},
		s.restoredAgentStep(b, "vm.resume"),
		{
			Name: StepRenew,
			Do: func(ctx context.Context) error {
				s.renew(ctx, vm, b)
				return nil
			},
		},
		{
			Name: StepReady,
			Do: func(ctx context.Context) error {
				vm.State = StateRunning
				if err := s.store.UpdateVM(ctx, &vm); err != nil {
					return err
				}
				s.announce(ctx, &vm)
				if err := os.RemoveAll(dir); err != nil {
					s.log.Error("remove the snapshot of a resumed VM", "vm", vm.Name, "dir", dir, "err", err)
				}
				return nil
			},
		},
	}
	timings, err := steps.Run(ctx, list, s.hooks(vm.Name, s.faultStep, ""))
	if err != nil {
		_ = os.RemoveAll(s.runtimeDir(vm.ID))
		cause := err
		var se *steps.Error
		if errors.As(err, &se) {
			cause = se.Err
		}
		if uerr := s.markSuspended(ctx, &vm, "resume failed: "+cause.Error()); uerr != nil {
			s.log.Error("record failed resume", "vm", vm.Name, "err", uerr)
		}
		return vm, timings, fmt.Errorf("vm %q: resume failed (it stays suspended): %w", vm.Name, err)
	}
	s.log.Info("resumed VM", "vm", vm.Name)
	return vm, timings, nil
}

// restoredAgentStep waits for the agent of a guest restored from a snapshot (a resume, a
// clone), connecting anew on each attempt (connectAnew), and makes it the VM's session;
// stage names the progress stage it reports under.
func (s *Service) restoredAgentStep(b *boot, stage string) steps.Step {
	return steps.Step{
		Name: StepAgent,
		Do: func(ctx context.Context) error {
			b.obs.Progress.Stage(stage, "waiting for the guest agent")
			c, err := s.connectAnew(ctx, b.in.machine, b.timeout, "boot_timeout")
			if err != nil {
				return s.bootFailure(b.vm.Name, b.vm.ID, b.in.machine, err, false)
			}
			b.useAgent(c)
			return nil
		},
		Undo: b.closeAgent,
	}
}

// agentAttempts bound the attempts to connect to the agent in connectAnew: the first is short
// (a guest restored inside a dead session never answers it; one that is alive answers in well
// under a second even under emulation), the later ones give a slow host more time.
var agentAttempts = []time.Duration{2 * time.Second, 5 * time.Second}

// connectAnew waits, up to timeout, for the agent of a guest whose host may have gone away
// without closing its session: a guest restored from a snapshot (saved while a session was
// open, or before the guest saw it end), or one whose daemon was killed with -9. A handshake
// on a new connection can then land in that dead session and go unanswered until the guest
// sees the host go away. So each attempt is bounded (agentAttempts), and the next one
// connects anew, which shows the guest that the old host went away. limit, when set, names
// the setting that timeout comes from, for the error.
func (s *Service) connectAnew(ctx context.Context, m vmm.Machine, timeout time.Duration, limit string) (*agent.Client, error) {
	if limit != "" {
		limit = " (" + limit + ")"
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("the guest agent did not answer within %s%s", timeout, limit))
	defer cancel()
	for attempt := 0; ; attempt++ {
		c, err := s.waitAgent(ctx, m, agentAttempts[min(attempt, len(agentAttempts)-1)])
		switch {
		case err == nil:
			return c, nil
		case ctx.Err() != nil:
			return nil, context.Cause(ctx)
		case errors.Is(err, errVMMExited):
			return nil, err
		}
		s.log.Debug("a guest's agent did not answer; connecting anew", "err", err)
	}
}

// renew tells a restored guest the host's time and gives it fresh entropy. An agent that
// cannot (one that predates the operation) leaves a guest that runs with a stale clock until
// it syncs itself: a warning and a notice, not a failure.
func (s *Service) renew(ctx context.Context, vm store.VM, b *boot) {
	entropy := make([]byte, 64)
	_, _ = rand.Read(entropy) // crypto/rand.Read never fails
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.cli.Renew(rctx, agent.Renewal{Clock: time.Now(), Entropy: entropy}); err != nil {
		s.log.Warn("renew a resumed guest", "vm", vm.Name, "err", err)
		b.obs.notice(fmt.Sprintf("vm %q: its guest could not be told the time after the resume (%v); its clock may lag until it syncs", vm.Name, err))
	}
}

// discardSuspended turns a suspended VM into a stopped one: its saved guest is removed, its
// disk stays as the guest left it (as after a power cut). The caller holds its lock.
func (s *Service) discardSuspended(ctx context.Context, vm store.VM) (store.VM, error) {
	if err := os.RemoveAll(suspendDir(vm)); err != nil {
		return vm, fmt.Errorf("vm %q: remove its saved guest: %w", vm.Name, err)
	}
	return s.markStopped(ctx, vm, "")
}

// reconcileSuspend settles a VM that a daemon left suspended, suspending or resuming (see the
// states), with m its VMM if one still runs. It reports whether vm was such a VM.
func (s *Service) reconcileSuspend(ctx context.Context, vm store.VM, m vmm.Machine) bool {
	dir := suspendDir(vm)
	_, snapErr := vmm.ReadSnapshot(dir)
	switch vm.State {
	case StateSuspending:
		if m != nil {
			// The VMM outlived the daemon: the guest is whole in it. Let it run on.
			s.log.Info("a suspend was cut short; the VM runs on", "vm", vm.Name)
			_ = os.RemoveAll(dir)
			if p, ok := m.(vmm.Pauser); ok {
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := p.Resume(ctx)
				cancel()
				if err != nil {
					s.log.Error("continue the guest of a VM whose suspend was cut short", "vm", vm.Name, "err", err)
				}
			}
			in := &instance{machine: m}
			s.setInstance(vm.ID, in)
			s.watch(vm.ID, in)
			_ = s.store.SetVMState(ctx, vm.ID, StateRunning, "a suspend was interrupted by a daemon restart")
			return true
		}
	case StateResuming:
		if m != nil {
			s.log.Info("ending a resume the daemon did not finish", "vm", vm.Name)
			_ = m.Kill()
		}
	case StateSuspended:
		if m != nil {
			_ = m.Kill()
		}
	default:
		return false
	}
	if snapErr != nil {
		s.log.Warn("a suspended VM's saved guest is gone or incomplete; it is stopped", "vm", vm.Name, "err", snapErr)
		_ = os.RemoveAll(dir)
		_, _ = s.markStopped(ctx, vm, "its saved guest was lost (the daemon stopped while suspending it, or the files are damaged); start it to boot afresh")
		return true
	}
	msg := vm.LastError
	if vm.State == StateResuming {
		msg = "a resume was interrupted by a daemon restart; resume it again"
	}
	if err := s.markSuspended(ctx, &vm, msg); err != nil {
		s.log.Error("record a suspended VM", "vm", vm.Name, "err", err)
	}
	return true
}
