package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// udpSink records every datagram a UDP socket in a namespace receives: payload → source.
type udpSink struct {
	mu  sync.Mutex
	got map[string]netip.Addr
}

func listenUDPIn(t *testing.T, ns, addr string) *udpSink {
	t.Helper()
	pc := listenPacketIn(t, ns, "udp4", addr)
	t.Cleanup(func() { pc.Close() })
	s := &udpSink{got: map[string]netip.Addr{}}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got[strings.TrimSpace(string(buf[:n]))] = from.(*net.UDPAddr).AddrPort().Addr().Unmap()
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *udpSink) saw(tag string) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.got[tag]
	return a, ok
}

// wait returns the source of datagram tag, which the filter must let through.
func (s *udpSink) wait(t *testing.T, tag string) netip.Addr {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if a, ok := s.saw(tag); ok {
			return a
		}
	}
	t.Fatalf("datagram %q never arrived; the filter must let it through", tag)
	return netip.Addr{}
}

// TestGuestTrafficIsFiltered boots a NAT guest and a --no-nat guest and checks banger's
// packet filter with real datagrams sent from inside them. "The outside" is a namespace of
// its own behind the test namespace's default route that routes the guests' subnet back (as
// a LAN router with a static route would), so un-NATed traffic would get there and back.
// Every datagram that must be dropped is followed by one that must pass the same way, and
// the first is checked only once the second arrived.
func TestGuestTrafficIsFiltered(t *testing.T) {
	ensureWarm(t)
	out := fmt.Sprintf("bgnf-out-%d", os.Getpid())
	for _, args := range [][]string{
		{"netns", "add", out},
		{"-n", h.netns, "link", "add", "e2eup0", "type", "veth", "peer", "name", "eth0", "netns", out},
		{"-n", out, "addr", "add", "10.99.0.2/24", "dev", "eth0"},
		{"-n", out, "link", "set", "eth0", "up"},
		{"-n", out, "route", "add", "172.16.0.0/24", "via", "10.99.0.1"},
		{"-n", h.netns, "addr", "add", "10.99.0.1/24", "dev", "e2eup0"},
		{"-n", h.netns, "link", "set", "e2eup0", "up"},
		{"-n", h.netns, "route", "add", "default", "via", "10.99.0.2"},
	} {
		if b, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, b)
		}
		if args[0] == "netns" {
			// Deleting the namespace deletes the veth pair, and the default route with it.
			defer exec.Command("ip", "netns", "del", out).Run()
		}
	}

	// Port 7002 is opened to guests in the config; 7001 is not.
	writeConfig(t, "host_ports_open_to_guests = [7002]\n")
	mustBanger(t, "daemon", "stop") // network settings are read when the daemon starts
	defer mustBanger(t, "daemon", "stop")

	outside := listenUDPIn(t, out, "10.99.0.2:7000")
	closed := listenUDPIn(t, h.netns, ":7001")
	open := listenUDPIn(t, h.netns, ":7002")

	mustBanger(t, "vm", "create", "--name", "fa", "--memory", "768M")
	mustBanger(t, "vm", "create", "--name", "fb", "--memory", "768M", "--no-nat")
	defer mustBanger(t, "vm", "delete", "-f", "fa", "fb")
	a := show(t, "fa")

	// fa (NAT): out through the uplink, to the opened port, to a closed one on the bridge
	// address and on the uplink's, and to fb by name.
	got := guest(t, "fa", "bash", "-c", `
echo a-out > /dev/udp/10.99.0.2/7000
echo a-open > /dev/udp/172.16.0.1/7002
echo a-closed > /dev/udp/172.16.0.1/7001
echo a-closed-uplink > /dev/udp/10.99.0.1/7001
ping -c 2 -W 5 fb.vm >/dev/null && echo fb-answers`)
	if got != "fb-answers" {
		t.Errorf("fa ping fb.vm: %q, want guests to reach each other by name", got)
	}
	if from := outside.wait(t, "a-out"); from.String() != "10.99.0.1" {
		t.Errorf("the outside saw the NAT guest from %s, want the uplink's address 10.99.0.1 (masqueraded)", from)
	}
	open.wait(t, "a-open")

	// fb (--no-nat): out on its own, then as fa (its address added, and a route that sends
	// from it), which the old rules masqueraded.
	got = guest(t, "fb", "bash", "-c", `
getent hosts fa.vm >/dev/null && echo resolves
echo b-out > /dev/udp/10.99.0.2/7000
dev=$(ip -o route get 172.16.0.1 | sed -n 's/.* dev \([^ ]*\).*/\1/p')
ip addr add `+a.IP+`/32 dev "$dev"
ip route add 10.99.0.2/32 via 172.16.0.1 src `+a.IP+`
echo b-as-a > /dev/udp/10.99.0.2/7000
ip route del 10.99.0.2/32
ip addr del `+a.IP+`/32 dev "$dev"`)
	if got != "resolves" {
		t.Errorf("fb: %q, want it to resolve fa.vm through banger's DNS", got)
	}

	// Barriers on the same paths.
	guest(t, "fa", "bash", "-c", "echo a-out-2 > /dev/udp/10.99.0.2/7000; echo a-open-2 > /dev/udp/172.16.0.1/7002")
	outside.wait(t, "a-out-2")
	open.wait(t, "a-open-2")
	for _, c := range []struct {
		s    *udpSink
		tag  string
		what string
	}{
		{outside, "b-out", "the --no-nat guest reached beyond the bridge"},
		{outside, "b-as-a", "the --no-nat guest, sending from the NAT guest's address, reached beyond the bridge"},
		{closed, "a-closed", "a guest reached a host port not open to guests (bridge address)"},
		{closed, "a-closed-uplink", "a guest reached a host port not open to guests (the uplink's address)"},
	} {
		if from, ok := c.s.saw(c.tag); ok {
			t.Errorf("%s: datagram %q arrived from %s", c.what, c.tag, from)
		}
	}
}
