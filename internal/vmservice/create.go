package vmservice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/catalog"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/names"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// CreateRequest asks for a new VM. Zero values mean "resolve it": the config's defaults, host
// heuristics, a generated name.
type CreateRequest struct {
	Name        string
	Image       string
	Kernel      string
	VCPU        *int
	MemoryBytes *int64
	DiskBytes   *int64
	AutoRemove  bool
	// NoStart only creates the VM: record, files and disk, in state created.
	NoStart bool
	// NoNAT keeps the VM's traffic on the bridge: no masquerading out of the host.
	NoNAT bool
	// KeepUnreachable keeps a VM whose guest never answered (the VMM exited or boot_timeout
	// passed): stopped, with its disk and console log, so that it can be looked at; any other
	// failure still undoes everything (vm run asks for it, even with --rm).
	KeepUnreachable bool
	// FailStep makes the named start step fail; PauseStep hangs before it (end-to-end tests
	// of cleanup and crash recovery; see hooks).
	FailStep, PauseStep string
}

// Observer receives what a create has to say while it runs. Any field may be nil.
type Observer struct {
	Progress progress.Func
	Spec     func(config.VMSpec)
	Notice   func(string)
}

func (o Observer) notice(msg string) {
	if o.Notice != nil {
		o.Notice(msg)
	}
}

// Start steps, in order. Their names are stable: tests inject faults by name and the
// benchmark reports their timings.
const (
	StepRecord = "record"
	StepDirs   = "dirs"
	StepDisk   = "disk"
	StepVMM    = "vmm"
	StepAgent  = "agent"
	StepReady  = "ready"
)

// StepNames lists the start steps in order.
var StepNames = []string{StepRecord, StepDirs, StepDisk, StepNetwork, StepVMM, StepAgent, StepProvision, StepFiles, StepReady}

// Disk layout inside a VM's directory.
const diskFile = "disk.ext4"

func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// runtimeDir holds a VM's sockets, next to the daemon's socket (short paths).
func (s *Service) runtimeDir(id string) string {
	return filepath.Join(s.layout.VMRuntimeDir(), id)
}

