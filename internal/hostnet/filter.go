package hostnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Guest is one VM as the packet filter sees it: the bridge port it sits behind and the only
// addresses it may send from.
type Guest struct {
	Tap string           // its tap device (a port of the bridge)
	MAC net.HardwareAddr // the only Ethernet source address accepted from Tap
	IP  netip.Addr       // the only IPv4 source address accepted from Tap
	NAT bool             // may leave through the uplink, masqueraded behind the host
}

// GuestOf is the Guest of VM vmID with address ip: its tap and MAC are derived from the id.
func GuestOf(vmID string, ip netip.Addr, nat bool) Guest {
	return Guest{Tap: TapName(vmID), MAC: MAC(vmID), IP: ip, NAT: nat}
}

// natSet is the named set of the NAT guests' addresses in the inet table.
const natSet = "nat_guests"

// SetGuests makes banger's packet filter exactly what guests is allowed, in one atomic batch:
//
//   - table bridge banger, hook prerouting: a frame entering the bridge from a guest's tap must
//     carry that guest's MAC as Ethernet source and be either IPv4 from the guest's own address
//     or a well-formed Ethernet/IPv4 ARP packet whose sender MAC and address are the guest's;
//     anything else (other addresses, IPv6, VLAN tags, other protocols) is dropped, and so is
//     every frame from a port of the bridge, or a port named like a banger tap (bg…), that
//     belongs to no guest.
//   - table inet banger, hook input: from the bridge the host accepts only replies to its own
//     connections (conntrack established/related), DNS (UDP and TCP 53) to its bridge address
//     and the ports of Config.OpenPorts; the rest is dropped.
//   - hook forward: bridge to bridge (guest to guest) passes; NAT guests may leave through the
//     uplinks (the interfaces of the IPv4 default routes) and get the replies back; everything
//     else from or to the bridge is dropped. Forwarding that does not involve the bridge is not
//     touched.
//   - hook postrouting: NAT guests are masqueraded behind the uplink's address.
//
// An empty list removes both tables (and the table of older banger versions). IP forwarding
// is turned on while a NAT guest exists (and off again if banger turned it on). Guests are
// remembered so that ReapplyFilter can follow a changed default route.
func (n *Net) SetGuests(guests []Guest) error {
	if err := n.checkGuests(guests); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.guests = slices.Clone(guests)
	return n.Do(func() error { return n.applyFilter(guests) })
}

// ReapplyFilter writes the last SetGuests list again, with the uplinks as they are now.
func (n *Net) ReapplyFilter() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	guests := n.guests
	return n.Do(func() error { return n.applyFilter(guests) })
}

func (n *Net) checkGuests(guests []Guest) error {
	taps := map[string]bool{}
	ips := map[netip.Addr]bool{}
	for _, g := range guests {
		switch {
		case g.Tap == "" || len(g.Tap) > 15:
			return fmt.Errorf("guest tap %q: want 1-15 characters", g.Tap)
		case len(g.MAC) != 6:
			return fmt.Errorf("guest on %s: MAC %q is not a 6-byte Ethernet address", g.Tap, g.MAC)
		case !g.IP.Is4() || !n.cfg.CIDR.Contains(g.IP) || g.IP == n.HostIP():
			return fmt.Errorf("guest on %s: address %s is not a guest address of %s", g.Tap, g.IP, n.cfg.CIDR)
		case taps[g.Tap] || ips[g.IP]:
			return fmt.Errorf("guest on %s (%s): tap or address listed twice", g.Tap, g.IP)
		}
		taps[g.Tap], ips[g.IP] = true, true
	}
	return nil
}

