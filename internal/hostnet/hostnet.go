// Package hostnet owns every change banger makes to the host's network: the bridge, one tap per
// VM, the nftables packet filter (anti-spoofing, what guests may reach, NAT), IP forwarding, and the routing of the vm DNS domain
// through systemd-resolved. Nothing else in banger touches host networking, so this is the one
// package a privileged helper will take over.
//
// Everything can happen inside a named network namespace instead of the daemon's own
// (config network_namespace): tests and CI keep guest networking out of the host that way.
package hostnet

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// Config says where guest networking lives.
type Config struct {
	// Bridge is the host bridge every tap joins (config bridge_name).
	Bridge string
	// CIDR is the guests' subnet; the host side of the bridge is its first address.
	CIDR netip.Prefix
	// NetNS is a network namespace name (under /run/netns) or path to work in; "" is the
	// daemon's own.
	NetNS string
	// StateDir holds small markers (e.g. that banger turned IP forwarding on).
	StateDir string
	// OpenPorts are the host's TCP and UDP ports guests may connect to besides banger's DNS
	// (config host_ports_open_to_guests).
	OpenPorts []uint16
}

// Net is banger's guest network on one host (or namespace).
type Net struct {
	cfg Config
	ns  netns.NsHandle // -1 when working in the current namespace
	mu  sync.Mutex
	// guests is the last SetGuests list, for re-applying the filter.
	guests []Guest
}

// Open checks cfg and opens the namespace, if one is named.
func Open(cfg Config) (*Net, error) {
	if err := ValidateCIDR(cfg.CIDR); err != nil {
		return nil, err
	}
	if cfg.Bridge == "" || len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("bridge name %q: want 1-15 characters", cfg.Bridge)
	}
	n := &Net{cfg: cfg, ns: netns.None()}
	if cfg.NetNS != "" {
		path := cfg.NetNS
		if !strings.Contains(path, "/") {
			path = filepath.Join("/run/netns", path)
		}
		h, err := netns.GetFromPath(path)
		if err != nil {
			return nil, fmt.Errorf("network namespace %s: %w (create it with `ip netns add %s`)", path, err, filepath.Base(path))
		}
		n.ns = h
	}
	return n, nil
}

// Close releases the namespace handle.
func (n *Net) Close() error {
	if n.ns.IsOpen() {
		return n.ns.Close()
	}
	return nil
}

// ValidateCIDR accepts an IPv4 prefix between /16 and /29 with room for the host and guests.
func ValidateCIDR(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("bridge_cidr %q: want an IPv4 network such as 172.16.0.0/24", p)
	}
	if p.Bits() < 16 || p.Bits() > 29 {
		return fmt.Errorf("bridge_cidr %s: want a prefix length between /16 and /29", p)
	}
	if p.Masked() != p {
		return fmt.Errorf("bridge_cidr %s: host bits are set; did you mean %s?", p, p.Masked())
	}
	return nil
}

// NetNSPath is the namespace's path, or "" for the daemon's own.
func (n *Net) NetNSPath() string {
	if n.cfg.NetNS == "" {
		return ""
	}
	if strings.Contains(n.cfg.NetNS, "/") {
		return n.cfg.NetNS
	}
	return filepath.Join("/run/netns", n.cfg.NetNS)
}

// Bridge is the bridge's name.
func (n *Net) Bridge() string { return n.cfg.Bridge }

// CIDR is the guests' subnet.
func (n *Net) CIDR() netip.Prefix { return n.cfg.CIDR }

// HostIP is the host's address on the bridge: the subnet's first address. Guests use it as
// their gateway and DNS server.
func (n *Net) HostIP() netip.Addr { return n.cfg.CIDR.Addr().Next() }

// GuestIPs lists the addresses guests can get, in order.
func (n *Net) GuestIPs() []netip.Addr {
	var out []netip.Addr
	last := lastAddr(n.cfg.CIDR)
	for a := n.HostIP().Next(); a.IsValid() && a.Less(last); a = a.Next() {
		out = append(out, a)
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Do runs fn on a locked OS thread that has entered the namespace, so that every socket,
// netlink handle, /proc/sys file and child process fn makes belongs to it. Without a namespace
// fn just runs.
func (n *Net) Do(fn func() error) error {
	if !n.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked (and so discarded when the goroutine ends) if switching
		// back fails: it must never run other goroutines in the wrong namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("read current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", n.NetNSPath(), err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// TapName is the tap device of a VM: "bg" and 12 hex digits of its id (Linux allows 15).
func TapName(vmID string) string {
	if len(vmID) > 12 {
		vmID = vmID[:12]
	}
	return "bg" + vmID
}

// MAC is a VM's deterministic, locally administered unicast MAC address.
func MAC(vmID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("banger-mac:" + vmID))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// markerPath is a file in the state dir.
func (n *Net) markerPath(name string) string {
	return filepath.Join(n.cfg.StateDir, name)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ListenPacket opens a packet socket inside the namespace.
func (n *Net) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Listen opens a listening socket inside the namespace.
func (n *Net) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Dial connects from inside the namespace.
func (n *Net) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	return c, err
}