// Create makes a VM and boots it until its agent answers. On any failure everything it made
// is undone — record, files, disk, process — and the root cause is returned.
func (s *Service) Create(ctx context.Context, req CreateRequest, obs Observer) (store.VM, []steps.Timing, error) {
	cfg, err := s.config()
	if err != nil {
		return store.VM{}, nil, failure.Wrap(failure.Invalid, err)
	}

	// A generated name can still be taken by a concurrent create before this one records
	// its VM; the record step then picks another (rename). A name the user gave never changes.
	name := req.Name
	var rename func() string
	if name == "" {
		rename = func() string { return s.NewName(ctx) }
		name = rename()
	} else if err := names.Validate(name); err != nil {
		return store.VM{}, nil, failure.Wrap(failure.Invalid, err)
	} else if _, err := s.store.GetVM(ctx, name); err == nil {
		return store.VM{}, nil, conflictf("a VM named %q already exists; pick another name or delete it with `banger vm delete %s`", name, name)
	}

	// Errors before the VM is recorded name it only when the user did: a generated name
	// belongs to a VM that never existed.
	forVM := func(err error) error {
		if req.Name == "" {
			return err
		}
		return fmt.Errorf("vm %q: %w", name, err)
	}

	facts, err := s.host.ReadFacts()
	if err != nil {
		return store.VM{}, nil, err
	}
	spec, err := config.ResolveVMSpec(config.Overrides{VCPU: req.VCPU, MemoryBytes: req.MemoryBytes, DiskBytes: req.DiskBytes}, cfg,
		config.HostFacts{CPUs: facts.CPUs, MemoryBytes: facts.MemoryBytes})
	if err != nil {
		return store.VM{}, nil, failure.Wrap(failure.Invalid, err)
	}
	if obs.Spec != nil {
		obs.Spec(spec)
	}

	driver, accel, err := s.chooseDriver(ctx, cfg, obs)
	if err != nil {
		return store.VM{}, nil, err
	}

	// The image first: it may name the kernel its VMs boot (flag > image > config).
	imageName := req.Image
	if imageName == "" {
		imageName = cfg.DefaultImageName
	}
	img, err := s.artifacts.Image(ctx, imageName, obs.Progress)
	if err != nil {
		return store.VM{}, nil, forVM(err)
	}
	if img.OlderRecipe {
		obs.notice(fmt.Sprintf("image %s was built from an older form of its recipe (banger was upgraded since); "+
			"rebuild it with `banger image build %s` to get the changes", img.Name, img.Name))
	}
	if r, ok := s.artifacts.(interface{ Release(catalog.Image) }); ok {
		defer r.Release(img) // from here on the VM's record (or its undo) decides if the version stays
	}
	kernelName := req.Kernel
	if kernelName == "" {
		kernelName = img.Kernel
	}
	if kernelName == "" {
		kernelName = cfg.DefaultKernel
	}
	kern, err := s.artifacts.Kernel(ctx, kernelName, obs.Progress)
	if err != nil {
		return store.VM{}, nil, forVM(err)
	}

	id, err := newID()
	if err != nil {
		return store.VM{}, nil, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return store.VM{}, nil, err
	}
	vm := store.VM{
		ID:         id,
		Name:       name,
		State:      StateCreating,
		Image:      img.Ref(), // name@version: the VM keeps booting this version
		Kernel:     kern.Name,
		VMM:        driver.Name(),
		Accel:      string(accel),
		VCPU:       spec.VCPU.Value,
		MemoryMiB:  spec.MemoryMiB.Value,
		DiskBytes:  spec.DiskBytes.Value,
		Dir:        filepath.Join(s.layout.VMsDir(), id),
		AutoRemove: req.AutoRemove,
		Spec:       specJSON,
		NAT:        !req.NoNAT,
	}
	unlock := s.lock(id)
	defer unlock()

	rt := s.runtimeDir(id)
	diskPath := filepath.Join(vm.Dir, diskFile)
	var b *boot
	// keep says whether the undo spares the record, the VM's directory and its disk.
	keep := func() bool { return req.KeepUnreachable && b != nil && b.unreachable }
	list := []steps.Step{
		{
			Name: StepRecord,
			Do:   func(ctx context.Context) error { return s.createRecord(ctx, &vm, rename) },
			Undo: func(ctx context.Context) error {
				if keep() {
					return nil
				}
				return s.store.DeleteVM(ctx, vm.ID)
			},
		},
		{
			Name: StepDirs,
			Do: func(ctx context.Context) error {
				for _, d := range []string{vm.Dir, rt} {
					if err := os.MkdirAll(d, 0o700); err != nil {
						return fmt.Errorf("create VM directory: %w", err)
					}
				}
				// The host key exists before the guest does: known_hosts is right from the start.
				return s.ensureHostKey(&vm)
			},
			Undo: func(ctx context.Context) error {
				if keep() {
					return os.RemoveAll(rt)
				}
				s.forgetSSH(ctx, vm)
				return errors.Join(os.RemoveAll(vm.Dir), os.RemoveAll(rt))
			},
		},
		{
			Name: StepDisk,
			Do: func(ctx context.Context) error {
				obs.Progress.Stage("vm.disk", fmt.Sprintf("creating %s disk", bytesize.Format(vm.DiskBytes)))
				seed, err := s.diskSeed(&vm)
				if err != nil {
					return err
				}
				if seed != "" {
					defer os.RemoveAll(seed)
				}
				if err := disk.CreateExt4From(ctx, diskPath, vm.DiskBytes, "banger-disk", seed); err != nil {
					return err
				}
				if b != nil {
					b.seeded = seed != ""
				}
				return nil
			},
		},
	}
	if req.NoStart {
		list = append(list, steps.Step{
			Name: "created",
			Do: func(ctx context.Context) error {
				vm.State = StateCreated
				return s.store.UpdateVM(ctx, &vm)
			},
		})
	} else {
		b = &boot{vm: &vm, driver: driver, accel: accel, kernel: kern, image: img, timeout: cfg.BootTimeout, consoleMax: cfg.ConsoleLogSize, obs: obs, creating: true, keepUnreachable: req.KeepUnreachable}
		list = append(list, s.bootSteps(b)...)
	}
	hooks := s.hooks(name, req.FailStep, req.PauseStep)
	timings, err := steps.Run(ctx, list, hooks)
	if err != nil && keep() {
		// The undo ended the VMM and took the VM off the network; what is left is a stopped
		// VM to look into. It is no longer ephemeral: nothing deletes it behind the user's back.
		cause := err
		var se *steps.Error
		if errors.As(err, &se) {
			cause = se.Err
		}
		vm.State, vm.LastError, vm.Runtime, vm.AutoRemove = StateStopped, cause.Error(), nil, false
		if uerr := s.store.UpdateVM(context.WithoutCancel(ctx), &vm); uerr != nil {
			return store.VM{}, timings, errors.Join(fmt.Errorf("vm %q: %w", vm.Name, err), uerr)
		}
		return store.VM{}, timings, fmt.Errorf("vm %q never became reachable: %w\nthe VM is kept, stopped, to be looked into: "+
			"`banger vm logs %s` shows its console, `banger vm start %s` tries again, `banger vm delete %s` removes it",
			vm.Name, err, vm.Name, vm.Name, vm.Name)
	}
	if err != nil {
		var se *steps.Error
		if errors.As(err, &se) {
			if failure.Classified(se.Err) {
				return store.VM{}, timings, err
			}
			if errors.Is(err, context.Canceled) {
				return store.VM{}, timings, fmt.Errorf("vm %q: creation cancelled at step %s; everything it made was removed", vm.Name, se.Step)
			}
			return store.VM{}, timings, fmt.Errorf("vm %q: start failed at step %s: %w", vm.Name, se.Step, err)
		}
		return store.VM{}, timings, err
	}
	return vm, timings, nil
}

