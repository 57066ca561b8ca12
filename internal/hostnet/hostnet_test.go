package hostnet

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// testNS makes a network namespace for the test and removes it afterwards: the tests change
// real links and nftables rules, never in the host's own namespace.
func testNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip)")
	}
	name := fmt.Sprintf("banger-hn-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func inNS(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func open(t *testing.T, ns string) *Net {
	t.Helper()
	n, err := Open(Config{Bridge: "bgtest0", CIDR: netip.MustParsePrefix("172.30.0.0/24"), NetNS: ns, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func TestBridgeTapAndNATLiveInTheNamespace(t *testing.T) {
	ns := testNS(t)
	n := open(t, ns)
	id := "0123456789abcdef"
	q, err := n.AddTap(id)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	links := inNS(t, ns, "ip", "-o", "link", "show")
	if !strings.Contains(links, "bgtest0") || !strings.Contains(links, TapName(id)+": ") || !strings.Contains(links, "master bgtest0") {
		t.Errorf("links in the namespace:\n%s\nwant the bridge and the tap attached to it", links)
	}
	if addrs := inNS(t, ns, "ip", "-o", "addr", "show", "bgtest0"); !strings.Contains(addrs, "172.30.0.1/24") {
		t.Errorf("bridge addresses: %s", addrs)
	}
	// Nothing leaked into the host's namespace.
	if _, err := netlink.LinkByName("bgtest0"); err == nil {
		t.Fatal("the bridge appeared in the host namespace")
	}
	// Idempotent: again is fine.
	if err := n.EnsureBridge(); err != nil {
		t.Fatal(err)
	}

	guests := []Guest{GuestOf(id, netip.MustParseAddr("172.30.0.2"), true), GuestOf("fedcba9876543210", netip.MustParseAddr("172.30.0.3"), true)}
	if err := n.SetGuests(guests); err != nil {
		t.Fatal(err)
	}
	if err := n.SetGuests(guests); err != nil {
		t.Fatalf("applying the same guests again: %v", err)
	}
	got, err := n.NATRules()
	if err != nil || len(got) != 2 || got[0] != guests[0].IP || got[1] != guests[1].IP {
		t.Errorf("NAT rules = %v, %v; want %v and %v", got, err, guests[0].IP, guests[1].IP)
	}
	if fwd := strings.TrimSpace(inNS(t, ns, "cat", ipForward)); fwd != "1" {
		t.Errorf("ip_forward in the namespace = %s, want 1 while VMs need NAT", fwd)
	}
	if err := n.SetGuests(guests[:1]); err != nil {
		t.Fatal(err)
	}
	if got, _ := n.NATRules(); len(got) != 1 {
		t.Errorf("after dropping one VM: %v", got)
	}
	if err := n.SetGuests(nil); err != nil {
		t.Fatal(err)
	}
	if st, err := n.Filter(); err != nil || st.Present || len(st.NAT) != 0 {
		t.Errorf("after the last VM: %+v %v, want no tables", st, err)
	}
	if tables := inNS(t, ns, "nft", "list", "tables"); strings.Contains(tables, TableName) {
		t.Errorf("tables after the last VM:\n%s", tables)
	}
	if fwd := strings.TrimSpace(inNS(t, ns, "cat", ipForward)); fwd != "0" {
		t.Errorf("ip_forward = %s, want it off again since banger turned it on", fwd)
	}

	if err := n.DeleteTap(id); err != nil {
		t.Fatal(err)
	}
	if err := n.DeleteTap(id); err != nil {
		t.Errorf("deleting a missing tap: %v", err)
	}
	if err := n.RemoveBridge(); err != nil {
		t.Fatal(err)
	}
	if links := inNS(t, ns, "ip", "-o", "link", "show"); strings.Contains(links, "bgtest0") {
		t.Errorf("bridge still there:\n%s", links)
	}
}

// AddTap hands back an open queue of the tap, made inside the namespace: the tap has carrier
// exactly while a queue is open, so the queue is the VMM's network device, and it does not
// leak into children that were not handed it (close-on-exec).
func TestAddTapReturnsAnOpenQueue(t *testing.T) {
	ns := testNS(t)
	n := open(t, ns)
	id := "0123456789abcdef"
	q, err := n.AddTap(id)
	if err != nil {
		t.Fatal(err)
	}
	if flags, err := unix.FcntlInt(q.Fd(), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("queue fd flags = %#x, %v; want close-on-exec", flags, err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(int(q.Fd()), unix.TUNGETIFF, ifr); err != nil {
		t.Fatal(err)
	}
	if got, want := ifr.Name(), TapName(id); got != want {
		t.Errorf("queue is attached to %q, want %q", got, want)
	}
	if got := ifr.Uint16(); got&tunQueueFlags != tunQueueFlags || got&unix.IFF_MULTI_QUEUE != 0 {
		t.Errorf("queue flags %#x, want IFF_TAP|IFF_NO_PI|IFF_VNET_HDR", got)
	}
	if !carrier(t, n, TapName(id)) {
		t.Error("the tap has no carrier while its queue is open")
	}

	// Again, as a restarted or resumed VM does: the stale tap (whose queue is still open) is
	// replaced by a fresh one with a queue of its own.
	q2, err := n.AddTap(id)
	if err != nil {
		t.Fatalf("AddTap over a tap whose queue is open: %v", err)
	}
	q.Close()
	if !carrier(t, n, TapName(id)) {
		t.Error("the new tap has no carrier while its queue is open")
	}
	q2.Close()
	if carrier(t, n, TapName(id)) {
		t.Error("the tap has carrier once its queue is closed; want none (nothing holds it)")
	}
	if taps, err := n.Taps(); err != nil || len(taps) != 1 {
		t.Errorf("taps = %v, %v; want the one persistent tap after its queue closed", taps, err)
	}
	if err := n.DeleteTap(id); err != nil {
		t.Fatal(err)
	}
}

// A bridge name taken by another kind of device makes AddTap fail, leaving no tap.
func TestAddTapFailureLeavesNoTap(t *testing.T) {
	ns := testNS(t)
	inNS(t, ns, "ip", "link", "add", "bgtest0", "type", "veth", "peer", "name", "bgtest1")
	n := open(t, ns)
	if q, err := n.AddTap("0123456789abcdef"); err == nil {
		q.Close()
		t.Fatal("AddTap with a veth as the bridge succeeded")
	}
	if taps, err := n.Taps(); err != nil || len(taps) != 0 {
		t.Errorf("taps after a failed AddTap = %v, %v; want none", taps, err)
	}
}

// carrier reports whether link name in n's namespace has carrier (IFF_LOWER_UP).
func carrier(t *testing.T, n *Net, name string) bool {
	t.Helper()
	var up bool
	err := n.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		up = l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return up
}

func TestForwardingLeftOnWhenItWasOnBefore(t *testing.T) {
	ns := testNS(t)
	inNS(t, ns, "sh", "-c", "echo 1 > "+ipForward)
	n := open(t, ns)
	if err := n.SetGuests([]Guest{GuestOf("x", netip.MustParseAddr("172.30.0.2"), true)}); err != nil {
		t.Fatal(err)
	}
	if err := n.SetGuests(nil); err != nil {
		t.Fatal(err)
	}
	if fwd := strings.TrimSpace(inNS(t, ns, "cat", ipForward)); fwd != "1" {
		t.Errorf("ip_forward = %s: banger must not turn off forwarding it did not turn on", fwd)
	}
}

func TestAddresses(t *testing.T) {
	n := &Net{cfg: Config{CIDR: netip.MustParsePrefix("172.16.0.0/29")}}
	if n.HostIP().String() != "172.16.0.1" {
		t.Errorf("host ip %s", n.HostIP())
	}
	var got []string
	for _, a := range n.GuestIPs() {
		got = append(got, a.String())
	}
	if strings.Join(got, " ") != "172.16.0.2 172.16.0.3 172.16.0.4 172.16.0.5 172.16.0.6" {
		t.Errorf("guest ips of a /29 = %v (network, host and broadcast excluded)", got)
	}
	for _, bad := range []string{"172.16.0.1/24", "10.0.0.0/8", "172.16.0.0/30", "::/64"} {
		p, _ := netip.ParsePrefix(bad)
		if ValidateCIDR(p) == nil {
			t.Errorf("ValidateCIDR(%s) accepted", bad)
		}
	}
	if TapName("0123456789abcdef") != "bg0123456789ab" || len(TapName("0123456789abcdef")) > 15 {
		t.Errorf("tap name %q", TapName("0123456789abcdef"))
	}
	if m := MAC("x"); m[0]&0x02 == 0 || m[0]&0x01 != 0 || MAC("x").String() != m.String() || MAC("y").String() == m.String() {
		t.Errorf("MAC %s: want locally administered unicast, stable per id, different per VM", m)
	}
}

// TestAddTapWhileChildrenStart makes taps while other goroutines start processes, as a daemon
// making clones at once starts their VMMs: a child started between the moment a tap's creating
// descriptor is opened and the moment it is closed holds that descriptor until it executes, and
// a tap whose creator only then opened its queue found the queue taken (TUNSETIFF: EBUSY; a vm
// fork -n 8 failed so). AddTap keeps the descriptor that made the tap as the queue it returns.
func TestAddTapWhileChildrenStart(t *testing.T) {
	ns := testNS(t)
	n := open(t, ns)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = exec.Command("/bin/true").Run()
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 300 {
		id := fmt.Sprintf("%016x", i)
		q, err := n.AddTap(id)
		if err != nil {
			t.Fatalf("tap %d: %v", i, err)
		}
		q.Close()
		if err := n.DeleteTap(id); err != nil {
			t.Fatal(err)
		}
	}
}