// applyFilter runs inside the namespace with n.mu held.
func (n *Net) applyFilter(guests []Guest) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer conn.CloseLasting()
	uplinks, err := n.uplinks()
	if err != nil {
		return err
	}
	// Delete and re-create in one transaction: packets never meet a half-built filter. The
	// ip-family table is what banger before the filter used for NAT.
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge, nftables.TableFamilyINet} {
		if t, _ := conn.ListTableOfFamily(TableName, fam); t != nil {
			conn.DelTable(t)
		}
	}
	anyNAT := false
	if len(guests) > 0 {
		ports, err := n.bridgePorts()
		if err != nil {
			return err
		}
		var others []string
		for _, p := range ports {
			if !slices.ContainsFunc(guests, func(g Guest) bool { return g.Tap == p }) {
				others = append(others, p)
			}
		}
		n.addBridgeTable(conn, guests, others)
		anyNAT, err = n.addInetTable(conn, guests, uplinks)
		if err != nil {
			return err
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("apply nftables tables bridge %s and inet %s: %w", TableName, TableName, err)
	}
	return n.setForwarding(anyNAT)
}

// uplinks are the interfaces of the IPv4 default routes (sorted, never the bridge).
func (n *Net) uplinks() ([]string, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list IPv4 routes: %w", err)
	}
	var out []string
	for _, r := range routes {
		if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && net.IP(r.Dst.Mask).IsUnspecified()) {
			continue
		}
		idx := []int{r.LinkIndex}
		for _, nh := range r.MultiPath {
			idx = append(idx, nh.LinkIndex)
		}
		for _, i := range idx {
			if i == 0 {
				continue
			}
			l, err := netlink.LinkByIndex(i)
			if err != nil || l.Attrs().Name == n.cfg.Bridge || slices.Contains(out, l.Attrs().Name) {
				continue
			}
			out = append(out, l.Attrs().Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (n *Net) addBridgeTable(conn *nftables.Conn, guests []Guest, others []string) {
	t := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: TableName})
	pre := conn.AddChain(&nftables.Chain{
		Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter,
	})
	for _, g := range guests {
		ch := conn.AddChain(&nftables.Chain{Name: "from_" + g.Tap, Table: t})
		conn.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: concat(
			ifnameIs(expr.MetaKeyIIFNAME, g.Tap), verdict(expr.VerdictGoto, ch.Name))})
		mac, ip := []byte(g.MAC), g.IP.As4()
		rules := [][]expr.Any{
			// ether saddr != MAC drop
			concat(load(expr.PayloadBaseLLHeader, 6, 6), cmp(expr.CmpOpNeq, mac), drop()),
			// ARP: Ethernet/IPv4 only, sender MAC and address the guest's own.
			concat(etherType(unix.ETH_P_ARP), load(expr.PayloadBaseNetworkHeader, 0, 6),
				cmp(expr.CmpOpNeq, []byte{0, 1, 8, 0, 6, 4}), drop()),
			concat(etherType(unix.ETH_P_ARP), load(expr.PayloadBaseNetworkHeader, 8, 6), cmp(expr.CmpOpNeq, mac), drop()),
			concat(etherType(unix.ETH_P_ARP), load(expr.PayloadBaseNetworkHeader, 14, 4), cmp(expr.CmpOpNeq, ip[:]), drop()),
			concat(etherType(unix.ETH_P_ARP), accept()),
			// IPv4 from its own address.
			concat(etherType(unix.ETH_P_IP), load(expr.PayloadBaseNetworkHeader, 12, 4), cmp(expr.CmpOpEq, ip[:]), accept()),
			drop(),
		}
		for _, r := range rules {
			conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
		}
	}
	// A port that is no known guest's tap gets nothing in: every port named like a banger tap
	// (banger owns the "bg" prefix: it already removes stray bg taps), and every other port
	// of banger's bridge as it is now. (Matching the bridge itself, meta ibrname, needs
	// nft_meta_bridge, which not every kernel has.)
	conn.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: concat(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, cmp(expr.CmpOpEq, []byte("bg")), drop())})
	for _, port := range others {
		conn.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: concat(ifnameIs(expr.MetaKeyIIFNAME, port), drop())})
	}
}

