// Package vmnet connects VMs to banger's guest network: it hands out their addresses on the
// bridge, makes their taps, keeps the packet filter (anti-spoofing and NAT) in line with the
// guests on the bridge, and names announced VMs in DNS (<name>.vm).
//
// Network speaks plain data — ids, names and addresses as strings, results as values, errors
// classified with package failure where the caller acts on the kind — and holds no reference
// into its caller's state, so that it can move behind a privileged boundary unchanged. The one
// thing that is not data is a tap's open queue (Link.TapFile), a file descriptor, which
// crosses a process boundary as SCM_RIGHTS. What needs privilege is behind Host: in-process
// as root (*hostnet.Net), or through banger's root helper.
package vmnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/banger-dev/banger/internal/dnsserver"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/hostnet"
)

// Guest is a VM as its network sees it.
type Guest struct {
	ID   string // names its tap and its MAC address
	Name string // answers as <Name>.vm once announced
	IP   string // its address on the bridge
	NAT  bool   // may leave the host, masqueraded behind it
}

// Link is how a guest reaches the bridge: the VMM's network device and the settings the
// guest configures itself with.
type Link struct {
	Tap string // the tap device, a port of the bridge
	// TapFile is an open queue of the tap (see Host.AddTap), for the VMM that is handed its
	// network device by file descriptor. The caller owns it: it closes it once the VMM was
	// spawned, or when the start fails before (Detach does not close it).
	TapFile *os.File
	MAC     string // the guest's MAC address
	Address string // the guest's address with the bridge's prefix length: 172.16.0.2/24
	Gateway string // the host's address on the bridge
	DNS     string // the resolver the guest uses (the host, which answers .vm)
	// Notices are what the user should know but that did not stop the attach (DNS for .vm
	// names not available, for instance).
	Notices []string
}

// Info are the network's fixed facts: they do not change while it is open.
type Info struct {
	Bridge    string // the bridge's name
	Namespace string // path of the network namespace the bridge lives in; "" for the host's
}

// Options configure a Network.
type Options struct {
	Host Host // the bridge, taps and packet filter; required
	// DNS answers <name>.vm (nil: no names); it listens on the bridge once the bridge exists,
	// and on 127.0.0.1:DNSPort too when DNSPort is set.
	DNS     *dnsserver.Server
	DNSPort int
	Log     *slog.Logger
}

// Network is VM networking over a Host (bridge, taps, packet filter) and package dnsserver. It keeps the set of guests the packet filter admits: a guest joins it when it is
// attached and leaves it when it is detached or withdrawn. Its methods are safe for
// concurrent use; changes of the filter are serialized, so an older set never overwrites a
// newer one.
type Network struct {
	net     Host
	dns     *dnsserver.Server
	dnsPort int
	log     *slog.Logger

	mu     sync.Mutex
	guests map[string]Guest // by id: the guests the packet filter admits
}

// MAC is the MAC address of the guest with id: it follows from the id, so that a VM keeps it
// across restarts and resumes.
func MAC(id string) string { return hostnet.MAC(id).String() }

// New returns a Network over o.Host.
func New(o Options) *Network {
	n := &Network{net: o.Host, dns: o.DNS, dnsPort: o.DNSPort, log: o.Log, guests: map[string]Guest{}}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	return n
}

// Info returns the network's fixed facts.
func (n *Network) Info() Info {
	return Info{Bridge: n.net.Bridge(), Namespace: n.net.NetNSPath()}
}

// Allocate returns the lowest guest address of the bridge's subnet that is not in taken. It
// reserves nothing: the caller records the address and asks again when another VM took it
// first. Every address taken is a failure.Conflict.
func (n *Network) Allocate(ctx context.Context, taken []string) (string, error) {
	used := make(map[string]bool, len(taken))
	for _, a := range taken {
		used[a] = true
	}
	for _, a := range n.net.GuestIPs() {
		if !used[a.String()] {
			return a.String(), nil
		}
	}
	return "", failure.New(failure.Conflict, "every address of %s is taken by a VM; delete VMs, or give bridge_cidr a bigger network", n.net.CIDR())
}

// Attach makes g's tap on the bridge (and the bridge, when it is the first), admits g in the
// packet filter before it boots (until then its tap takes nothing in), and starts the DNS
// server on the bridge. The link carries an open queue of the tap (Link.TapFile) that the
// caller closes. On failure nothing of it is left, the queue included. Detach undoes it.
func (n *Network) Attach(ctx context.Context, g Guest) (Link, error) {
	queue, err := n.net.AddTap(g.ID)
	if err != nil {
		return Link{}, err
	}
	n.mu.Lock()
	n.guests[g.ID] = g
	err = n.applyLocked()
	if err != nil {
		delete(n.guests, g.ID)
	}
	n.mu.Unlock()
	if err != nil {
		queue.Close()
		_ = n.net.DeleteTap(g.ID)
		return Link{}, err
	}
	host := n.net.HostIP().String()
	return Link{
		Tap:     hostnet.TapName(g.ID),
		TapFile: queue,
		MAC:     MAC(g.ID),
		Address: g.IP + "/" + strconv.Itoa(n.net.CIDR().Bits()),
		Gateway: host,
		DNS:     host,
		Notices: n.ensureDNS(),
	}, nil
}

// Detach undoes Attach for a guest that never got announced: its tap is removed and the
// filter no longer admits it. It returns the tap's error; the filter's is logged.
func (n *Network) Detach(ctx context.Context, g Guest) error {
	err := n.net.DeleteTap(g.ID)
	if ferr := n.forget(g.ID); ferr != nil {
		n.log.Error("update the packet filter", "err", ferr)
	}
	return err
}

