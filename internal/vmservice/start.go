package vmservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/catalog"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmnet"
)

// boot is what starting a VM needs, resolved before its steps run.
type boot struct {
	vm      *store.VM
	driver  vmm.Driver
	accel   host.Accel
	kernel  catalog.Kernel
	image   catalog.Image
	timeout time.Duration
	// consoleMax caps the guest console log (config console_log_size).
	consoleMax int64
	obs        Observer
	// creating: the boot is part of a create, which stays in state creating until the VM is
	// ready, so that a daemon crash half way undoes the whole create.
	creating bool
	// unreachable: the agent step failed because the guest never answered (not because the
	// caller gave up). keepUnreachable: the create keeps such a VM, console log included.
	unreachable, keepUnreachable bool
	// seeded: the VM's new disk already holds the ssh files; provisioning is not needed.
	seeded bool

	in   *instance
	cli  *agent.Client
	link *vmnet.Link // the VM's network device, once the network step attached it
}

// readyStep is the last step of a start: the VM is recorded running and named in DNS.
func (s *Service) readyStep(vm *store.VM) steps.Step {
	return steps.Step{
		Name: StepReady,
		Do: func(ctx context.Context) error {
			vm.State = StateRunning
			if err := s.store.UpdateVM(ctx, vm); err != nil {
				return err
			}
			s.announce(ctx, vm)
			return nil
		},
	}
}

// bootSteps connect the VM to the network, start the VMM and wait for the guest agent:
// network, vmm, agent, ready. Undoing them ends the VMM and removes the tap. The caller holds
// the VM's lock.
func (s *Service) bootSteps(b *boot) []steps.Step {
	vm := b.vm
	return []steps.Step{
		s.networkStep(b),
		{
			Name: StepVMM,
			Do: func(ctx context.Context) error {
				b.obs.Progress.Stage("vm.start", fmt.Sprintf("starting %s (%s)", b.driver.Name(), b.accel))
				m, err := s.spawn(b, func(cfg vmm.Config) (vmm.Machine, error) { return b.driver.Start(ctx, cfg) })
				if err != nil {
					return err
				}
				vm.Runtime = s.adopt(b, m)
				vm.VMM = b.driver.Name()
				vm.Accel = string(b.accel)
				if !b.creating {
					vm.State = StateStarting
				}
				vm.LastError = ""
				return s.store.UpdateVM(ctx, vm)
			},
			Undo: func(ctx context.Context) error { return s.endMachine(b) },
		},
		{
			Name: StepAgent,
			Do: func(ctx context.Context) error {
				b.obs.Progress.Stage("vm.boot", "booting; waiting for the guest agent")
				c, err := s.waitAgent(ctx, b.in.machine, b.timeout)
				if err != nil {
					b.unreachable = ctx.Err() == nil
					// Only an undone create removes the console log with the VM: then a copy is kept.
					return s.bootFailure(vm.Name, vm.ID, b.in.machine, err, b.creating && !(b.unreachable && b.keepUnreachable))
				}
				b.useAgent(c)
				return nil
			},
			Undo: b.closeAgent,
		},
		s.provisionStep(b),
		s.fileSyncStep(b),
		s.readyStep(vm),
	}
}

// useAgent makes c the agent session of the boot's steps and of the VM's running instance.
func (b *boot) useAgent(c *agent.Client) {
	b.cli = c
	b.in.mu.Lock()
	b.in.agent = c
	b.in.mu.Unlock()
}

// closeAgent undoes useAgent's session: it ends it (a step's Undo).
func (b *boot) closeAgent(ctx context.Context) error {
	if b.cli != nil {
		b.cli.Close()
	}
	return nil
}

// prepareBoot resolves the driver, kernel and image of an existing VM.
func (s *Service) prepareBoot(ctx context.Context, vm *store.VM, obs Observer) (*boot, error) {
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	d, ok := s.drivers[vm.VMM]
	if !ok {
		return nil, fmt.Errorf("vm %q was created for the %s VMM, which this daemon does not have", vm.Name, vm.VMM)
	}
	accel := s.host.DetectAccel()
	kern, err := s.artifacts.Kernel(ctx, vm.Kernel, obs.Progress)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	img, err := s.artifacts.Image(ctx, vm.Image, obs.Progress)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return &boot{vm: vm, driver: d, accel: accel.Accel, kernel: kern, image: img, timeout: cfg.BootTimeout, consoleMax: cfg.ConsoleLogSize, obs: obs}, nil
}

// Start boots a created or stopped VM until its agent answers; a suspended one is resumed
// (see Resume), with a notice. If it fails, the VMM is ended,
// the disk kept, and the VM is left in state error with the reason. A VM that is already
// running is returned as it is, with nil timings: nothing was done.
func (s *Service) Start(ctx context.Context, ref string, obs Observer) (store.VM, []steps.Timing, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return vm, nil, err
	}
	unlock := s.lock(vm.ID)
	defer unlock()
	if vm, err = s.reload(ctx, vm, ref); err != nil {
		return vm, nil, err
	}
	switch vm.State {
	case StateRunning:
		return vm, nil, nil
	case StateSuspended:
		// Starting a suspended VM continues its saved guest: the boot it had goes on.
		obs.notice(fmt.Sprintf("vm %q is suspended: resuming it where it was (`banger vm stop %s` would discard its saved state)", vm.Name, vm.Name))
		return s.resume(ctx, vm, obs)
	case StateCreated, StateStopped, StateError:
	default:
		return vm, nil, conflictf("vm %q is %s; wait for it to finish, or kill it (`banger vm kill %s`)", vm.Name, vm.State, vm.Name)
	}
	b, err := s.prepareBoot(ctx, &vm, obs)
	if err != nil {
		return vm, nil, err
	}
	timings, err := steps.Run(ctx, s.bootSteps(b), s.hooks(vm.Name, "", ""))
	if err != nil {
		_ = os.RemoveAll(s.runtimeDir(vm.ID))
		cause := err
		var se *steps.Error
		if errors.As(err, &se) {
			cause = se.Err
		}
		state, msg := StateError, cause.Error()
		if errors.Is(err, context.Canceled) {
			state, msg = StateStopped, "start cancelled"
		}
		vm.State, vm.LastError, vm.Runtime = state, msg, nil
		if uerr := s.store.UpdateVM(context.WithoutCancel(ctx), &vm); uerr != nil {
			s.log.Error("record failed start", "vm", vm.Name, "err", uerr)
		}
		return vm, timings, fmt.Errorf("vm %q: start failed: %w", vm.Name, err)
	}
	return vm, timings, nil
}

