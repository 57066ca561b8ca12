package roothelper

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/fcjail"
	"github.com/banger-dev/banger/internal/hostnet"
)

// checked is a request whose every field passed Config.validate, in parsed form.
type checked struct {
	op     string
	net    *NetworkConfig
	ns     string // namespace name; "" for the helper's own
	tap    string
	guests []hostnet.Guest
	ports  []uint16
	proto  string
	addr   netip.AddrPort
	jail   string
	files  []JailFile
	socket string
}

func invalid(format string, args ...any) error { return failure.New(failure.Invalid, format, args...) }

// validate checks every field of r against the configuration: the op is known, the network is
// one the helper serves, and each field the op reads is well-formed and allowed, each field it
// does not read is empty.
func (c *Config) validate(r Request) (checked, error) {
	ck := checked{op: r.Op}
	for i := range c.Networks {
		if c.Networks[i].Bridge == r.Network.Bridge {
			ck.net = &c.Networks[i]
		}
	}
	if ck.net == nil {
		return ck, invalid("bridge %q is not one the helper serves (its configuration %s lists the bridges)", r.Network.Bridge, DefaultConfigPath)
	}
	if r.Network.CIDR != ck.net.prefix.String() {
		return ck, invalid("bridge %s serves %s, not %q (set bridge_cidr to match the helper's configuration)", ck.net.Bridge, ck.net.prefix, r.Network.CIDR)
	}
	if err := c.checkNamespace(r.Network.Namespace); err != nil {
		return ck, err
	}
	ck.ns = r.Network.Namespace

	var reads []string // the optional fields op reads
	switch r.Op {
	case OpHello, OpEnsureBridge, OpListTaps, OpRouteDomain, OpUnrouteDomain, OpRemoveBridge:
	case OpAddTap, OpDeleteTap:
		reads = []string{"tap"}
		if !tapNameRE.MatchString(r.Tap) {
			return ck, invalid("tap %q: want bg and 12 lowercase hex digits (banger's taps only)", r.Tap)
		}
		ck.tap = r.Tap
	case OpSetGuests:
		reads = []string{"guests", "open_ports"}
		gs, err := ck.net.guests(r.Guests)
		if err != nil {
			return ck, err
		}
		ports, err := c.openPorts(r.OpenPorts)
		if err != nil {
			return ck, err
		}
		ck.guests, ck.ports = gs, ports
	case OpListen:
		reads = []string{"proto", "addr"}
		if r.Proto != "tcp" && r.Proto != "udp" {
			return ck, invalid("listen: proto %q: want tcp or udp", r.Proto)
		}
		ap, err := netip.ParseAddrPort(r.Addr)
		if err != nil || ap.String() != r.Addr {
			return ck, invalid("listen: address %q: want ip:port", r.Addr)
		}
		host := ck.net.prefix.Addr().Next()
		switch {
		case ap.Addr() == host && ap.Port() == 53:
		case ap.Addr() == netip.AddrFrom4([4]byte{127, 0, 0, 1}) && ap.Port() >= 1024:
		default:
			return ck, invalid("listen: %s is not allowed: only %s port 53 (DNS on the bridge) or 127.0.0.1 with a port of 1024 or more", r.Addr, host)
		}
		ck.proto, ck.addr = r.Proto, ap
	case OpSocket:
		reads = []string{"proto"}
		if !slices.Contains([]string{"tcp4", "tcp6", "udp4", "udp6"}, r.Proto) {
			return ck, invalid("socket: proto %q: want tcp4, tcp6, udp4 or udp6", r.Proto)
		}
		if ck.ns == "" {
			return ck, invalid("socket: only for a network in a namespace; in the helper's own namespace the caller opens its sockets itself")
		}
		ck.proto = r.Proto
	case OpJailStart, OpJailDial, OpJailKill, OpJailRemove, OpJailList:
		if !c.Jails.Enabled() {
			return ck, invalid("%s: the helper starts no Firecracker jails: its configuration (%s) names no jailer and firecracker in [jails]", r.Op, DefaultConfigPath)
		}
		if r.Op == OpJailList {
			break
		}
		reads = []string{"jail"}
		if err := fcjail.CheckID(r.Jail); err != nil {
			return ck, invalid("%s: %v", r.Op, err)
		}
		ck.jail = r.Jail
		switch r.Op {
		case OpJailDial:
			reads = append(reads, "socket")
			if _, ok := fcjail.Sockets[r.Socket]; !ok {
				return ck, invalid("jail_dial: socket %q: want api or vsock", r.Socket)
			}
			ck.socket = r.Socket
		case OpJailStart:
			reads = append(reads, "files", "tap")
			if r.Tap != "" && !tapNameRE.MatchString(r.Tap) {
				return ck, invalid("jail_start: tap %q: want bg and 12 lowercase hex digits (banger's taps only)", r.Tap)
			}
			if err := checkJailFiles(r.Files); err != nil {
				return ck, err
			}
			ck.tap, ck.files = r.Tap, slices.Clone(r.Files)
		}
	default:
		return ck, invalid("unknown operation %q", r.Op)
	}
	for field, set := range map[string]bool{"tap": r.Tap != "", "guests": r.Guests != nil, "open_ports": r.OpenPorts != nil, "proto": r.Proto != "", "addr": r.Addr != "",
		"jail": r.Jail != "", "files": r.Files != nil, "socket": r.Socket != ""} {
		if set && !slices.Contains(reads, field) {
			return ck, invalid("%s: field %s does not belong to this operation", r.Op, field)
		}
	}
	return ck, nil
}

