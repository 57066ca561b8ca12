package vmnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/dnsserver"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/hostnet"
)

// hostNet opens a hostnet.Net on a /29 (guest addresses .2 to .6) in a network namespace made
// for the test (root only): taps and filter rules are real, and stay in the namespace.
func hostNet(t *testing.T) *hostnet.Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	ns := fmt.Sprintf("banger-vn-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	n, err := hostnet.Open(hostnet.Config{Bridge: "bgvn0", CIDR: netip.MustParsePrefix("172.31.1.0/29"), NetNS: ns, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func guest(i int) Guest {
	return Guest{ID: strings.Repeat(fmt.Sprint(i), 16), Name: fmt.Sprintf("g%d", i), IP: fmt.Sprintf("172.31.1.%d", i+1), NAT: true}
}

// filtered is the number of guests the packet filter admits.
func filtered(t *testing.T, n *hostnet.Net) int {
	t.Helper()
	st, err := n.Filter()
	if err != nil {
		t.Fatal(err)
	}
	return st.Guests
}

func taps(t *testing.T, n *hostnet.Net) []string {
	t.Helper()
	ts, err := n.Taps()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ts)
	return ts
}

// attach attaches g and closes the link's tap queue, as the caller does once its VMM has it.
func attach(t *testing.T, n *Network, g Guest) Link {
	t.Helper()
	link, err := n.Attach(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	link.TapFile.Close()
	return link
}

// tunFDs counts this process's open files of /dev/net/tun (tap queues).
func tunFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/net/tun" {
			count++
		}
	}
	return count
}

func TestAllocatePicksTheLowestFreeAddress(t *testing.T) {
	hn, err := hostnet.Open(hostnet.Config{Bridge: "bgvn0", CIDR: netip.MustParsePrefix("172.31.1.0/29")})
	if err != nil {
		t.Fatal(err)
	}
	n := New(Options{Host: hn})
	ctx := context.Background()
	if a, err := n.Allocate(ctx, []string{"172.31.1.2", "", "172.31.1.4"}); err != nil || a != "172.31.1.3" {
		t.Errorf("Allocate = %q, %v; want 172.31.1.3, the lowest free", a, err)
	}
	all := []string{"172.31.1.2", "172.31.1.3", "172.31.1.4", "172.31.1.5", "172.31.1.6"}
	if a, err := n.Allocate(ctx, all); !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "bigger network") {
		t.Errorf("Allocate with every address taken = %q, %v; want a Conflict pointing at bridge_cidr", a, err)
	}
}

