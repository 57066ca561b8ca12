package vmservice

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/catalog"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/termtext"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmnet"
	"github.com/banger-dev/banger/internal/wire"
)

// Warm starts.
//
// A new VM's combination — image version, kernel, agent build, VMM, accelerator, vCPUs,
// memory, disk size — decides what its guest looks like once booted: two VMs with equal
// combinations boot into the same state. So the first VM of a combination boots cold, and
// once its guest has settled (systemd finished starting units; before the user's files or
// workspace reach it) banger saves it as the combination's boot snapshot, and goes on with
// it. Later VMs of the combination are clones of that snapshot (see clone.go): a restore
// instead of a boot. A boot snapshot that cannot be restored any more (the VMM was upgraded)
// is dropped, with a notice, and the VM boots cold and saves a new one.

// combination is what a new VM of this plan boots into.
func combination(img catalog.Image, kern catalog.Kernel, d vmm.Driver, accel host.Accel, spec config.VMSpec) snapshot.Combination {
	kernelID := kern.Name
	if fi, err := os.Stat(kern.Vmlinux); err == nil {
		kernelID = fmt.Sprintf("%s:%d:%d", kern.Name, fi.Size(), fi.ModTime().UnixNano())
	}
	return snapshot.Combination{
		Image: img.Ref(), Kernel: kernelID, Agent: agentBuild(kern), VMM: d.Name(), Accel: string(accel),
		VCPU: spec.VCPU.Value, MemoryMiB: spec.MemoryMiB.Value, DiskBytes: spec.DiskBytes.Value,
	}
}

// agentBuild names the agent a kernel's VMs boot with: the boot initramfs's name holds the
// hash of the agent binary in it.
func agentBuild(kern catalog.Kernel) string { return filepath.Base(kern.Initrd) }

// warmable says whether a driver can make and restore snapshots: only its VMs have warm
// starts, forks and snapshots.
func warmable(d vmm.Driver) bool {
	_, ok := d.(vmm.Restorer)
	return ok
}

// planWarm looks for the boot snapshot of c's combination. Found, c restores from it;
// otherwise c boots cold and saves one (c.bootKey).
func (s *Service) planWarm(c *creation, spec config.VMSpec) {
	b := c.boot
	if !warmable(b.driver) {
		return
	}
	combo := combination(b.image, b.kernel, b.driver, b.accel, spec)
	key := combo.Key()
	info, release, err := s.snaps.Use(snapshot.BootName(key))
	if err != nil {
		if failure.Of(err) != failure.NotFound {
			s.log.Warn("a boot snapshot cannot be read; booting cold", "name", snapshot.BootName(key), "err", err)
		}
		c.bootKey = key
		return
	}
	m, err := vmm.ReadSnapshot(info.Machine())
	if err != nil {
		release()
		s.log.Warn("a boot snapshot's machine cannot be read; booting cold", "name", info.Name, "err", err)
		c.bootKey = key
		return
	}
	c.from = &origin{info: info, machine: m, warm: true}
	c.releaseFrom = release
	c.warmKey = key
}

