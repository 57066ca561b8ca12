package vmservice

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// StepNetwork is the start step that gives a VM its tap on the bridge.
const StepNetwork = "network"

// networking reports whether VMs get a network (the daemon has one set up).
func (s *Service) networking() bool { return s.net != nil }

// allocateIP picks the lowest address of the bridge subnet that no VM holds. The store's
// unique index is the real guard: a racing create that took it makes CreateVM fail with
// store.ErrIPTaken, and the caller asks again.
func (s *Service) allocateIP(ctx context.Context) (string, error) {
	vms, err := s.store.ListVMs(ctx)
	if err != nil {
		return "", err
	}
	used := map[string]bool{}
	for _, vm := range vms {
		used[vm.IP] = true
	}
	for _, a := range s.net.GuestIPs() {
		if !used[a.String()] {
			return a.String(), nil
		}
	}
	return "", conflictf("every address of %s is taken by a VM; delete VMs, or give bridge_cidr a bigger network", s.net.CIDR())
}

// createRecord inserts the VM, with an address when VMs are networked, retrying when a
// concurrent create took the same address — or the same name, when rename (non-nil only for
// generated names) can pick another.
func (s *Service) createRecord(ctx context.Context, vm *store.VM, rename func() string) error {
	for attempt := 0; ; attempt++ {
		if s.networking() {
			ip, err := s.allocateIP(ctx)
			if err != nil {
				return err
			}
			vm.IP = ip
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

// networkStep makes the VM's tap on the bridge (creating the bridge and starting the DNS
// server on it when it is the first) and fills in the VMM's network device.
func (s *Service) networkStep(b *boot) steps.Step {
	vm := b.vm
	return steps.Step{
		Name: StepNetwork,
		Do: func(ctx context.Context) error {
			if !s.networking() || vm.IP == "" {
				return nil
			}
			b.obs.Progress.Stage("vm.network", "connecting to bridge "+s.net.Bridge())
			if err := s.net.AddTap(vm.ID); err != nil {
				return err
			}
			// The guest's filter rules exist before it boots: until then its tap takes nothing
			// in. Without them the VM does not start.
			if err := s.syncFilter(ctx, vm); err != nil {
				_ = s.net.DeleteTap(vm.ID)
				return err
			}
			s.ensureDNS(b.obs)
			b.nic = &vmm.NIC{Tap: hostnet.TapName(vm.ID), MAC: hostnet.MAC(vm.ID).String()}
			return nil
		},
		Undo: func(ctx context.Context) error {
			if b.nic == nil {
				return nil
			}
			err := s.net.DeleteTap(vm.ID)
			s.forgetStarting(vm.ID)
			if ferr := s.syncFilter(ctx, nil); ferr != nil {
				s.log.Error("update the packet filter", "err", ferr)
			}
			return err
		},
	}
}

// ensureDNS starts the DNS server on the bridge (for guests) and on loopback (for the host)
// once the bridge exists, and routes the vm domain to it where systemd-resolved runs. A
// failure there costs name resolution, not the VM: it is told, not fatal.
func (s *Service) ensureDNS(obs Observer) {
	if s.dns == nil {
		return
	}
	addrs := []string{net.JoinHostPort(s.net.HostIP().String(), "53")}
	if s.dnsPort > 0 {
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.dnsPort)))
	}
	for _, a := range addrs {
		if err := s.dns.Listen(s.net, a); err != nil {
			s.log.Warn("dns", "err", err)
			obs.notice(fmt.Sprintf("DNS for .vm names is not available on %s: %v", a, err))
		}
	}
	if err := s.net.RouteDomain(); err != nil {
		s.log.Warn("route the vm domain through systemd-resolved", "err", err)
	}
}

// netCmdline is the guest's network on its kernel command line, for the agent.
func (s *Service) netCmdline(vm *store.VM) string {
	if !s.networking() || vm.IP == "" {
		return ""
	}
	host := s.net.HostIP()
	return fmt.Sprintf(" banger.ip=%s/%d banger.gw=%s banger.dns=%s banger.mac=%s",
		vm.IP, s.net.CIDR().Bits(), host, host, hostnet.MAC(vm.ID))
}

// announce makes a running VM known: its name in DNS, its filter rules.
func (s *Service) announce(ctx context.Context, vm *store.VM) {
	if !s.networking() || vm.IP == "" {
		return
	}
	s.writeSSHConfig(ctx)
	if s.dns != nil {
		if ip, err := netip.ParseAddr(vm.IP); err == nil {
			s.dns.Set(vm.Name, ip)
		}
	}
	s.forgetStarting(vm.ID)
	if err := s.syncFilter(ctx, nil); err != nil {
		s.log.Error("update the packet filter", "err", err)
	}
}

