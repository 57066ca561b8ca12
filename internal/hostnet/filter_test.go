package hostnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// doIn runs fn on a thread inside network namespace ns (a name under /run/netns).
func doIn(t *testing.T, ns string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in namespace %s: %v", ns, err)
	}
}

// sink records every UDP datagram a socket receives: payload → source address.
type sink struct {
	mu   sync.Mutex
	cond *sync.Cond
	got  map[string]netip.Addr
}

func listenUDP(t *testing.T, ns, addr string) *sink {
	t.Helper()
	var pc net.PacketConn
	doIn(t, ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", addr)
		return err
	})
	t.Cleanup(func() { pc.Close() })
	s := &sink{got: map[string]netip.Addr{}}
	s.cond = sync.NewCond(&s.mu)
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got[string(buf[:n])] = from.(*net.UDPAddr).AddrPort().Addr().Unmap()
			s.cond.Broadcast()
			s.mu.Unlock()
		}
	}()
	return s
}

// wait returns the source of datagram tag once it arrived; the test fails if it does not
// within a minute (a packet the filter must let through).
func (s *sink) wait(t *testing.T, tag string) netip.Addr {
	t.Helper()
	timer := time.AfterFunc(time.Minute, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(time.Minute)
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if a, ok := s.got[tag]; ok {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("datagram %q never arrived; the filter must let it through", tag)
		}
		s.cond.Wait()
	}
}

func (s *sink) saw(tag string) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.got[tag]
	return a, ok
}

