package vmservice

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmnet"
)

// StepNetwork is the start step that gives a VM its tap on the bridge.
const StepNetwork = "network"

// Network is VM networking as the service uses it: package vmnet implements it over the
// host's bridge, packet filter and DNS server. Everything crosses it as plain data (no
// pointer into the service's state) but for the tap's open queue that Attach hands over (a
// file descriptor, which crosses processes too), errors the caller acts on carry a package failure kind,
// and each call returns once its change is in place on the host — so that it can be served
// from another process (a privileged helper) unchanged. No call waits on a guest or on
// traffic; what they wait on is the kernel (links, nftables) and, for Attach, Restore and
// Teardown, systemd-resolved's resolvectl where it runs — which nothing bounds yet.
type Network interface {
	// Info returns the network's fixed facts (bridge, namespace); they do not change while
	// the service runs.
	Info() vmnet.Info
	// Allocate returns a free guest address: the lowest not in taken. It reserves nothing;
	// all taken is a failure.Conflict.
	Allocate(ctx context.Context, taken []string) (string, error)
	// Attach gives the guest a tap on the bridge and admits it in the packet filter before
	// it boots; on failure nothing of it is left. The link's TapFile, an open queue of the
	// tap, is the caller's: it is handed to the VMM and closed once the VMM was spawned, or
	// when the boot fails before. Detach undoes the rest.
	Attach(ctx context.Context, g vmnet.Guest) (vmnet.Link, error)
	Detach(ctx context.Context, g vmnet.Guest) error
	// Announce names a running guest in DNS; Withdraw removes its name, tap and filter rules
	// once its VMM is gone (also for a guest that was never attached).
	Announce(ctx context.Context, g vmnet.Guest) error
	Withdraw(ctx context.Context, g vmnet.Guest) error
	// Restore, at daemon start, makes the network match the guests that still run: it
	// replaces the set of guests the filter admits and removes other taps.
	Restore(ctx context.Context, running []vmnet.Guest) error
	// Teardown removes the network's host state; the caller makes sure no VM runs.
	Teardown(ctx context.Context) error
}

// networking reports whether VMs get a network (the daemon has one set up).
func (s *Service) networking() bool { return s.net != nil }

// guestOf is vm as its network sees it.
func guestOf(vm store.VM) vmnet.Guest {
	return vmnet.Guest{ID: vm.ID, Name: vm.Name, IP: vm.IP, NAT: vm.NAT}
}

// createRecord inserts the VM, with an address when VMs are networked, retrying when a
// concurrent create took the same address — or the same name, when rename (non-nil only for
// generated names) can pick another. The store's unique index is the real guard against two
// VMs getting one address: a racing create that took it makes CreateVM fail with
// store.ErrIPTaken, and the loop asks again.
func (s *Service) createRecord(ctx context.Context, vm *store.VM, rename func() string) error {
	for attempt := 0; ; attempt++ {
		if s.networking() {
			vms, err := s.store.ListVMs(ctx)
			if err != nil {
				return err
			}
			taken := make([]string, 0, len(vms))
			for _, v := range vms {
				taken = append(taken, v.IP)
			}
			if vm.IP, err = s.net.Allocate(ctx, taken); err != nil {
				return err
			}
		}
		err := s.store.CreateVM(ctx, vm)
		if errors.Is(err, store.ErrIPTaken) && attempt < 50 {
			continue
		}
		if errors.Is(err, store.ErrNameTaken) {
			if rename != nil && attempt < 50 {
				vm.Name = rename()
				continue
			}
			return conflictf("a VM named %q already exists; pick another name or delete it with `banger vm delete %s`", vm.Name, vm.Name)
		}
		return err
	}
}

// networkStep attaches the VM to the bridge (its tap, its filter rules, the DNS server on
// the bridge when it is the first) and records the link for the VMM step.
func (s *Service) networkStep(b *boot) steps.Step {
	vm := b.vm
	return steps.Step{
		Name: StepNetwork,
		Do: func(ctx context.Context) error {
			if !s.networking() || vm.IP == "" {
				return nil
			}
			b.obs.Progress.Stage("vm.network", "connecting to bridge "+s.net.Info().Bridge)
			link, err := s.net.Attach(ctx, guestOf(*vm))
			if err != nil {
				return err
			}
			for _, n := range link.Notices {
				b.obs.notice(n)
			}
			b.link = &link
			return nil
		},
		Undo: func(ctx context.Context) error {
			if b.link == nil {
				return nil
			}
			b.releaseTap()
			return s.net.Detach(ctx, guestOf(*vm))
		},
	}
}