// openPorts checks the host ports a caller opens to its guests: at most MaxOpenPorts, each
// once, 1024 or more (a port any user could serve; privileged ports only by the helper's
// configuration), and none at all when callers_open_ports is off.
func (c *Config) openPorts(ports []uint16) ([]uint16, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	if !c.CallersOpenPorts {
		return nil, invalid("set_guests: open_ports: the helper's configuration (callers_open_ports) lets no caller open host ports; root lists them in host_ports_open_to_guests")
	}
	if len(ports) > MaxOpenPorts {
		return nil, invalid("set_guests: %d open ports; at most %d", len(ports), MaxOpenPorts)
	}
	for i, p := range ports {
		if p < 1024 {
			return nil, invalid("set_guests: open port %d: callers may open ports of 1024 or more; root lists privileged ones in the helper's host_ports_open_to_guests", p)
		}
		if slices.Contains(ports[:i], p) {
			return nil, invalid("set_guests: open port %d is listed twice", p)
		}
	}
	return slices.Clone(ports), nil
}

// checkNamespace accepts "" (when host networks are allowed) or a plain name with the
// configured prefix; never a path.
func (c *Config) checkNamespace(ns string) error {
	if ns == "" {
		if !c.HostNamespace {
			return invalid("networks in the helper's own namespace are not allowed by its configuration (host_namespace)")
		}
		return nil
	}
	if c.NamespacePrefix == "" {
		return invalid("network namespace %q: the helper's configuration allows none (namespace_prefix)", ns)
	}
	if !nsNameRE.MatchString(ns) || !strings.HasPrefix(ns, c.NamespacePrefix) {
		return invalid("network namespace %q: want a name under /run/netns starting with %q (letters, digits, '_', '.', '-')", ns, c.NamespacePrefix)
	}
	return nil
}

// guests checks a set_guests list: at most MaxGuests, each a banger tap, a locally
// administered unicast MAC and a guest address of the network, with no tap, MAC or address
// listed twice.
func (n *NetworkConfig) guests(in []Guest) ([]hostnet.Guest, error) {
	if len(in) > MaxGuests {
		return nil, invalid("set_guests: %d guests; at most %d", len(in), MaxGuests)
	}
	host := n.prefix.Addr().Next()
	bcast := lastAddr(n.prefix)
	out := make([]hostnet.Guest, 0, len(in))
	seen := map[string]bool{}
	for _, g := range in {
		if !tapNameRE.MatchString(g.Tap) {
			return nil, invalid("set_guests: tap %q: want bg and 12 lowercase hex digits", g.Tap)
		}
		mac, err := net.ParseMAC(g.MAC)
		if err != nil || len(mac) != 6 || mac.String() != g.MAC {
			return nil, invalid("set_guests: guest %s: MAC %q: want 6 bytes as lowercase xx:xx:xx:xx:xx:xx", g.Tap, g.MAC)
		}
		if mac[0]&1 != 0 || mac[0]&2 == 0 {
			return nil, invalid("set_guests: guest %s: MAC %s is not a locally administered unicast address", g.Tap, g.MAC)
		}
		ip, err := netip.ParseAddr(g.IP)
		if err != nil || !ip.Is4() || ip.String() != g.IP {
			return nil, invalid("set_guests: guest %s: address %q is not an IPv4 address", g.Tap, g.IP)
		}
		if !n.prefix.Contains(ip) || ip == n.prefix.Addr() || ip == host || ip == bcast {
			return nil, invalid("set_guests: guest %s: %s is not a guest address of %s", g.Tap, ip, n.prefix)
		}
		for _, k := range []string{"tap " + g.Tap, "mac " + g.MAC, "ip " + g.IP} {
			if seen[k] {
				return nil, invalid("set_guests: %s is listed twice", k)
			}
			seen[k] = true
		}
		out = append(out, hostnet.Guest{Tap: g.Tap, MAC: mac, IP: ip, NAT: g.NAT})
	}
	return out, nil
}

// lastAddr is p's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// consoleFile is the JailFile name of the console pipe.
const consoleFile = "console"

// checkJailFiles checks jail_start's list of descriptors: at most MaxRequestFDs, each name
// once; the kernel and the console required; the kernel and initrd read-only, the log and
// metrics writable; disks disk0, disk1, … without a gap.
func checkJailFiles(files []JailFile) error {
	if len(files) > MaxRequestFDs {
		return invalid("jail_start: %d files; at most %d", len(files), MaxRequestFDs)
	}
	seen := map[string]bool{}
	disks := 0
	for _, f := range files {
		switch {
		case f.Name == fcjail.Kernel || f.Name == fcjail.Initrd || f.Name == consoleFile:
			if f.Writable {
				return invalid("jail_start: %s cannot be writable", f.Name)
			}
		case f.Name == fcjail.Log || f.Name == fcjail.Metrics:
			if !f.Writable {
				return invalid("jail_start: %s must be writable (Firecracker writes it)", f.Name)
			}
		case fcjail.IsDiskName(f.Name):
			disks++
		default:
			return invalid("jail_start: file %q: want kernel, initrd, disk0 … disk%d, %s, %s or console", f.Name, fcjail.MaxDisks-1, fcjail.Log, fcjail.Metrics)
		}
		if seen[f.Name] {
			return invalid("jail_start: file %s is listed twice", f.Name)
		}
		seen[f.Name] = true
	}
	for i := range disks {
		if !seen[fcjail.DiskName(i)] {
			return invalid("jail_start: %d disks but no %s: disks are disk0, disk1, … in order", disks, fcjail.DiskName(i))
		}
	}
	for _, need := range []string{fcjail.Kernel, consoleFile, fcjail.Log, fcjail.Metrics, fcjail.DiskName(0)} {
		if !seen[need] {
			return invalid("jail_start: no %s among the files", need)
		}
	}
	return nil
}
