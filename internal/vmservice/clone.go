package vmservice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmnet"
)

// Clones: VMs made from snapshots.
//
// A clone is a new VM (record, directory, address, MAC, tap, host key of its own) whose VMM
// is restored from a snapshot instead of booted, with a copy of the snapshot's disk. Its guest
// wakes up believing it is the machine that was saved, so before the VM is ready — before
// anything runs in it for the user — its agent is told to become a new machine (renewIdentity):
// hostname, MAC, address and routes, machine-id, ssh host key, the kernel's RNG reseeded
// from host entropy, the host's clock. A clone whose guest cannot do that is undone: two
// machines with one identity are worse than none.

// origin is the snapshot a create restores from.
type origin struct {
	info    snapshot.Info
	machine vmm.Snapshot // what the VMM saved, read from info.Machine()
	// warm: a boot snapshot found for a warm start (a refusal falls back to a cold boot).
	warm bool
}

// cloneSteps are the steps that make c's VM from c.from, after record and dirs: the disk
// copied, network, restore, agent, renew, file sync, ready.
func (s *Service) cloneSteps(c *creation) []steps.Step {
	b, vm, from := c.boot, &c.vm, c.from
	list := []steps.Step{
		{
			Name: StepClone,
			Do: func(ctx context.Context) error {
				c.obs.Progress.Stage("vm.disk", "copying the disk of snapshot "+from.info.Name)
				_, err := disk.Clone(ctx, from.info.Disk(), filepath.Join(vm.Dir, diskFile))
				return err
			},
		},
		s.networkStep(b),
		{
			Name: StepRestore,
			Do: func(ctx context.Context) error {
				b.obs.Progress.Stage("vm.restore", fmt.Sprintf("restoring snapshot %s under %s (%s)", from.info.Name, b.driver.Name(), b.accel))
				restorer, ok := b.driver.(vmm.Restorer)
				if !ok {
					return conflictf("the %s VMM cannot restore snapshots", b.driver.Name())
				}
				m, err := s.spawn(b, func(cfg vmm.Config) (vmm.Machine, error) { return restorer.Restore(ctx, cfg, from.machine) })
				if err != nil {
					return err
				}
				vm.Runtime = s.adopt(b, m)
				return s.store.UpdateVM(ctx, vm)
			},
			Undo: func(ctx context.Context) error { return s.endMachine(b) },
		},
		s.restoredAgentStep(b, "vm.restore"),
		{
			Name: StepRenew,
			Do: func(ctx context.Context) error {
				b.obs.Progress.Stage("vm.restore", "making the guest a machine of its own")
				return s.renewIdentity(ctx, vm, b, from.info.Meta)
			},
		},
	}
	if c.req.spare {
		// A spare gets no user files and no name in DNS until a create claims it.
		return append(list, steps.Step{
			Name: StepReady,
			Do: func(ctx context.Context) error {
				vm.State = StateSpare
				return s.store.UpdateVM(ctx, vm)
			},
		})
	}
	return append(list, s.fileSyncStep(b), s.readyStep(vm))
}

// renewTimeout bounds a clone's renewal: writing a few files, netlink, reloading sshd.
const renewTimeout = 30 * time.Second

// renewIdentity makes a clone's guest a machine of its own (see the package comment above):
// the identity it was saved with (from) is replaced by vm's.
func (s *Service) renewIdentity(ctx context.Context, vm *store.VM, b *boot, from snapshot.Meta) error {
	r, err := s.renewal(vm, b, from)
	if err != nil {
		return err
	}
	if err := s.renewGuest(ctx, vm.Name, b.cli, r); err != nil {
		return fmt.Errorf("the guest could not take its new identity (so it would share the snapshot's): %w", err)
	}
	return nil
}

// renewGuest has the agent cli of the VM called name apply r, within renewTimeout, and logs
// the agent's account of it.
func (s *Service) renewGuest(ctx context.Context, name string, cli *agent.Client, r agent.Renewal) error {
	ctx, cancel := context.WithTimeout(ctx, renewTimeout)
	defer cancel()
	report, err := cli.Renew(ctx, r)
	if err != nil {
		return err
	}
	s.log.Debug("renewed", "vm", name, "guest", report)
	return nil
}

// freshRenewal is what every renewal of a guest that is to be called name carries: the host's
// clock, fresh entropy and the name.
func freshRenewal(name string) agent.Renewal {
	r := agent.Renewal{Clock: time.Now(), Entropy: make([]byte, agent.MaxEntropy), Hostname: name}
	_, _ = rand.Read(r.Entropy) // crypto/rand.Read never fails
	return r
}

// linkIdentity is the network identity of link for a guest whose interface has oldMAC.
func linkIdentity(link *vmnet.Link, oldMAC string) *agent.NetworkIdentity {
	n := &agent.NetworkIdentity{OldMAC: oldMAC, MAC: link.MAC, Address: link.Address, Gateway: link.Gateway}
	if link.DNS != "" {
		n.DNS = []string{link.DNS}
	}
	return n
}