// Attach gives the guest its tap, filter rules and the link its VMM and guest need; Detach
// takes both back.
func TestAttachAndDetach(t *testing.T) {
	hn := hostNet(t)
	n := New(Options{Host: hn})
	ctx := context.Background()
	g := guest(1)
	before := tunFDs(t)
	link, err := n.Attach(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if link.TapFile == nil {
		t.Fatal("the link has no tap queue")
	}
	if got := tunFDs(t); got != before+1 {
		t.Errorf("%d files of /dev/net/tun open after attach, want %d (the link's queue)", got, before+1)
	}
	link.TapFile.Close()
	want := Link{Tap: hostnet.TapName(g.ID), MAC: hostnet.MAC(g.ID).String(), Address: "172.31.1.2/29", Gateway: "172.31.1.1", DNS: "172.31.1.1"}
	if !slices.Equal(link.Notices, nil) || link.Tap != want.Tap || link.MAC != want.MAC || link.Address != want.Address || link.Gateway != want.Gateway || link.DNS != want.DNS {
		t.Errorf("link = %+v, want %+v", link, want)
	}
	if got := taps(t, hn); !slices.Equal(got, []string{link.Tap}) || filtered(t, hn) != 1 {
		t.Errorf("after attach: taps %v, %d guests filtered; want the guest's tap and rules", got, filtered(t, hn))
	}
	if err := n.Detach(ctx, g); err != nil {
		t.Fatal(err)
	}
	if got := taps(t, hn); len(got) != 0 || filtered(t, hn) != 0 {
		t.Errorf("after detach: taps %v, %d guests filtered; want none", got, filtered(t, hn))
	}
}

// An attach the filter refuses leaves neither its tap nor its guest behind: the guest does
// not poison the filter updates of the guests that come after it.
func TestFailedAttachLeavesNothing(t *testing.T) {
	hn := hostNet(t)
	n := New(Options{Host: hn})
	ctx := context.Background()
	attach(t, n, guest(1))
	twin := guest(2)
	twin.IP = guest(1).IP // the filter refuses one address on two taps
	before := tunFDs(t)
	if _, err := n.Attach(ctx, twin); err == nil {
		t.Fatal("attaching a second guest with the same address succeeded")
	}
	if got := tunFDs(t); got != before {
		t.Errorf("%d files of /dev/net/tun open after the failed attach, want %d: its tap queue leaked", got, before)
	}
	if got := taps(t, hn); !slices.Equal(got, []string{hostnet.TapName(guest(1).ID)}) {
		t.Errorf("taps after the failed attach: %v, want only the first guest's", got)
	}
	attach(t, n, guest(3))
	if got := filtered(t, hn); got != 2 {
		t.Errorf("%d guests filtered, want 2 (the failed one is not admitted)", got)
	}
}

// After a daemon restart the new Network does not know the guests yet: withdrawing a VM that
// died meanwhile must not strip the filter rules of the guests that still run, before Restore
// gives it the set.
func TestWithdrawBeforeRestoreKeepsRunningGuests(t *testing.T) {
	hn := hostNet(t)
	ctx := context.Background()
	dns := dnsserver.New(nil, hn.Dial, nil)
	t.Cleanup(func() { dns.Close() })
	before := New(Options{Host: hn})
	for _, i := range []int{1, 2, 3} {
		attach(t, before, guest(i))
	}

	after := New(Options{Host: hn, DNS: dns}) // the restarted daemon's
	if err := after.Withdraw(ctx, guest(2)); err != nil {
		t.Fatal(err)
	}
	if got := filtered(t, hn); got != 3 {
		t.Errorf("%d guests filtered after withdrawing an unknown guest, want the 3 rules as they were", got)
	}
	if got := taps(t, hn); slices.Contains(got, hostnet.TapName(guest(2).ID)) {
		t.Errorf("the withdrawn guest's tap is still there: %v", got)
	}

	// Restore: guest 1 still runs, guest 3 does not (its tap goes).
	if err := after.Restore(ctx, []Guest{guest(1)}); err != nil {
		t.Fatal(err)
	}
	if got := taps(t, hn); !slices.Equal(got, []string{hostnet.TapName(guest(1).ID)}) || filtered(t, hn) != 1 {
		t.Errorf("after restore: taps %v, %d guests filtered; want guest 1's only", got, filtered(t, hn))
	}
	if ip, ok := dns.Lookup("g1"); !ok || ip.String() != guest(1).IP {
		t.Errorf("g1.vm = %v %v after restore, want %s", ip, ok, guest(1).IP)
	}
}

// Teardown forgets every guest; a guest announced afterwards (its start was under way) is
// admitted again rather than left without rules.
func TestAnnounceAfterTeardownAdmitsTheGuest(t *testing.T) {
	hn := hostNet(t)
	ctx := context.Background()
	dns := dnsserver.New(nil, hn.Dial, nil)
	t.Cleanup(func() { dns.Close() })
	n := New(Options{Host: hn, DNS: dns})
	g := guest(1)
	attach(t, n, g)
	if err := n.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := hn.Filter(); err != nil || st.Present {
		t.Errorf("filter after teardown: %+v %v, want no tables", st, err)
	}
	if err := n.Announce(ctx, g); err != nil {
		t.Fatal(err)
	}
	if got := filtered(t, hn); got != 1 {
		t.Errorf("%d guests filtered after announce, want the announced guest", got)
	}
	if ip, ok := dns.Lookup("g1"); !ok || ip.String() != g.IP {
		t.Errorf("g1.vm = %v %v, want %s", ip, ok, g.IP)
	}
	if err := n.Withdraw(ctx, g); err != nil {
		t.Fatal(err)
	}
	if _, ok := dns.Lookup("g1"); ok || filtered(t, hn) != 0 {
		t.Errorf("after withdraw: g1.vm answers %v, %d guests filtered; want neither", ok, filtered(t, hn))
	}
}
