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
	"github.com/banger-dev/banger/internal/snapshot"
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
	// FromSnapshot restores the VM from the named snapshot (vm create --from-snapshot)
	// instead of booting it: image, kernel, VMM and size are the snapshot's, and asking for
	// others is refused.
	FromSnapshot string
	// Cold boots the VM even when a boot snapshot of its combination exists, and makes none
	// (vm run/create --cold; the config's warm_start = false does the same for every VM).
	Cold bool
	// from: the create restores from this saved state (Fork's clones), which it does not
	// look up by name.
	from *origin
	// spare: the create makes a spare (see spares.go): no file sync, left in state spare.
	spare bool
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

// Create makes a VM and boots it until its agent answers: it resolves a plan (name, size,
// VMM, image and kernel), then runs the plan's steps. On any failure everything it made is
// undone — record, files, disk, process — and the root cause is returned.
func (s *Service) Create(ctx context.Context, req CreateRequest, obs Observer) (store.VM, []steps.Timing, error) {
	return s.create(ctx, req, obs, true)
}

// create is Create; warm says whether a boot snapshot may be restored (a retry after a boot
// snapshot was refused boots cold).
func (s *Service) create(ctx context.Context, req CreateRequest, obs Observer, warm bool) (store.VM, []steps.Timing, error) {
	c, err := s.plan(ctx, req, obs, warm)
	if err != nil {
		return store.VM{}, nil, err
	}
	defer c.release() // after the steps: the VM's record (or its undo) decides if the image version stays
	defer c.done()
	if c.warmKey != "" && c.spares && !req.NoNAT {
		if sp := s.takeSpare(ctx, c.warmKey); sp != nil {
			vm, timings, err := s.claim(ctx, c, sp)
			s.wantSpares(c.warmKey, true)
			return vm, timings, err
		}
	}
	unlock := s.lock(c.vm.ID)
	defer unlock()
	timings, err := steps.Run(ctx, s.createSteps(c), s.hooks(c.name, req.FailStep, req.PauseStep))
	if err != nil {
		if c.from != nil && c.from.warm && errors.Is(err, vmm.ErrIncompatibleSnapshot) && ctx.Err() == nil {
			// The VMM changed under the boot snapshot: boot cold, and save a new one.
			obs.notice(fmt.Sprintf("the boot snapshot for this VM cannot be restored any more (%v); booting cold and saving a new one", err))
			name := c.from.info.Name
			c.done()
			s.dropBootSnapshot(name, err)
			return s.create(ctx, req, obs, false)
		}
		return store.VM{}, timings, s.createFailed(ctx, c, err)
	}
	if c.warmKey != "" {
		// The combination is used again: keep spares of it (not after the first, cold VM:
		// that may be a one-off).
		s.wantSpares(c.warmKey, false)
	}
	return c.vm, timings, nil
}

// creation is a create resolved before anything is made: the VM to record and what its
// steps need.
type creation struct {
	req CreateRequest
	obs Observer
	// name is the name the create started with (the step hooks log it); rename, non-nil only
	// for a generated name, picks another when a concurrent create took it.
	name   string
	rename func() string
	vm     store.VM
	// boot is what starting the VM needs; nil for a create without start.
	boot *boot
	// release hands back the image version the create holds; the record keeps it from then.
	release func()

	// from is the snapshot the VM is restored from (a warm start, --from-snapshot, a fork);
	// nil: it boots. releaseFrom lets go of it (see snapshot.Store.Use).
	from        *origin
	releaseFrom func()
	// bootKey, for a cold boot with warm starts on: the combination whose boot snapshot the
	// create saves once the guest settled. warmKey, for a warm start: the combination of the
	// boot snapshot it restores (a spare of it may be taken instead).
	bootKey, warmKey string
	// spares: config warm_spares asks for spares, so a warm start may take one.
	spares bool
	// discard are snapshot stagings the create made, removed when it ends (published ones
	// stay).
	discard []*snapshot.Staging
}

// done lets go of what the create held besides the image version: the snapshot it restored
// from, its unpublished stagings. It may be called more than once.
func (c *creation) done() {
	if c.releaseFrom != nil {
		c.releaseFrom()
		c.releaseFrom = nil
	}
	for _, st := range c.discard {
		_ = st.Discard()
	}
	c.discard = nil
}

// keep says whether the undo spares the record, the VM's directory and its disk: the guest
// never answered and the request asked to keep such a VM.
func (c *creation) keep() bool {
	return c.req.KeepUnreachable && c.boot != nil && c.boot.unreachable
}