// bridgePorts lists the devices attached to banger's bridge (none if it does not exist).
func (n *Net) bridgePorts() ([]string, error) {
	br, err := netlink.LinkByName(n.cfg.Bridge)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", n.cfg.Bridge, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

func (n *Net) addInetTable(conn *nftables.Conn, guests []Guest, uplinks []string) (anyNAT bool, err error) {
	t := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName})
	set := &nftables.Set{Table: t, Name: natSet, KeyType: nftables.TypeIPAddr}
	var elems []nftables.SetElement
	for _, g := range guests {
		if g.NAT {
			a := g.IP.As4()
			elems = append(elems, nftables.SetElement{Key: a[:]})
		}
	}
	if err := conn.AddSet(set, elems); err != nil {
		return false, fmt.Errorf("nftables set %s: %w", natSet, err)
	}
	br := n.cfg.Bridge
	host := n.HostIP().As4()

	// Input from the guests.
	input := conn.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	fromGuests := conn.AddChain(&nftables.Chain{Name: "input_from_guests", Table: t})
	conn.AddRule(&nftables.Rule{Table: t, Chain: input, Exprs: concat(ifnameIs(expr.MetaKeyIIFNAME, br), verdict(expr.VerdictGoto, fromGuests.Name))})
	in := [][]expr.Any{concat(ctEstablishedOrRelated(), accept())}
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		in = append(in, concat(ipv4(), load(expr.PayloadBaseNetworkHeader, 16, 4), cmp(expr.CmpOpEq, host[:]), l4(proto), dport(53), accept()))
		for _, p := range n.cfg.OpenPorts {
			in = append(in, concat(l4(proto), dport(p), accept()))
		}
	}
	in = append(in, drop())
	for _, r := range in {
		conn.AddRule(&nftables.Rule{Table: t, Chain: fromGuests, Exprs: r})
	}

	// Forwarding.
	fwd := conn.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	})
	fr := [][]expr.Any{
		// Guest to guest (seen here only when br_netfilter sends bridged frames through IP hooks).
		concat(ifnameIs(expr.MetaKeyIIFNAME, br), ifnameIs(expr.MetaKeyOIFNAME, br), accept()),
		concat(ifnameIs(expr.MetaKeyOIFNAME, br), ctEstablishedOrRelated(), accept()),
	}
	for _, up := range uplinks {
		fr = append(fr, concat(ifnameIs(expr.MetaKeyIIFNAME, br), ifnameIs(expr.MetaKeyOIFNAME, up), ipv4(),
			load(expr.PayloadBaseNetworkHeader, 12, 4), &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID}, accept()))
	}
	fr = append(fr,
		concat(ifnameIs(expr.MetaKeyIIFNAME, br), drop()),
		concat(ifnameIs(expr.MetaKeyOIFNAME, br), drop()))
	for _, r := range fr {
		conn.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: r})
	}

	// Masquerade.
	post := conn.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	for _, up := range uplinks {
		conn.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(ifnameIs(expr.MetaKeyOIFNAME, up), ipv4(),
			load(expr.PayloadBaseNetworkHeader, 12, 4), &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID}, &expr.Masq{})})
	}
	return len(elems) > 0, nil
}

// FilterState is what banger's packet filter currently holds (for doctor and tests).
type FilterState struct {
	Present bool         // the tables exist
	Guests  int          // taps with anti-spoofing rules
	NAT     []netip.Addr // guests allowed out through the uplinks, masqueraded
	Uplinks []string     // interfaces NAT guests may leave through (the default routes')
	Legacy  bool         // the table of banger before the filter (NAT only) is still there
}