// withdraw undoes announce and removes the VM's tap, once its VMM is gone.
func (s *Service) withdraw(ctx context.Context, vm store.VM) {
	if !s.networking() {
		return
	}
	if s.dns != nil {
		s.dns.Remove(vm.Name)
	}
	if err := s.net.DeleteTap(vm.ID); err != nil {
		s.log.Warn("delete tap", "vm", vm.Name, "err", err)
	}
	s.forgetStarting(vm.ID)
	if err := s.syncFilter(ctx, nil); err != nil {
		s.log.Error("update the packet filter", "err", err)
	}
}

// syncFilter makes the packet filter match the VMs on the bridge: the running ones, those
// this daemon runs, those being started, and starting (when not nil), which joins them. It
// serializes itself so that an older view of the VMs never overwrites a newer one.
func (s *Service) syncFilter(ctx context.Context, starting *store.VM) error {
	s.filterMu.Lock()
	defer s.filterMu.Unlock()
	if starting != nil {
		if s.starting == nil {
			s.starting = map[string]store.VM{}
		}
		s.starting[starting.ID] = *starting
	}
	vms, err := s.store.ListVMs(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("update the packet filter: list VMs: %w", err)
	}
	var guests []hostnet.Guest
	seen := map[string]bool{}
	add := func(vm store.VM) {
		ip, err := netip.ParseAddr(vm.IP)
		if err != nil || seen[vm.ID] {
			return
		}
		if !s.net.CIDR().Contains(ip) {
			// An address from before bridge_cidr changed: the VM cannot be on this bridge, and
			// its rules would only make the filter refuse the whole list.
			s.log.Warn("VM address outside bridge_cidr; its traffic is dropped", "vm", vm.Name, "ip", ip, "bridge_cidr", s.net.CIDR())
			return
		}
		seen[vm.ID] = true
		guests = append(guests, hostnet.GuestOf(vm.ID, ip, vm.NAT))
	}
	for _, vm := range s.starting {
		add(vm)
	}
	for _, vm := range vms {
		if vm.IP != "" && (vm.State == StateRunning || s.instance(vm.ID) != nil) {
			add(vm)
		}
	}
	return s.net.SetGuests(guests)
}

// forgetStarting ends a VM's start: it is announced, or its start was undone.
func (s *Service) forgetStarting(id string) {
	s.filterMu.Lock()
	defer s.filterMu.Unlock()
	delete(s.starting, id)
}

// reconcileNetwork, after a daemon restart, names the running VMs in DNS again, restores the
// packet filter and removes taps whose VM is not running.
func (s *Service) reconcileNetwork(ctx context.Context) {
	if !s.networking() {
		return
	}
	vms, err := s.store.ListVMs(ctx)
	if err != nil {
		return
	}
	keep := map[string]bool{}
	anyRunning := false
	for _, vm := range vms {
		if s.instance(vm.ID) == nil || vm.IP == "" {
			continue
		}
		anyRunning = true
		keep[hostnet.TapName(vm.ID)] = true
		if s.dns != nil {
			if ip, err := netip.ParseAddr(vm.IP); err == nil {
				s.dns.Set(vm.Name, ip)
			}
		}
	}
	if taps, err := s.net.Taps(); err == nil {
		for _, t := range taps {
			if !keep[t] {
				s.log.Info("removing a tap without a running VM", "tap", t)
				_ = s.net.DeleteTap(t[2:])
			}
		}
	}
	if anyRunning {
		if err := s.net.EnsureBridge(); err == nil {
			s.ensureDNS(Observer{})
		}
	}
	if err := s.syncFilter(ctx, nil); err != nil {
		s.log.Error("restore the packet filter", "err", err)
	}
}

// TeardownNetwork removes banger's host network state — packet filter, resolved routing, DNS
// listeners, the bridge — when no VM runs. It is what `banger system teardown` does; the next
// VM start sets everything up again.
func (s *Service) TeardownNetwork(ctx context.Context) error {
	if !s.networking() {
		return nil
	}
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
	var errs []error
	if err := s.net.SetGuests(nil); err != nil {
		errs = append(errs, err)
	}
	if err := s.net.UnrouteDomain(); err != nil {
		errs = append(errs, err)
	}
	if s.dns != nil {
		if err := s.dns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if taps, err := s.net.Taps(); err == nil {
		for _, t := range taps {
			_ = s.net.DeleteTap(t[2:])
		}
	}
	if err := s.net.RemoveBridge(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