// planFromSnapshot makes c restore from the snapshot req names: the VM is what the snapshot
// was (image version, kernel, VMM, size), and a request for anything else is refused, as is
// a snapshot this daemon cannot restore (another VMM, accelerator or agent build).
func (s *Service) planFromSnapshot(ctx context.Context, c *creation, req CreateRequest, cfg config.Config) error {
	if req.Image != "" || req.Kernel != "" || req.VCPU != nil || req.MemoryBytes != nil || req.DiskBytes != nil {
		return failure.New(failure.Invalid, "a VM made from a snapshot has the snapshot's image, kernel and size; leave out --image, --kernel, --vcpu, --memory and --disk")
	}
	if req.Cold || req.NoStart {
		return failure.New(failure.Invalid, "a VM made from a snapshot starts from it: --cold and --no-start do not apply")
	}
	var info snapshot.Info
	var m vmm.Snapshot
	release := func() {}
	if req.from != nil {
		info, m = req.from.info, req.from.machine
	} else {
		var err error
		if info, release, err = s.snaps.Use(req.FromSnapshot); err != nil {
			return err
		}
		if m, err = vmm.ReadSnapshot(info.Machine()); err != nil {
			release()
			return fmt.Errorf("snapshot %s cannot be read: %w", info.Name, err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	d, found := s.drivers[info.VMM]
	if !found || !warmable(d) {
		return conflictf("snapshot %s was made under the %s VMM, which this daemon cannot restore", info.Name, info.VMM)
	}
	accel := s.host.DetectAccel().Accel
	if string(accel) != info.Accel {
		return conflictf("snapshot %s was made under %s and this host runs VMs under %s: a guest cannot move between them", info.Name, info.Accel, accel)
	}
	img, err := s.artifacts.Image(ctx, info.Image, c.obs.Progress)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", info.Name, err)
	}
	c.release = s.releaser(img)
	kern, err := s.artifacts.Kernel(ctx, info.Kernel, c.obs.Progress)
	if err != nil {
		c.release()
		return fmt.Errorf("snapshot %s: %w", info.Name, err)
	}
	if agentBuild(kern) != info.Agent {
		c.release()
		return failure.Wrap(failure.Conflict, fmt.Errorf("snapshot %s was taken of a guest running another build of banger's agent (%s, now %s): take a new snapshot: %w",
			info.Name, info.Agent, agentBuild(kern), vmm.ErrIncompatibleSnapshot))
	}
	c.vm.Image, c.vm.Kernel, c.vm.VMM, c.vm.Accel = info.Image, info.Kernel, info.VMM, info.Accel
	c.vm.VCPU, c.vm.MemoryMiB, c.vm.DiskBytes, c.vm.Spec = info.VCPU, info.MemoryMiB, info.DiskBytes, info.Spec
	c.boot = &boot{vm: &c.vm, driver: d, accel: accel, kernel: kern, image: img, timeout: cfg.BootTimeout,
		consoleMax: cfg.ConsoleLogSize, obs: c.obs, creating: true}
	c.from = &origin{info: info, machine: m}
	c.releaseFrom = release
	ok = true
	return nil
}

// settleTimeout bounds the wait for a cold-booted guest to settle before its boot snapshot.
const settleTimeout = 2 * time.Minute

// bootSnapshotSteps save a cold-booted VM's settled guest as its combination's boot snapshot
// and let it go on: settle, capture, publish. They never fail the create: a boot snapshot
// that cannot be made is a warning, and the next VM boots cold again.
func (s *Service) bootSnapshotSteps(c *creation) []steps.Step {
	b, vm := c.boot, &c.vm
	var st *snapshot.Staging
	failed := false
	warn := func(what string, err error) {
		failed = true
		s.log.Warn("boot snapshot not made", "vm", vm.Name, "at", what, "err", err)
		c.obs.notice(fmt.Sprintf("no boot snapshot was saved for warm starts (%s: %v); the next VM boots cold too", what, err))
	}
	return []steps.Step{
		{
			Name: StepSettle,
			Do: func(ctx context.Context) error {
				b.obs.Progress.Stage("vm.snapshot", "waiting for the guest to settle, for a boot snapshot")
				if err := settle(ctx, b.cli, s.log.Warn); err != nil {
					warn("settle", err)
				}
				return ctx.Err()
			},
		},
		{
			Name: StepCapture,
			Do: func(ctx context.Context) error {
				if failed {
					return nil
				}
				b.obs.Progress.Stage("vm.snapshot", "saving the booted guest as a boot snapshot")
				var err error
				if st, err = s.snaps.Stage(snapshot.BootName(c.bootKey)); err != nil {
					warn("capture", err)
					return nil
				}
				c.discard = append(c.discard, st)
				// The create's session is idle here: capture ends it, and the create
				// connects anew for the steps after it.
				if err := s.capture(ctx, *vm, b.in, st); err != nil {
					warn("capture", err)
				}
				// Through the instance's session: the capture's clock reset connects too.
				cl, err := s.sessionWithin(ctx, b.in, b.timeout, "boot_timeout")
				if err != nil {
					return fmt.Errorf("the guest's agent after its boot snapshot: %w", err)
				}
				b.useAgent(cl)
				return nil
			},
		},
		{
			Name: StepPublish,
			Do: func(ctx context.Context) error {
				if failed {
					return nil
				}
				m := metaOf(*vm, snapshot.BootName(c.bootKey), snapshot.Boot, agentBuild(b.kernel), macOf(b.link))
				m.Key = c.bootKey
				if _, err := st.Publish(m); err != nil && failure.Of(err) != failure.Conflict {
					warn("publish", err) // a conflict: a concurrent create saved the same one
				} else if err == nil {
					s.log.Info("saved a boot snapshot", "name", m.Name, "from", vm.Name)
				}
				return nil
			},
		},
	}
}

// macOf is the MAC of link, "" for none.
func macOf(link *vmnet.Link) string {
	if link == nil {
		return ""
	}
	return link.MAC
}

// udevSettleTimeout bounds the wait for the guest's udev to handle the boot's device events.
const udevSettleTimeout = time.Minute

// settle waits until the guest's systemd has started what it starts at boot (`systemctl
// is-system-running --wait`: running, or degraded when a unit failed), then until its udev has
// handled the device events of the boot (`udevadm settle`), within settleTimeout. systemd does
// not wait for udev: when it says running, udev may still be loading the modules the devices
// and CPU ask for (input, crypto, kvm), and a guest saved then loads them again after every
// restore, seconds of guest work under emulation in every warm start and every clone of a VM
// forked soon after its start. A udev that does not settle in udevSettleTimeout is a notice to
// log, not a failure: the snapshot still works. A guest without systemd, or whose init is not
// systemd ("offline"), has nothing to wait for.
func settle(ctx context.Context, c *agent.Client, logf func(msg string, args ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	var out bytes.Buffer
	exit, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", "command -v systemctl >/dev/null || exit 0; systemctl is-system-running --wait"}},
		wire.CallerIO{Stdout: &out, Stderr: &out})
	if err != nil {
		return fmt.Errorf("ask the guest's systemd: %w", err)
	}
	state := strings.TrimSpace(out.String())
	if exit.Code != 0 && state != "degraded" && state != "offline" {
		return fmt.Errorf("the guest's systemd says %q (exit %d)", termtext.Truncate(termtext.CleanLine(state), 200), exit.Code)
	}
	if state == "offline" {
		return nil
	}
	out.Reset()
	wait := strconv.Itoa(int(udevSettleTimeout / time.Second))
	exit, err = c.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", "command -v udevadm >/dev/null || exit 0; exec udevadm settle --timeout=" + wait}},
		wire.CallerIO{Stdout: &out, Stderr: &out})
	if err != nil {
		return fmt.Errorf("ask the guest's udev: %w", err)
	}
	if exit.Code != 0 {
		logf("the guest's udev did not settle; saving the boot snapshot anyway (its restores finish the device events)",
			"exit", exit.Code, "output", termtext.Truncate(termtext.CleanLine(out.String()), 200))
	}
	return nil
}

// dropBootSnapshot removes a boot snapshot that could not be restored, so the cold boot
// that follows saves a new one.
func (s *Service) dropBootSnapshot(name string, cause error) {
	if err := s.snaps.Remove(name); err != nil && !errors.Is(err, failure.NotFound) {
		s.log.Error("remove a boot snapshot that cannot be restored", "name", name, "err", err)
		return
	}
	s.log.Info("dropped a boot snapshot that cannot be restored", "name", name, "err", cause)
	s.SparesOf(context.Background(), []string{name})
}