// GuestCmdline is the kernel command line for banger's initramfs agent. vda is the image,
// vdb the VM's disk (the order the disks are attached in). The benchmark boots bare VMMs with
// it too.
func GuestCmdline(name string) string {
	return "banger.lower=vda banger.upper=vdb systemd.hostname=" + name + " panic=-1 quiet loglevel=4"
}

// bootFailure explains why a guest did not come up: the VMM's exit or the boot timeout, with
// the end of the guest console. With copyLog it keeps a copy of the console log in the state
// dir's logs, for when the undo removes the VM's own directory.
func (s *Service) bootFailure(name, id string, m vmm.Machine, cause error, copyLog bool) error {
	rec := m.Record()
	tail := vmm.LogTail(rec.Console, 8)
	if !copyLog {
		return fmt.Errorf("%w; guest console ends with: %s", cause, tail)
	}
	kept := filepath.Join(s.layout.StateDir, "logs", "failed-"+name+"-"+id+".console.log")
	if b, err := os.ReadFile(rec.Console); err == nil {
		if os.MkdirAll(filepath.Dir(kept), 0o700) == nil && os.WriteFile(kept, b, 0o600) == nil {
			return fmt.Errorf("%w; guest console ends with: %s (full console log kept at %s)", cause, tail, kept)
		}
	}
	return fmt.Errorf("%w; guest console ends with: %s", cause, tail)
}

// errVMMExited is the cause when the VMM process ends while banger waits for the guest.
var errVMMExited = errors.New("the VMM process exited before the guest agent answered")

// waitAgent connects to the guest agent, retrying until it answers, the VMM exits or the
// boot timeout passes.
func (s *Service) waitAgent(ctx context.Context, m vmm.Machine, timeout time.Duration) (*agent.Client, agent.Health, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("the guest agent did not answer within %s (boot_timeout)", timeout))
	defer cancel()
	ctx, cancelExit := context.WithCancelCause(ctx)
	defer cancelExit(nil)
	go func() {
		select {
		case <-m.Done():
			cancelExit(errVMMExited)
		case <-ctx.Done():
		}
	}()
	var lastErr error
	for {
		conn, err := m.DialAgent(ctx)
		if err == nil {
			c, err := agent.Connect(ctx, conn)
			if err == nil {
				h, err := c.Health(ctx)
				if err == nil {
					return c, h, nil
				}
				c.Close()
				lastErr = err
			} else {
				lastErr = err
			}
		} else {
			lastErr = err
		}
		if ctx.Err() != nil {
			cause := context.Cause(ctx)
			if errors.Is(cause, context.Canceled) && !errors.Is(cause, errVMMExited) {
				return nil, agent.Health{}, cause
			}
			s.log.Debug("agent wait ended", "last_error", lastErr)
			return nil, agent.Health{}, cause
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