// plan resolves a create: the name, the VM's size from the request, config and host, the
// VMM, the image and the kernel (fetched or built when missing). It makes nothing but the
// artifacts; on failure it holds nothing.
func (s *Service) plan(ctx context.Context, req CreateRequest, obs Observer, warm bool) (c *creation, err error) {
	cfg, err := s.config()
	if err != nil {
		return nil, failure.Wrap(failure.Invalid, err)
	}
	c = &creation{req: req, obs: obs, release: func() {}}
	if c.name, c.rename, err = s.newVMName(ctx, req.Name); err != nil {
		return nil, err
	}
	if req.FromSnapshot != "" || req.from != nil {
		id, err := newID()
		if err != nil {
			return nil, err
		}
		c.vm = store.VM{ID: id, Name: c.name, State: StateCreating, Dir: filepath.Join(s.layout.VMsDir(), id),
			AutoRemove: req.AutoRemove, NAT: !req.NoNAT}
		if err := s.planFromSnapshot(ctx, c, req, cfg); err != nil {
			return nil, err
		}
		return c, nil
	}

	// Errors before the VM is recorded name it only when the user did: a generated name
	// belongs to a VM that never existed.
	forVM := func(err error) error {
		if req.Name == "" {
			return err
		}
		return fmt.Errorf("vm %q: %w", c.name, err)
	}

	facts, err := s.host.ReadFacts()
	if err != nil {
		return nil, err
	}
	spec, err := config.ResolveVMSpec(config.Overrides{VCPU: req.VCPU, MemoryBytes: req.MemoryBytes, DiskBytes: req.DiskBytes}, cfg,
		config.HostFacts{CPUs: facts.CPUs, MemoryBytes: facts.MemoryBytes})
	if err != nil {
		return nil, failure.Wrap(failure.Invalid, err)
	}
	if obs.Spec != nil {
		obs.Spec(spec)
	}

	driver, accel, err := s.chooseDriver(ctx, cfg, obs)
	if err != nil {
		return nil, err
	}

	img, kern, release, err := s.bootArtifacts(ctx, cfg, req, obs)
	if err != nil {
		return nil, forVM(err)
	}
	c.release = release
	defer func() {
		if err != nil {
			c.release()
		}
	}()

	id, err := newID()
	if err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	c.vm = store.VM{
		ID:         id,
		Name:       c.name,
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
	if !req.NoStart {
		c.boot = &boot{vm: &c.vm, driver: driver, accel: accel, kernel: kern, image: img, timeout: cfg.BootTimeout,
			consoleMax: cfg.ConsoleLogSize, obs: obs, creating: true, keepUnreachable: req.KeepUnreachable}
		if cfg.WarmStart && !req.Cold {
			if warm {
				s.planWarm(c, spec)
				c.spares = cfg.WarmSpares > 0
			} else if warmable(driver) {
				c.bootKey = combination(img, kern, driver, accel, spec).Key()
			}
		}
	}
	return c, nil
}

// bootArtifacts gets the image and the kernel a new VM boots: the image first, as it may name
// the kernel (flag > image > config). release hands back the image version it holds; on
// failure it holds nothing.
func (s *Service) bootArtifacts(ctx context.Context, cfg config.Config, req CreateRequest, obs Observer) (img catalog.Image, kern catalog.Kernel, release func(), err error) {
	imageName := req.Image
	if imageName == "" {
		imageName = cfg.DefaultImageName
	}
	if img, err = s.artifacts.Image(ctx, imageName, obs.Progress); err != nil {
		return img, kern, nil, err
	}
	if img.OlderRecipe {
		obs.notice(fmt.Sprintf("image %s was built from an older form of its recipe (banger was upgraded since); "+
			"rebuild it with `banger image build %s` to get the changes", img.Name, img.Name))
	}
	release = s.releaser(img)
	kernelName := req.Kernel
	if kernelName == "" {
		kernelName = img.Kernel
	}
	if kernelName == "" {
		kernelName = cfg.DefaultKernel
	}
	if kern, err = s.artifacts.Kernel(ctx, kernelName, obs.Progress); err != nil {
		release()
		return img, kern, nil, err
	}
	return img, kern, release, nil
}

// releaser returns what hands back the lease the artifacts took on img for a VM being
// created (a no-op for artifacts without leases).
func (s *Service) releaser(img catalog.Image) func() {
	if r, ok := s.artifacts.(interface{ Release(catalog.Image) }); ok {
		return func() { r.Release(img) }
	}
	return func() {}
}

// newVMName checks the name a create asks for, or generates one. A generated name can still
// be taken by a concurrent create before this one records its VM; the record step then picks
// another with rename (nil for a name the user gave: that one never changes).
func (s *Service) newVMName(ctx context.Context, asked string) (name string, rename func() string, err error) {
	if asked == "" {
		rename = func() string { return s.NewName(ctx) }
		return rename(), rename, nil
	}
	if err := names.Validate(asked); err != nil {
		return "", nil, failure.Wrap(failure.Invalid, err)
	}
	if _, err := s.store.GetVM(ctx, asked); err == nil {
		return "", nil, conflictf("a VM named %q already exists; pick another name or delete it with `banger vm delete %s`", asked, asked)
	}
	return asked, nil, nil
}

// createSteps are a create's steps: record, dirs and disk, then the boot steps (or, without
// start, the record's state created). The caller holds the VM's lock.
func (s *Service) createSteps(c *creation) []steps.Step {
	vm := &c.vm
	rt := s.runtimeDir(vm.ID)
	made := []steps.Step{
		{
			Name: StepRecord,
			Do:   func(ctx context.Context) error { return s.createRecord(ctx, vm, c.rename) },
			Undo: func(ctx context.Context) error {
				if c.keep() {
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
				return s.ssh.EnsureHostKey(sshVM(vm))
			},
			Undo: func(ctx context.Context) error {
				if c.keep() {
					return os.RemoveAll(rt)
				}
				s.forgetSSH(ctx, *vm)
				return errors.Join(os.RemoveAll(vm.Dir), os.RemoveAll(rt))
			},
		},
	}
	if c.from != nil {
		return append(made, s.cloneSteps(c)...)
	}
	list := append(made, []steps.Step{
		{
			Name: StepDisk,
			Do: func(ctx context.Context) error {
				c.obs.Progress.Stage("vm.disk", fmt.Sprintf("creating %s disk", bytesize.Format(vm.DiskBytes)))
				seed, err := s.ssh.Seed(sshVM(vm))
				if err != nil {
					return err
				}
				if seed != "" {
					defer os.RemoveAll(seed)
				}
				if err := disk.CreateExt4From(ctx, filepath.Join(vm.Dir, diskFile), vm.DiskBytes, "banger-disk", seed); err != nil {
					return err
				}
				if c.boot != nil {
					c.boot.seeded = seed != ""
				}
				return nil
			},
		},
	}...)
	if c.boot == nil {
		return append(list, steps.Step{
			Name: "created",
			Do: func(ctx context.Context) error {
				vm.State = StateCreated
				return s.store.UpdateVM(ctx, vm)
			},
		})
	}
	boot := s.bootSteps(c.boot)
	if c.bootKey != "" {
		// The boot snapshot is of the settled guest before the user's files reach it.
		for i, st := range boot {
			if st.Name == StepFiles {
				boot = append(boot[:i:i], append(s.bootSnapshotSteps(c), boot[i:]...)...)
				break
			}
		}
	}
	return append(list, boot...)
}

// createFailed is the error of a create whose steps failed (and were undone). A VM kept
// because its guest never answered is recorded as stopped, to be looked into.
func (s *Service) createFailed(ctx context.Context, c *creation, err error) error {
	vm := &c.vm
	if c.keep() {
		// The undo ended the VMM and took the VM off the network; what is left is a stopped
		// VM to look into. It is no longer ephemeral: nothing deletes it behind the user's back.
		cause := err
		var se *steps.Error
		if errors.As(err, &se) {
			cause = se.Err
		}
		vm.State, vm.LastError, vm.Runtime, vm.AutoRemove = StateStopped, cause.Error(), nil, false
		if uerr := s.store.UpdateVM(context.WithoutCancel(ctx), vm); uerr != nil {
			return errors.Join(fmt.Errorf("vm %q: %w", vm.Name, err), uerr)
		}
		return fmt.Errorf("vm %q never became reachable: %w\nthe VM is kept, stopped, to be looked into: "+
			"`banger vm logs %s` shows its console, `banger vm start %s` tries again, `banger vm delete %s` removes it",
			vm.Name, err, vm.Name, vm.Name, vm.Name)
	}
	var se *steps.Error
	if errors.As(err, &se) {
		if failure.Classified(se.Err) {
			return err
		}
		if errors.Is(err, context.Canceled) {
			// The kind stays context.Canceled so that the API answers "canceled", not "failed".
			return failure.New(context.Canceled, "vm %q: creation cancelled at step %s; everything it made was removed", vm.Name, se.Step)
		}
		return fmt.Errorf("vm %q: start failed at step %s: %w", vm.Name, se.Step, err)
	}
	return err
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
func (s *Service) waitAgent(ctx context.Context, m vmm.Machine, timeout time.Duration) (*agent.Client, error) {
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
			// The handshake is the agent's answer: the first request is the caller's (a
			// Health round trip more costs a restored guest under emulation ~0.4 s).
			c, err := agent.Connect(ctx, conn)
			if err == nil {
				return c, nil
			}
			lastErr = err
		} else {
			lastErr = err
		}
		if ctx.Err() != nil {
			cause := context.Cause(ctx)
			if errors.Is(cause, context.Canceled) && !errors.Is(cause, errVMMExited) {
				return nil, cause
			}
			s.log.Debug("agent wait ended", "last_error", lastErr)
			return nil, cause
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
