package guestagent

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/agent"
)

// inNamespace runs f on a locked thread inside the network namespace ns, then moves the
// thread back. A thread that cannot be moved back stays locked: the runtime ends it with
// the goroutine (or, for the main thread, never runs anything else on it).
func inNamespace(t *testing.T, ns string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			done <- err
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// arpListener is a packet socket on ifname in ns that receives ARP packets.
func arpListener(t *testing.T, ns, ifname string) int {
	t.Helper()
	fd := -1
	err := inNamespace(t, ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("ARP listener on %s: %v", ifname, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	// A guard against hanging the suite when no ARP comes, not a timing check.
	tv := unix.Timeval{Sec: 30}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestRenewLinkInANamespace renews a veth end, inside a network namespace made for the test,
// as the agent renews the virtio-net interface of a clone: the interface with the old MAC
// gets the new one, its old addresses, routes and neighbours are gone, the new address and
// default route are in place, and the peer receives the gratuitous ARP announcing them.
func TestRenewLinkInANamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	ns := fmt.Sprintf("banger-renew-%d", os.Getpid())
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip("link", "add", "gx0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "gx1")
	ip("link", "set", "gx1", "up")
	ip("link", "set", "gx0", "up")
	ip("addr", "add", "10.9.0.5/24", "dev", "gx0")
	ip("route", "add", "default", "via", "10.9.0.1")
	ip("route", "add", "10.8.0.0/16", "via", "10.9.0.2")
	ip("route", "add", "10.7.0.0/16", "via", "10.9.0.2", "table", "100")
	ip("neigh", "add", "10.9.0.7", "lladdr", "02:00:00:00:00:77", "dev", "gx0", "nud", "permanent")
	ip("neigh", "add", "10.9.0.1", "lladdr", "02:00:00:00:00:11", "dev", "gx0", "nud", "stale")
	// IPv6: a static address, a route through it and a neighbour, which the kernel drops
	// with the link's IPv6 state when it goes down (the renewal does not list them).
	ip("addr", "add", "2001:db8:9::5/64", "dev", "gx0", "nodad")
	ip("-6", "route", "add", "2001:db8:8::/48", "via", "2001:db8:9::2", "dev", "gx0")
	ip("-6", "route", "add", "2001:db8:7::/48", "via", "2001:db8:9::2", "dev", "gx0", "table", "100")
	ip("-6", "neigh", "add", "2001:db8:9::7", "lladdr", "02:00:00:00:00:77", "dev", "gx0", "nud", "permanent")
	if out := ip("-o", "-6", "addr", "show", "gx0"); !strings.Contains(out, "fe80::ff:fe00:1/64") {
		t.Fatalf("gx0 has no link-local address from its old MAC to test with: %s", out)
	}
	fd := arpListener(t, ns, "gx1")

	n, err := agent.NetworkIdentity{OldMAC: "02:00:00:00:00:01", MAC: "02:00:00:00:00:02",
		Address: "10.20.0.5/24", Gateway: "10.20.0.1"}.Parse()
	if err != nil {
		t.Fatal(err)
	}
	if err := inNamespace(t, ns, func() error { return renewLink(n) }); err != nil {
		t.Fatalf("renewLink: %v", err)
	}

	if out := ip("-o", "link", "show", "gx0"); !strings.Contains(out, "link/ether 02:00:00:00:00:02 ") || !strings.Contains(out, ",UP") {
		t.Errorf("gx0 is not up with the new MAC: %s", out)
	}
	if out := ip("-o", "-4", "addr", "show", "gx0"); !strings.Contains(out, "inet 10.20.0.5/24 ") || strings.Contains(out, "10.9.0.5") {
		t.Errorf("addresses: %s", out)
	}
	if out := ip("route", "show"); !strings.Contains(out, "default via 10.20.0.1 dev gx0") || strings.Contains(out, "10.8.0.0") || strings.Contains(out, "10.9.0.") {
		t.Errorf("routes: %s", out)
	}
	if out := ip("route", "show", "table", "100"); strings.TrimSpace(out) != "" {
		t.Errorf("routes of table 100: %s", out)
	}
	if out := ip("neigh", "show", "dev", "gx0"); strings.Contains(out, "10.9.0.") || strings.Contains(out, "2001:db8:9::") {
		t.Errorf("neighbours kept: %s", out)
	}
	if out := ip("-o", "-6", "addr", "show", "gx0"); strings.Contains(out, "2001:db8:9::5") || strings.Contains(out, "fe80::ff:fe00:1/") {
		t.Errorf("IPv6 addresses of the old identity kept: %s", out)
	}
	if out := ip("-6", "route", "show", "table", "all"); strings.Contains(out, "2001:db8:") {
		t.Errorf("IPv6 routes kept: %s", out)
	}

	// The announcement: an ARP request from the new MAC whose sender and target are the new
	// address. Other ARP packets (none expected) are skipped.
	want := arpAnnouncement(n.MAC, netip.MustParseAddr("10.20.0.5"))
	buf := make([]byte, 1500)
	for {
		m, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("no gratuitous ARP on the peer: %v", err)
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if m >= len(want) && bytes.Equal(buf[:len(want)], want) {
			if ll == nil || !bytes.Equal(ll.Addr[:6], n.MAC) {
				t.Errorf("the ARP came from %v, want %s", from, n.MAC)
			}
			break
		}
		t.Logf("skipping ARP %x", buf[:m])
	}
	if got := want[14:18]; !bytes.Equal(got, []byte{10, 20, 0, 5}) || !bytes.Equal(want[24:28], got) || want[7] != 1 {
		t.Errorf("announcement %x: want a request with sender and target 10.20.0.5", want)
	}

	// A renewal retried after the MAC changed finds the interface by its new MAC.
	if err := inNamespace(t, ns, func() error { return renewLink(n) }); err != nil {
		t.Errorf("renewLink again: %v", err)
	}
	// The identity the link has already (a spare taking its user's name) leaves the link
	// alone: its neighbours stay.
	same := n
	same.OldMAC = n.MAC
	ip("neigh", "add", "10.20.0.9", "lladdr", "02:00:00:00:00:99", "dev", "gx0", "nud", "permanent")
	if err := inNamespace(t, ns, func() error { return renewLink(same) }); err != nil {
		t.Errorf("renewLink with the link's own identity: %v", err)
	}
	if out := ip("neigh", "show", "dev", "gx0"); !strings.Contains(out, "10.20.0.9") {
		t.Errorf("a renewal to the link's own identity changed the link: neighbours %s", out)
	}
	// The same MAC with another address is applied.
	moved := same
	moved.Address = netip.MustParsePrefix("10.20.0.6/24")
	if err := inNamespace(t, ns, func() error { return renewLink(moved) }); err != nil {
		t.Errorf("renewLink to another address: %v", err)
	}
	if out := ip("-o", "-4", "addr", "show", "gx0"); !strings.Contains(out, "inet 10.20.0.6/24 ") || strings.Contains(out, "10.20.0.5/") {
		t.Errorf("addresses after a renewal to another address: %s", out)
	}
	// An interface with neither MAC is an error that says so.
	gone := n
	gone.OldMAC, gone.MAC = net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	if err := inNamespace(t, ns, func() error { return renewLink(gone) }); err == nil || !strings.Contains(err.Error(), "no interface has the MAC") {
		t.Errorf("renewLink without the interface = %v", err)
	}
}