// Filter reads banger's tables back from the kernel.
func (n *Net) Filter() (FilterState, error) {
	var st FilterState
	err := n.Do(func() error {
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		defer conn.CloseLasting()
		if t, _ := conn.ListTableOfFamily(TableName, nftables.TableFamilyIPv4); t != nil {
			st.Legacy = true
		}
		bt, _ := conn.ListTableOfFamily(TableName, nftables.TableFamilyBridge)
		it, _ := conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
		if bt == nil || it == nil {
			return nil
		}
		st.Present = true
		chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyBridge)
		if err != nil {
			return fmt.Errorf("list bridge chains: %w", err)
		}
		for _, c := range chains {
			if c.Table.Name == TableName && c.Hooknum == nil {
				st.Guests++
			}
		}
		set, err := conn.GetSetByName(it, natSet)
		if err != nil {
			return fmt.Errorf("read set %s: %w", natSet, err)
		}
		elems, err := conn.GetSetElements(set)
		if err != nil {
			return fmt.Errorf("read set %s: %w", natSet, err)
		}
		for _, e := range elems {
			if len(e.Key) == 4 {
				st.NAT = append(st.NAT, netip.AddrFrom4([4]byte(e.Key)))
			}
		}
		slices.SortFunc(st.NAT, func(a, b netip.Addr) int { return a.Compare(b) })
		rules, err := conn.GetRules(it, &nftables.Chain{Name: "postrouting", Table: it})
		if err != nil {
			return fmt.Errorf("read postrouting rules: %w", err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if c, ok := e.(*expr.Cmp); ok && len(c.Data) == 16 {
					st.Uplinks = append(st.Uplinks, string(trimNUL(c.Data)))
					break
				}
			}
		}
		return nil
	})
	return st, err
}

// NATRules lists the addresses of the guests allowed out, masqueraded (for tests and doctor).
func (n *Net) NATRules() ([]netip.Addr, error) {
	st, err := n.Filter()
	return st.NAT, err
}

func trimNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

// uplinkReapplied, when set (by tests), is called after each re-apply WatchUplink makes for a
// default route change, whether or not it failed.
var uplinkReapplied atomic.Pointer[func()]

// WatchUplink re-applies the filter whenever an IPv4 default route appears or goes, so NAT
// guests follow the host to a new uplink. It returns when done is closed; errors of a
// re-apply go to report.
func (n *Net) WatchUplink(done <-chan struct{}, report func(error)) error {
	updates := make(chan netlink.RouteUpdate, 16)
	opts := netlink.RouteSubscribeOptions{ErrorCallback: func(err error) {
		select {
		case <-done: // the socket closing on the way out is no news
		default:
			if report != nil {
				report(fmt.Errorf("watch routes for uplink changes: %w", err))
			}
		}
	}}
	if n.ns.IsOpen() {
		opts.Namespace = &n.ns
	}
	if err := netlink.RouteSubscribeWithOptions(updates, done, opts); err != nil {
		return fmt.Errorf("watch routes for uplink changes: %w", err)
	}
	go func() {
		for u := range updates {
			if u.Family != netlink.FAMILY_V4 || (u.Dst != nil && !(u.Dst.IP.IsUnspecified() && net.IP(u.Dst.Mask).IsUnspecified())) {
				continue
			}
			if err := n.ReapplyFilter(); err != nil && report != nil {
				report(fmt.Errorf("re-apply the packet filter after a default route change: %w", err))
			}
			if f := uplinkReapplied.Load(); f != nil {
				(*f)()
			}
		}
	}()
	return nil
}

// Expression helpers. Every rule loads into register 1.

func concat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		default:
			panic(fmt.Sprintf("concat: %T", p))
		}
	}
	return out
}

func load(base expr.PayloadBase, off, n uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}}
}

func cmp(op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{&expr.Cmp{Op: op, Register: 1, Data: data}}
}

func ifnameIs(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)}}
}

func etherType(t uint16) []expr.Any {
	return concat(load(expr.PayloadBaseLLHeader, 12, 2), cmp(expr.CmpOpEq, binary.BigEndian.AppendUint16(nil, t)))
}

func ipv4() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}}}
}

func l4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}}}
}

func dport(p uint16) []expr.Any {
	return concat(load(expr.PayloadBaseTransportHeader, 2, 2), cmp(expr.CmpOpEq, binary.BigEndian.AppendUint16(nil, p)))
}

func ctEstablishedOrRelated() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
			Xor:  []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func verdict(k expr.VerdictKind, chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k, Chain: chain}}
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func drop() []expr.Any   { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }
