package hostnet

import (
	"fmt"
	"os"
	"strings"
)

// TableName names banger's nftables tables (bridge banger and inet banger); nothing else in
// the ruleset is touched.
const TableName = "banger"

// forwardMarker records that banger turned IP forwarding on, so it turns it off again only
// then (and the marker survives daemon restarts).
const forwardMarker = "ip_forward.banger"

// ifname is an interface name as nftables compares it: NUL-padded to 16 bytes.
func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// setForwarding turns IPv4 forwarding on when needed, remembering that banger did, and off
// when no VM needs it any more, but only if banger was the one that turned it on. It runs
// inside the namespace (the sysctl is per namespace).
func (n *Net) setForwarding(on bool) error {
	cur, err := os.ReadFile(ipForward)
	if err != nil {
		return fmt.Errorf("read %s: %w", ipForward, err)
	}
	enabled := strings.TrimSpace(string(cur)) == "1"
	marker := n.markerPath(forwardMarker)
	switch {
	case on && !enabled:
		if err := os.WriteFile(ipForward, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("turn IP forwarding on (%s): %w", ipForward, err)
		}
		return os.WriteFile(marker, []byte("banger turned net.ipv4.ip_forward on\n"), 0o600)
	case !on && enabled && exists(marker):
		if err := os.WriteFile(ipForward, []byte("0\n"), 0o644); err != nil {
			return fmt.Errorf("turn IP forwarding off (%s): %w", ipForward, err)
		}
		return os.Remove(marker)
	}
	return nil
}