// releaseTap closes the service's copy of the tap's queue (the link's TapFile): once the VMM
// was spawned with it (the VMM holds its own), or when the boot ends before. It is idempotent.
func (b *boot) releaseTap() {
	if b.link != nil && b.link.TapFile != nil {
		b.link.TapFile.Close()
		b.link.TapFile = nil
	}
}

// spawn runs the VMM of b — start is the driver's Start or Restore — with the VM's machine
// config, and releases the tap's queue once start returned, whatever it returned: the queue
// is in the VMM process by then, or the boot failed.
func (s *Service) spawn(b *boot, start func(vmm.Config) (vmm.Machine, error)) (vmm.Machine, error) {
	defer b.releaseTap()
	if _, ok := b.driver.(vmm.TapByName); ok {
		b.releaseTap() // its VMM attaches to the tap itself, which our queue would keep busy
	}
	cfg, err := s.machineConfig(b)
	if err != nil {
		return nil, err
	}
	return start(cfg)
}

// nicOf is the VMM's network device for link; nil without one.
func nicOf(link *vmnet.Link) *vmm.NIC {
	if link == nil {
		return nil
	}
	return &vmm.NIC{Tap: link.Tap, MAC: link.MAC, File: link.TapFile}
}

// netCmdline is the guest's network on its kernel command line, for the agent.
func netCmdline(link *vmnet.Link) string {
	if link == nil {
		return ""
	}
	return fmt.Sprintf(" banger.ip=%s banger.gw=%s banger.dns=%s banger.mac=%s", link.Address, link.Gateway, link.DNS, link.MAC)
}

// announce makes a running VM known: in banger's ssh_config and by name in DNS.
func (s *Service) announce(ctx context.Context, vm *store.VM) {
	if !s.networking() || vm.IP == "" {
		return
	}
	s.writeSSHConfig(ctx)
	if err := s.net.Announce(ctx, guestOf(*vm)); err != nil {
		s.log.Error("announce the VM on its network", "vm", vm.Name, "err", err)
	}
}

// withdraw undoes announce and removes the VM's tap, once its VMM is gone.
func (s *Service) withdraw(ctx context.Context, vm store.VM) {
	if !s.networking() {
		return
	}
	if err := s.net.Withdraw(ctx, guestOf(vm)); err != nil {
		s.log.Error("take the VM off its network", "vm", vm.Name, "err", err)
	}
}

// reconcileNetwork, after a daemon restart, gives the network the VMs that still run: their
// names in DNS again, their filter rules; taps of other VMs go.
func (s *Service) reconcileNetwork(ctx context.Context) {
	if !s.networking() {
		return
	}
	vms, err := s.store.ListVMs(ctx)
	if err != nil {
		return
	}
	var running []vmnet.Guest
	for _, vm := range vms {
		if s.instance(vm.ID) != nil && vm.IP != "" {
			running = append(running, guestOf(vm))
		}
	}
	if err := s.net.Restore(ctx, running); err != nil {
		s.log.Error("restore the VM network", "err", err)
	}
}

// TeardownNetwork removes banger's host network state — packet filter, resolved routing, DNS
// listeners, the bridge — when no VM runs. It is what `banger system teardown` does; the next
// VM start sets everything up again.
func (s *Service) TeardownNetwork(ctx context.Context) error {
	if !s.networking() {
		return nil
	}
	s.RemoveSpares(ctx)
	vms, err := s.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	var running []string
	for _, vm := range vms {
		if s.instance(vm.ID) != nil {
			running = append(running, vm.Name)
		}
	}
	if len(running) > 0 {
		return conflictf("VMs still run (%s); stop them first (`banger vm stop %s`)", strings.Join(running, ", "), strings.Join(running, " "))
	}
	return s.net.Teardown(ctx)
}