// Announce makes a running guest known by name: <name>.vm answers its address. The guest
// stays admitted by the filter (Attach admitted it).
func (n *Network) Announce(ctx context.Context, g Guest) error {
	if n.dns != nil {
		if ip, err := netip.ParseAddr(g.IP); err == nil {
			n.dns.Set(g.Name, ip)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.guests[g.ID]; ok {
		return nil
	}
	n.guests[g.ID] = g
	if err := n.applyLocked(); err != nil {
		return fmt.Errorf("update the packet filter: %w", err)
	}
	return nil
}

// Withdraw undoes Attach and Announce once the guest's VMM is gone: its name, its tap and its
// filter rules go. A guest that is not attached loses its name and its tap, if it had them.
func (n *Network) Withdraw(ctx context.Context, g Guest) error {
	if n.dns != nil {
		n.dns.Remove(g.Name)
	}
	var errs []error
	if err := n.net.DeleteTap(g.ID); err != nil {
		errs = append(errs, fmt.Errorf("delete the tap of vm %q: %w", g.Name, err))
	}
	if err := n.forget(g.ID); err != nil {
		errs = append(errs, fmt.Errorf("update the packet filter: %w", err))
	}
	return errors.Join(errs...)
}

// Restore, when the daemon starts again, makes the network match the guests that still run:
// their names in DNS, the filter admitting exactly them, the bridge and the DNS server when
// any runs; taps of other VMs are removed. It replaces the set of admitted guests, so it is
// called before anything is attached.
func (n *Network) Restore(ctx context.Context, running []Guest) error {
	keep := map[string]bool{}
	n.mu.Lock()
	n.guests = map[string]Guest{}
	for _, g := range running {
		n.guests[g.ID] = g
		keep[hostnet.TapName(g.ID)] = true
		if n.dns != nil {
			if ip, err := netip.ParseAddr(g.IP); err == nil {
				n.dns.Set(g.Name, ip)
			}
		}
	}
	n.mu.Unlock()
	if taps, err := n.net.Taps(); err == nil {
		for _, t := range taps {
			if !keep[t] {
				n.log.Info("removing a tap without a running VM", "tap", t)
				_ = n.net.DeleteTap(t[2:])
			}
		}
	}
	if len(running) > 0 {
		if err := n.net.EnsureBridge(); err == nil {
			n.ensureDNS()
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.applyLocked(); err != nil {
		return fmt.Errorf("restore the packet filter: %w", err)
	}
	return nil
}

// Teardown removes banger's host network state — packet filter, resolved routing, DNS
// listeners, taps, the bridge — and forgets every guest. The caller makes sure that no VM
// runs; the next Attach sets everything up again.
func (n *Network) Teardown(ctx context.Context) error {
	var errs []error
	n.mu.Lock()
	n.guests = map[string]Guest{}
	if err := n.net.SetGuests(nil); err != nil {
		errs = append(errs, err)
	}
	n.mu.Unlock()
	if err := n.net.UnrouteDomain(); err != nil {
		errs = append(errs, err)
	}
	if n.dns != nil {
		if err := n.dns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if taps, err := n.net.Taps(); err == nil {
		for _, t := range taps {
			_ = n.net.DeleteTap(t[2:])
		}
	}
	if err := n.net.RemoveBridge(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// forget stops admitting guest id, updating the filter if it was admitted.
func (n *Network) forget(id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.guests[id]; !ok {
		return nil
	}
	delete(n.guests, id)
	return n.applyLocked()
}

// applyLocked makes the packet filter admit exactly the guests of the set. The caller holds mu.
func (n *Network) applyLocked() error {
	ids := make([]string, 0, len(n.guests))
	for id := range n.guests {
		ids = append(ids, id)
	}
	slices.Sort(ids) // the same set gives the same filter
	var guests []hostnet.Guest
	for _, id := range ids {
		g := n.guests[id]
		ip, err := netip.ParseAddr(g.IP)
		if err != nil {
			continue
		}
		if !n.net.CIDR().Contains(ip) {
			// An address from before bridge_cidr changed: the VM cannot be on this bridge, and
			// its rules would only make the filter refuse the whole list.
			n.log.Warn("VM address outside bridge_cidr; its traffic is dropped", "vm", g.Name, "ip", ip, "bridge_cidr", n.net.CIDR())
			continue
		}
		guests = append(guests, hostnet.GuestOf(g.ID, ip, g.NAT))
	}
	return n.net.SetGuests(guests)
}

// ensureDNS starts the DNS server on the bridge (for guests) and on loopback (for the host)
// once the bridge exists, and routes the vm domain to it where systemd-resolved runs. A
// failure there costs name resolution, not the VM: it is returned as a notice.
func (n *Network) ensureDNS() []string {
	if n.dns == nil {
		return nil
	}
	var notices []string
	addrs := []string{net.JoinHostPort(n.net.HostIP().String(), "53")}
	if n.dnsPort > 0 {
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(n.dnsPort)))
	}
	for _, a := range addrs {
		if err := n.dns.Listen(n.net, a); err != nil {
			n.log.Warn("dns", "err", err)
			notices = append(notices, fmt.Sprintf("DNS for .vm names is not available on %s: %v", a, err))
		}
	}
	if err := n.net.RouteDomain(); err != nil {
		n.log.Warn("route the vm domain through systemd-resolved", "err", err)
	}
	return notices
}
