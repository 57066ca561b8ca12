package hostnet

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// TableName is banger's nftables table; nothing else in the ruleset is touched.
const TableName = "banger"

// forwardMarker records that banger turned IP forwarding on, so it turns it off again only
// then (and the marker survives daemon restarts).
const forwardMarker = "ip_forward.banger"

// SetNAT makes the masquerade rules exactly: traffic from each of ips leaving through any
// interface but the bridge is masqueraded. An empty list removes banger's table. IP
// forwarding is turned on while any VM needs it (and back off if banger turned it on). It is
// idempotent and replaces the rules in one atomic batch.
func (n *Net) SetNAT(ips []netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.Do(func() error {
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		defer conn.CloseLasting()
		table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
		// Delete and re-create in one transaction: readers never see a half-built table.
		if existing, _ := conn.ListTableOfFamily(TableName, nftables.TableFamilyIPv4); existing != nil {
			conn.DelTable(table)
		}
		if len(ips) > 0 {
			conn.AddTable(table)
			chain := conn.AddChain(&nftables.Chain{
				Name:     "postrouting",
				Table:    table,
				Type:     nftables.ChainTypeNAT,
				Hooknum:  nftables.ChainHookPostrouting,
				Priority: nftables.ChainPriorityNATSource,
			})
			for _, ip := range ips {
				conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: masqueradeFrom(ip, n.cfg.Bridge)})
			}
		}
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("apply nftables rules in table %s: %w", TableName, err)
		}
		return n.setForwarding(len(ips) > 0)
	})
}

// masqueradeFrom is `ip saddr IP oifname != BRIDGE masquerade`.
func masqueradeFrom(ip netip.Addr, bridge string) []expr.Any {
	a := ip.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(bridge)},
		&expr.Masq{},
	}
}

// ifname is an interface name as nftables compares it: NUL-padded to 16 bytes.
func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

// NATRules lists the source addresses banger's table masquerades (for tests and doctor).
func (n *Net) NATRules() ([]netip.Addr, error) {
	var out []netip.Addr
	err := n.Do(func() error {
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		defer conn.CloseLasting()
		table, err := conn.ListTableOfFamily(TableName, nftables.TableFamilyIPv4)
		if err != nil || table == nil {
			return nil // no table: no rules
		}
		rules, err := conn.GetRules(table, &nftables.Chain{Name: "postrouting", Table: table})
		if err != nil {
			return err
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if c, ok := e.(*expr.Cmp); ok && len(c.Data) == 4 {
					out = append(out, netip.AddrFrom4([4]byte(c.Data)))
				}
			}
		}
		return nil
	})
	return out, err
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
