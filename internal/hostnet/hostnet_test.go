package hostnet

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
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
	if err := n.AddTap(id); err != nil {
		t.Fatal(err)
	}
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