// send sends one datagram from namespace ns, from src ("" for the kernel's choice) to dst.
func send(t *testing.T, ns, src, dst, tag string) {
	t.Helper()
	doIn(t, ns, func() error {
		var laddr *net.UDPAddr
		if src != "" {
			laddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		raddr, err := net.ResolveUDPAddr("udp4", dst)
		if err != nil {
			return err
		}
		c, err := net.DialUDP("udp4", laddr, raddr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(tag))
		return err
	})
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// peerNS makes a namespace connected to namespace host by a veth pair: hostEnd stays in
// host, eth0 goes into the new namespace with address addr and MAC mac ("" to keep its own).
func peerNS(t *testing.T, host, name, hostEnd, addr, mac string) {
	t.Helper()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", host, "link", "add", hostEnd, "type", "veth", "peer", "name", "eth0", "netns", name)
	if mac != "" {
		run(t, "ip", "-n", name, "link", "set", "eth0", "address", mac)
	}
	run(t, "ip", "-n", name, "addr", "add", addr, "dev", "eth0")
	run(t, "ip", "-n", name, "link", "set", "eth0", "up")
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	run(t, "ip", "-n", host, "link", "set", hostEnd, "up")
}

// TestFilterLetsGuestsOnlyWhereTheyBelong builds, in namespaces of its own, banger's bridge
// with three "guests" (veth peers in namespaces standing in for VMs: a NAT one, a --no-nat
// one, and a stray port no guest owns) and an "outside" namespace behind the host's default
// route, applies the filter, and checks with real datagrams what gets where. Each packet
// that must be dropped is followed by one that must pass the same way; only once that
// arrived is the first one checked.
func TestFilterLetsGuestsOnlyWhereTheyBelong(t *testing.T) {
	host := testNS(t)
	pid := os.Getpid()
	nsA, nsB, nsC, nsOut := fmt.Sprintf("bgf-a-%d", pid), fmt.Sprintf("bgf-b-%d", pid), fmt.Sprintf("bgf-c-%d", pid), fmt.Sprintf("bgf-o-%d", pid)
	n, err := Open(Config{Bridge: "bgtest0", CIDR: netip.MustParsePrefix("172.30.0.0/24"), NetNS: host, StateDir: t.TempDir(), OpenPorts: []uint16{7002}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.EnsureBridge(); err != nil {
		t.Fatal(err)
	}
	a := Guest{Tap: "bgaaaa", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, IP: netip.MustParseAddr("172.30.0.2"), NAT: true}
	b := Guest{Tap: "bgbbbb", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0xb}, IP: netip.MustParseAddr("172.30.0.3")}
	for _, p := range []struct {
		ns string
		g  Guest
	}{{nsA, a}, {nsB, b}, {nsC, Guest{Tap: "bgcccc", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0xc}, IP: netip.MustParseAddr("172.30.0.4")}}} {
		peerNS(t, host, p.ns, p.g.Tap, p.g.IP.String()+"/24", p.g.MAC.String())
		run(t, "ip", "-n", host, "link", "set", p.g.Tap, "master", "bgtest0")
		run(t, "ip", "-n", p.ns, "route", "add", "default", "via", "172.30.0.1")
	}
	// The outside world: the host's default route goes there, and it routes the guests'
	// subnet back to the host, as a LAN router with a static route would (so un-NATed
	// traffic would get answers).
	peerNS(t, host, nsOut, "up0", "10.99.0.2/24", "")
	run(t, "ip", "-n", host, "addr", "add", "10.99.0.1/24", "dev", "up0")
	run(t, "ip", "-n", host, "route", "add", "default", "via", "10.99.0.2")
	run(t, "ip", "-n", nsOut, "route", "add", "172.30.0.0/24", "via", "10.99.0.1")

	if err := n.SetGuests([]Guest{a, b}); err != nil {
		t.Fatal(err)
	}
	defer n.SetGuests(nil)
	if st, err := n.Filter(); err != nil || !st.Present || st.Guests != 2 || len(st.NAT) != 1 || st.NAT[0] != a.IP || strings.Join(st.Uplinks, ",") != "up0" {
		t.Fatalf("filter state %+v, %v; want 2 guests, NAT for %s, uplink up0", st, err, a.IP)
	}

	outside := listenUDP(t, nsOut, "10.99.0.2:7000")
	dns := listenUDP(t, host, "172.30.0.1:53")
	closed := listenUDP(t, host, ":7001")
	open := listenUDP(t, host, ":7002")
	atB := listenUDP(t, nsB, ":7003")
	atA := listenUDP(t, nsA, ":7004")

	// The NAT guest reaches the outside, masqueraded behind the uplink's address.
	send(t, nsA, "", "10.99.0.2:7000", "a-out")
	if from := outside.wait(t, "a-out"); from.String() != "10.99.0.1" {
		t.Errorf("the outside saw the NAT guest's datagram from %s, want the uplink address 10.99.0.1", from)
	}
	// Guests reach banger's DNS and the opened port; B's first datagram also resolves the
	// gateway's MAC with an honest ARP request.
	send(t, nsB, "", "172.30.0.1:53", "b-dns")
	dns.wait(t, "b-dns")
	send(t, nsA, "", "172.30.0.1:7002", "a-open")
	open.wait(t, "a-open")
	// VM to VM.
	send(t, nsA, "", "172.30.0.3:7003", "a-to-b")
	atB.wait(t, "a-to-b")

	// Dropped: the --no-nat guest going out; the --no-nat guest sending as the NAT guest
	// (which the old rules masqueraded); a guest at a host port nobody opened, on the bridge
	// address and on the uplink's; the outside reaching in unasked; a port of the bridge no
	// guest owns.
	send(t, nsB, "", "10.99.0.2:7000", "b-out")
	run(t, "ip", "-n", nsB, "addr", "add", a.IP.String()+"/32", "dev", "eth0")
	send(t, nsB, a.IP.String(), "10.99.0.2:7000", "b-as-a-out")
	run(t, "ip", "-n", nsB, "addr", "del", a.IP.String()+"/32", "dev", "eth0")
	send(t, nsA, "", "172.30.0.1:7001", "a-closed")
	send(t, nsA, "", "10.99.0.1:7001", "a-closed-uplink")
	send(t, nsOut, "", "172.30.0.2:7004", "out-to-a")
	send(t, nsC, "", "172.30.0.1:53", "stray-dns")
	// A guest sending with another MAC.
	run(t, "ip", "-n", nsB, "link", "set", "eth0", "address", "02:00:00:00:00:0d")
	send(t, nsB, "", "172.30.0.1:53", "b-other-mac")
	run(t, "ip", "-n", nsB, "link", "set", "eth0", "address", b.MAC.String())

	// Barriers: the same paths, allowed.
	send(t, nsA, "", "10.99.0.2:7000", "a-out-2")
	outside.wait(t, "a-out-2")
	send(t, nsA, "", "172.30.0.1:53", "a-dns")
	dns.wait(t, "a-dns")
	send(t, nsA, "", "172.30.0.1:7002", "a-open-2")
	open.wait(t, "a-open-2")
	send(t, nsB, "", "172.30.0.2:7004", "b-to-a")
	atA.wait(t, "b-to-a")

	for _, c := range []struct {
		s    *sink
		tag  string
		what string
	}{
		{outside, "b-out", "the --no-nat guest reached the outside"},
		{outside, "b-as-a-out", "the --no-nat guest, spoofing the NAT guest's address, reached the outside"},
		{closed, "a-closed", "a guest reached a host port that is not open to guests"},
		{closed, "a-closed-uplink", "a guest reached a closed host port on the uplink's address"},
		{atA, "out-to-a", "the outside reached a guest without the guest asking"},
		{dns, "stray-dns", "a bridge port that is no guest's tap got traffic in"},
		{dns, "b-other-mac", "a guest sending with a MAC not its own got traffic in"},
	} {
		if from, ok := c.s.saw(c.tag); ok {
			t.Errorf("%s (datagram %q arrived from %s)", c.what, c.tag, from)
		}
	}

	if t.Failed() {
		out, _ := exec.Command("ip", "netns", "exec", host, "nft", "list", "ruleset").CombinedOutput()
		t.Logf("ruleset:\n%s", out)
	}

	// NAT guests follow the default route: away and back. The watcher says when it has
	// re-applied the filter; a route change may come as more than one update, so the test
	// looks at the filter after each re-apply until it is as wanted.
	reapplied := make(chan struct{}, 16)
	notify := func() {
		select {
		case reapplied <- struct{}{}:
		default: // the test is behind: it looks at the filter after the one it waits for
		}
	}
	uplinkReapplied.Store(&notify)
	defer uplinkReapplied.Store(nil)
	done := make(chan struct{})
	defer close(done)
	if err := n.WatchUplink(done, func(err error) { t.Errorf("uplink watch: %v", err) }); err != nil {
		t.Fatal(err)
	}
	uplinks := func(want string) {
		t.Helper()
		guard := time.After(time.Minute) // a guard against hanging, not a timing check
		var st FilterState
		for {
			select {
			case <-reapplied:
			case <-guard:
				t.Fatalf("uplinks %v (%v), want %q after the default route changed", st.Uplinks, err, want)
			}
			if st, err = n.Filter(); err == nil && strings.Join(st.Uplinks, ",") == want {
				return
			}
		}
	}
	run(t, "ip", "-n", host, "route", "del", "default")
	uplinks("")
	run(t, "ip", "-n", host, "route", "add", "default", "via", "10.99.0.2")
	uplinks("up0")

	// Teardown leaves nothing.
	if err := n.SetGuests(nil); err != nil {
		t.Fatal(err)
	}
	if tables := inNS(t, host, "nft", "list", "tables"); strings.Contains(tables, TableName) {
		t.Errorf("tables left after the last guest:\n%s", tables)
	}
}