// renewal is the new identity of vm, a clone of a guest saved as from.
func (s *Service) renewal(vm *store.VM, b *boot, from snapshot.Meta) (agent.Renewal, error) {
	r := freshRenewal(vm.Name)
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	r.MachineID = hex.EncodeToString(id)
	if b.link != nil {
		if from.MAC == "" {
			return r, conflictf("snapshot %s was taken of a VM without a network device; its clones cannot have one", from.Name)
		}
		r.Network = linkIdentity(b.link, from.MAC)
	}
	// The host key was made on the host and pinned in known_hosts (dirs step) before the
	// clone could answer anyone.
	files, err := s.ssh.GuestFiles(sshVM(vm))
	if err != nil {
		return r, fmt.Errorf("the clone's ssh host key: %w", err)
	}
	for _, f := range files {
		if strings.HasPrefix(f.Path, "/etc/ssh/ssh_host_") {
			r.HostKeys = append(r.HostKeys, f)
		}
	}
	return r, r.Validate()
}

// capture saves vm, which runs as in, into st: the guest's state and memory (the VMM's
// snapshot) and a copy of its disk, both taken while its vCPUs are stopped, so that they agree.
// What the VMM can copy while the guest runs (vmm.Precopier: a restored machine's memory
// file) is copied before the pause, which then lasts for the rest only. The guest runs again
// when capture returns, whether it succeeded or not.
//
// An agent session with nothing open on it ends first (the next request connects anew), so
// that the saved guest is one whose host went away: its clones' agents answer their first
// connection at once. A session carrying exec sessions or forwarded connections is left
// alone — they go on — and clones then wait out one short attempt (connectAnew).
func (s *Service) capture(ctx context.Context, vm store.VM, in *instance, st *snapshot.Staging) (err error) {
	m := in.machine
	in.mu.Lock()
	if in.agent != nil && in.agent.Streams() == 0 {
		in.closeSessionLocked()
	}
	in.mu.Unlock()
	snapper, ok := m.(vmm.Snapshotter)
	pauser, pok := m.(vmm.Pauser)
	if !ok || !pok {
		return conflictf("vm %q runs under %s, which cannot save a running guest", vm.Name, vm.VMM)
	}
	// What can be copied while the guest runs is, so that its pause is shorter.
	if pre, ok := m.(vmm.Precopier); ok {
		release, err := pre.Precopy(ctx, st.Machine())
		if err != nil {
			return fmt.Errorf("save the guest: %w", err)
		}
		defer release()
	}
	if err := pauser.Pause(ctx); err != nil {
		return fmt.Errorf("pause the guest: %w", err)
	}
	paused := time.Now()
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rerr := pauser.Resume(rctx); rerr != nil {
			err = errors.Join(err, fmt.Errorf("continue the guest after saving it: %w", rerr))
			return
		}
		s.log.Debug("saved a guest", "vm", vm.Name, "paused", time.Since(paused))
		go s.resetClock(vm, in)
	}()
	if _, err := snapper.Snapshot(ctx, st.Machine()); err != nil {
		return fmt.Errorf("save the guest: %w", err)
	}
	if _, err := disk.Clone(ctx, filepath.Join(vm.Dir, diskFile), st.Disk()); err != nil {
		return fmt.Errorf("copy the guest's disk: %w", err)
	}
	return nil
}

// resetClock sets the clock of vm, which runs as in, to the host's. A guest's clock stands
// still while it is paused, so a capture leaves it behind by the pause (0.2 s and more under
// emulation), and every capture more: the clones of its next snapshot would inherit that lag,
// and their agents would have to step their clocks, which the restore's catch-up (the QEMU
// driver moves a restored guest's clocks on by the time since its save) otherwise spares
// them. It runs after the capture, beside whatever follows it (a fork's clones), and only
// logs a failure: the VM runs on either way.
func (s *Service) resetClock(vm store.VM, in *instance) {
	ctx, cancel := context.WithTimeout(context.Background(), sessionTimeout)
	defer cancel()
	c, err := s.session(ctx, in)
	if err == nil {
		_, err = c.Renew(ctx, agent.Renewal{Clock: time.Now()})
	}
	if err != nil {
		s.log.Debug("set the clock after a capture", "vm", vm.Name, "err", err)
	}
}

// metaOf describes a snapshot of vm (which boots kernel initrd agentBuild, with MAC mac).
func metaOf(vm store.VM, name string, kind snapshot.Kind, agentBuild, mac string) snapshot.Meta {
	return snapshot.Meta{
		Name: name, Kind: kind, Created: time.Now().UTC(), From: vm.Name,
		Image: vm.Image, Kernel: vm.Kernel, Agent: agentBuild, VMM: vm.VMM, Accel: vm.Accel,
		VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskBytes, NAT: vm.NAT, Spec: vm.Spec,
		Hostname: vm.Name, MAC: mac,
	}
}
