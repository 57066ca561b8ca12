package guestagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// NetConfig is the guest's network as the host assigned it, from the kernel command line:
//
//	banger.ip=172.16.0.5/24 banger.gw=172.16.0.1 banger.dns=172.16.0.1 banger.mac=02:…
//
// The host configures nothing in the guest; the agent does, at its start, with no DHCP and
// no dependency on the kernel's ip= (which Debian's kernel does not have).
type NetConfig struct {
	Addr     netip.Prefix
	Gateway  netip.Addr
	DNS      netip.Addr
	MAC      string
	Hostname string
}

// ParseNetConfig reads the banger.* network settings; ok is false when there are none (a VM
// without a network device).
func ParseNetConfig(cmdline string) (c NetConfig, ok bool, err error) {
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "banger.ip":
			if c.Addr, err = netip.ParsePrefix(v); err != nil {
				return c, false, fmt.Errorf("banger.ip=%q: %w", v, err)
			}
			ok = true
		case "banger.gw":
			if c.Gateway, err = netip.ParseAddr(v); err != nil {
				return c, false, fmt.Errorf("banger.gw=%q: %w", v, err)
			}
		case "banger.dns":
			if c.DNS, err = netip.ParseAddr(v); err != nil {
				return c, false, fmt.Errorf("banger.dns=%q: %w", v, err)
			}
		case "banger.mac":
			c.MAC = strings.ToLower(v)
		case "systemd.hostname":
			c.Hostname = v
		}
	}
	return c, ok, nil
}

// ConfigureNetwork brings the guest's interface up with the host-assigned address and
// default route, and writes /etc/resolv.conf and /etc/hosts under root ("/" in a guest).
func ConfigureNetwork(c NetConfig, root string) error {
	link, err := waitLink(c.MAC, 10*time.Second)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Addr.Addr().AsSlice(), Mask: net.CIDRMask(c.Addr.Bits(), 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", c.Addr, link.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", link.Attrs().Name, err)
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	if c.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: c.Gateway.AsSlice()}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("default route via %s: %w", c.Gateway, err)
		}
	}
	return writeNameFiles(c, root)
}

// waitLink finds the interface with mac (or, without one, the first Ethernet interface),
// waiting for its driver to appear.
func waitLink(mac string, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err == nil {
			for _, l := range links {
				a := l.Attrs()
				if a.Name == "lo" || a.HardwareAddr == nil {
					continue
				}
				if mac != "" && strings.EqualFold(a.HardwareAddr.String(), mac) {
					return l, nil
				}
				if mac == "" && l.Type() == "device" {
					return l, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no network interface with MAC %q appeared within %s", mac, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeNameFiles writes resolv.conf (banger's DNS server, search vm) and hosts (the VM's own
// names), replacing symlinks such as a resolved stub link.
func writeNameFiles(c NetConfig, root string) error {
	var dns []netip.Addr
	if c.DNS.IsValid() {
		dns = append(dns, c.DNS)
	}
	return errors.Join(
		replaceFile(filepath.Join(root, "etc/resolv.conf"), resolvConf(dns)),
		replaceFile(filepath.Join(root, "etc/hosts"), hostsFile(c.Addr.Addr(), c.Hostname)),
	)
}

// resolvConf is banger's resolv.conf: its DNS servers for the VM, search vm.
func resolvConf(dns []netip.Addr) string {
	var resolv strings.Builder
	resolv.WriteString("# written by banger-agent: the host's DNS server for this VM\n")
	for _, d := range dns {
		fmt.Fprintf(&resolv, "nameserver %s\n", d)
	}
	resolv.WriteString("search vm\n")
	return resolv.String()
}

// hostsFile is banger's /etc/hosts: localhost and, with a hostname, the VM's own names.
func hostsFile(addr netip.Addr, hostname string) string {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if hostname != "" {
		hosts += fmt.Sprintf("%s\t%s.vm %s\n", addr, hostname, hostname)
	}
	return hosts
}

// replaceFile makes path a regular file holding content (mode 0644 less the umask), atomically:
// readers see the old file or the new one. A regular file that holds content already is left
// as it is: a clone's resolv.conf is its source's, and a rename over a file costs a restored
// guest a writeback of the new file (ext4's auto_da_alloc) on the path of every fork.
func replaceFile(path, content string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == int64(len(content)) {
		if b, err := os.ReadFile(path); err == nil && string(b) == content {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".banger-tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SetUpNetworkFromCmdline configures the network the kernel command line describes, if any,
// and logs what it did. It is safe to run again (an agent restart): every change replaces.
func SetUpNetworkFromCmdline(logf func(string, ...any)) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		logf("network: read /proc/cmdline: %v", err)
		return
	}
	c, ok, err := ParseNetConfig(string(b))
	if err != nil {
		logf("network: %v", err)
		return
	}
	if !ok {
		return // a VM without a network device
	}
	if err := ConfigureNetwork(c, "/"); err != nil {
		logf("network: %v", err)
		return
	}
	logf("network: %s via %s, dns %s", c.Addr, c.Gateway, c.DNS)
}