// hooks are the step hooks of create and start: timing logs and the test hooks — failStep
// fails the named step; pauseStep writes <state dir>/test-paused-at (holding the step name)
// and then hangs before the named step, so that an end-to-end test can kill the daemon there.
// The pause ends with the operation's context (the client went away, the daemon stops), or
// after pauseLimit: it holds the VM's lock, which nothing else may then wait for in vain.
func (s *Service) hooks(name, failStep, pauseStep string) steps.Hooks {
	return steps.Hooks{
		Before: func(ctx context.Context, step string) error {
			if pauseStep != "" && pauseStep == step {
				marker := filepath.Join(s.layout.StateDir, "test-paused-at")
				if err := os.WriteFile(marker, []byte(step), 0o600); err != nil {
					return err
				}
				const pauseLimit = 10 * time.Minute
				t := time.NewTimer(pauseLimit)
				defer t.Stop()
				select {
				case <-ctx.Done():
					return fmt.Errorf("paused at step %q (test hook): %w", step, ctx.Err())
				case <-t.C:
					return fmt.Errorf("paused at step %q for more than %s (test hook)", step, pauseLimit)
				}
			}
			if failStep != "" && failStep == step {
				return fmt.Errorf("fault injected at step %q (test hook)", step)
			}
			return nil
		},
		After: func(step string, d time.Duration, err error) {
			s.log.Debug("start step", "vm", name, "step", step, "duration", d, "err", err)
		},
	}
}

// reload re-reads a VM under its lock: another operation may have changed or deleted it.
func (s *Service) reload(ctx context.Context, vm store.VM, ref string) (store.VM, error) {
	fresh, err := s.store.GetVMByID(ctx, vm.ID)
	if errors.Is(err, failure.NotFound) {
		return vm, notFoundf("vm %q no longer exists", ref)
	}
	return fresh, err
}

// bootDisks are the disks a VM boots with, in the order the guest sees them: vda the image
// (read-only), vdb the VM's own disk, vdc the kernel's module tree (read-only) when the kernel
// machineConfig is the VMM's view of the VM b boots or restores: identity, size, kernel,
// disks and network device. It makes the VM's runtime directory, checked and not just made:
// the VMM's sockets (the agent's among them) go there.
func (s *Service) machineConfig(b *boot) (vmm.Config, error) {
	vm := b.vm
	rt, err := s.layout.SecureVMRuntimeDir(vm.ID)
	if err != nil {
		return vmm.Config{}, fmt.Errorf("create runtime directory: %w", err)
	}
	netns := ""
	if s.networking() {
		netns = s.net.Info().Namespace
	}
	return vmm.Config{
		ID: vm.ID, Name: vm.Name, Dir: vm.Dir, RuntimeDir: rt,
		VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB, Accel: b.accel,
		Kernel: b.kernel.Vmlinux, Initrd: b.kernel.Initrd,
		Cmdline:        GuestCmdline(vm.Name) + netCmdline(b.link) + modulesCmdline(b),
		NIC:            nicOf(b.link),
		NetNS:          netns,
		Disks:          bootDisks(b),
		ConsoleLogSize: b.consoleMax,
		// Guest RAM a snapshot saves as a file, which clones map copy-on-write.
		ShareMemory: warmable(b.driver),
	}, nil
}

// adopt makes m, just started or restored, the VM's running instance, watched for its exit,
// and returns its record for the VM's Runtime.
func (s *Service) adopt(b *boot, m vmm.Machine) json.RawMessage {
	b.in = &instance{machine: m}
	s.setInstance(b.vm.ID, b.in)
	s.watch(b.vm.ID, b.in)
	rec, _ := json.Marshal(m.Record())
	return rec
}

// endMachine undoes adopt: it ends the VMM on purpose (not recorded as a crash).
func (s *Service) endMachine(b *boot) error {
	if b.in == nil {
		return nil
	}
	b.in.endOnPurpose()
	s.setInstance(b.vm.ID, nil)
	return b.in.machine.Kill()
}

// has modules.
func bootDisks(b *boot) []vmm.Disk {
	disks := []vmm.Disk{{Path: b.image.Rootfs, ReadOnly: true}, {Path: filepath.Join(b.vm.Dir, diskFile)}}
	if b.kernel.Modules != "" {
		disks = append(disks, vmm.Disk{Path: b.kernel.Modules, ReadOnly: true})
	}
	return disks
}

// modulesCmdline tells the guest agent which disk holds the kernel's modules (see bootDisks).
func modulesCmdline(b *boot) string {
	if b.kernel.Modules == "" {
		return ""
	}
	return " banger.modules=vdc"
}
