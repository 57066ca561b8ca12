package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"
)

// Limits of a Renewal's fields besides those of the protocol's constants.
const (
	maxHostname    = 63       // a DNS label
	maxHostKeyFile = 64 << 10 // an RSA-16384 private key is about 12 KiB
	maxDNS         = 3        // resolv.conf's MAXNS
	hostKeyDir     = "/etc/ssh/"
)

// Validate checks every field of r against the protocol's rules without applying anything:
// the agent refuses a renewal as a whole when it returns an error, and the host checks what
// it sends with it. The error names the first invalid field.
func (r Renewal) Validate() error {
	if n := len(r.Entropy); n != 0 && (n < MinEntropy || n > MaxEntropy) {
		return fmt.Errorf("renewal: %d bytes of entropy, want %d to %d", n, MinEntropy, MaxEntropy)
	}
	if r.Hostname != "" && !isDNSLabel(r.Hostname) {
		return fmt.Errorf("renewal: hostname %q is not a DNS label (1-%d letters, digits and inner hyphens)", r.Hostname, maxHostname)
	}
	if r.MachineID != "" && !isMachineID(r.MachineID) {
		return fmt.Errorf("renewal: machine id %q is not 32 lowercase hex digits", r.MachineID)
	}
	if r.Network != nil {
		if _, err := r.Network.Parse(); err != nil {
			return fmt.Errorf("renewal: %w", err)
		}
	}
	if len(r.HostKeys) > MaxRenewalFiles {
		return fmt.Errorf("renewal: %d host key files, at most %d", len(r.HostKeys), MaxRenewalFiles)
	}
	for _, f := range r.HostKeys {
		if !strings.HasPrefix(f.Path, hostKeyDir) || path.Clean(f.Path) != f.Path || strings.ContainsRune(f.Path, 0) {
			return fmt.Errorf("renewal: host key path %q is not a clean absolute path under %s", f.Path, hostKeyDir)
		}
		if f.Mode&^0o777 != 0 || f.DirMode&^0o777 != 0 {
			return fmt.Errorf("renewal: host key %s: mode %#o/%#o holds more than permission bits", f.Path, f.Mode, f.DirMode)
		}
		if len(f.Data) == 0 || len(f.Data) > maxHostKeyFile {
			return fmt.Errorf("renewal: host key %s is %d bytes, want 1 to %d", f.Path, len(f.Data), maxHostKeyFile)
		}
	}
	return nil
}

// ParsedNetwork is a NetworkIdentity checked and parsed.
type ParsedNetwork struct {
	OldMAC, MAC net.HardwareAddr
	Address     netip.Prefix // the guest's address and its network's length
	Gateway     netip.Addr
	DNS         []netip.Addr
}

// Parse checks n: MACs that are Ethernet unicast addresses, an IPv4 Address in CIDR form
// that is neither the network's nor its broadcast address, a Gateway inside it other than
// the address itself, and at most 3 resolvers (resolv.conf reads no more).
func (n NetworkIdentity) Parse() (ParsedNetwork, error) {
	var p ParsedNetwork
	var err error
	if p.OldMAC, err = unicastMAC(n.OldMAC); err != nil {
		return p, fmt.Errorf("old MAC: %w", err)
	}
	if p.MAC, err = unicastMAC(n.MAC); err != nil {
		return p, fmt.Errorf("MAC: %w", err)
	}
	if p.Address, err = netip.ParsePrefix(n.Address); err != nil || !p.Address.Addr().Is4() || p.Address.Bits() < 1 || p.Address.Bits() > 30 {
		return p, fmt.Errorf("address %q: want an IPv4 address with its network's length, e.g. 172.16.0.5/24", n.Address)
	}
	a, net4 := p.Address.Addr(), p.Address.Masked()
	if a == net4.Addr() || a == broadcast(net4) || !a.IsGlobalUnicast() {
		return p, fmt.Errorf("address %q: not a host address of its network", n.Address)
	}
	if p.Gateway, err = netip.ParseAddr(n.Gateway); err != nil || !p.Gateway.Is4() || !net4.Contains(p.Gateway) || p.Gateway == a ||
		p.Gateway == net4.Addr() || p.Gateway == broadcast(net4) {
		return p, fmt.Errorf("gateway %q: want another host address of %s", n.Gateway, net4)
	}
	if len(n.DNS) > maxDNS {
		return p, fmt.Errorf("%d resolvers, at most %d", len(n.DNS), maxDNS)
	}
	for _, s := range n.DNS {
		d, err := netip.ParseAddr(s)
		if err != nil || d.Zone() != "" || d.IsUnspecified() || d.IsMulticast() {
			return p, fmt.Errorf("resolver %q: want an IP address", s)
		}
		p.DNS = append(p.DNS, d)
	}
	return p, nil
}

// unicastMAC parses an Ethernet (6-byte) MAC that is not a group address.
func unicastMAC(s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 {
		return nil, fmt.Errorf("%q is not an Ethernet MAC address", s)
	}
	if m[0]&1 != 0 {
		return nil, fmt.Errorf("%s is a multicast address", m)
	}
	if string(m) == "\x00\x00\x00\x00\x00\x00" {
		return nil, errors.New("00:00:00:00:00:00 is not an interface's address")
	}
	return m, nil
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	b[0] |= byte(host >> 24)
	b[1] |= byte(host >> 16)
	b[2] |= byte(host >> 8)
	b[3] |= byte(host)
	return netip.AddrFrom4(b)
}

// isDNSLabel reports whether s is a host name label (RFC 1123): letters, digits and hyphens,
// not starting or ending with a hyphen, 1 to 63 bytes.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > maxHostname || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isMachineID(s string) bool {
	if len(s) != 32 || s == strings.Repeat("0", 32) {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
