package roothelper

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/vmnet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The client is what a daemon that is not root networks its guests with.
var _ vmnet.Host = (*Client)(nil)

func netOf(ns string) Network {
	return Network{Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: ns}
}

// tapOwner reads a tap's owner in namespace ns.
func tapOwner(t *testing.T, ns, name string) (owner int, exists bool) {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(name)
	if err != nil {
		return -1, false
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("%s is a %s", name, l.Type())
	}
	return int(tt.Owner), true
}

func TestCallerOutsideTheGroupIsRefused(t *testing.T) {
	ns := testNS(t)
	sock, _ := startServer(t, testConfig(t))

	_, err := dialAs(t, outsider, outsider, []int{outsider}, sock, netOf(ns))
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "not in group") {
		t.Fatalf("Dial as uid %d outside the group = %v, want ErrDenied", outsider, err)
	}
	// Refused before the request is read: the answer comes without sending anything.
	var resp Response
	asCaller(t, outsider, outsider, nil, func() {
		var c *net.UnixConn
		if c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"}); err != nil {
			return
		}
		defer c.Close()
		resp, _, err = readResponse(c)
	})
	if err != nil || resp.OK || resp.Error == nil || resp.Error.Kind != KindDenied {
		t.Fatalf("unread connection of an outsider: %+v, %v", resp, err)
	}
	if _, ok := tapOwner(t, ns, "banger0"); ok {
		t.Fatal("refused callers made the bridge")
	}

	// The group as primary group, or as a supplementary one, is enough.
	for name, gid := range map[string]int{"primary": testGID, "supplementary": outsider} {
		c, err := dialAs(t, memberUID, gid, []int{100, testGID}, sock, netOf(ns))
		if name == "primary" {
			c, err = dialAs(t, memberUID, testGID, nil, sock, netOf(ns))
		}
		if err != nil {
			t.Fatalf("%s group: %v", name, err)
		}
		var uid int
		asCaller(t, memberUID, testGID, nil, func() { _, uid, err = c.Hello() })
		if err != nil || uid != memberUID {
			t.Fatalf("hello: uid %d, %v", uid, err)
		}
	}
}

func TestNetworkNotServedIsRefused(t *testing.T) {
	ns := testNS(t)
	sock, _ := startServer(t, testConfig(t))
	for name, nw := range map[string]Network{
		"bridge":            {Bridge: "docker0", CIDR: "172.16.0.0/24", Namespace: ns},
		"cidr":              {Bridge: "banger0", CIDR: "10.0.0.0/24", Namespace: ns},
		"host namespace":    {Bridge: "banger0", CIDR: "172.16.0.0/24"},
		"other namespace":   {Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: "banger-other"},
		"missing namespace": {Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: nsPrefix + "missing"},
	} {
		_, err := dialAs(t, memberUID, testGID, nil, sock, nw)
		want := failure.Invalid
		if name == "missing namespace" {
			want = failure.NotFound
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: Dial = %v, want %v", name, err, want)
		}
	}
	// A raw path as namespace does not even leave the client.
	if _, err := Dial(sock, Network{Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: "/proc/1/ns/net"}, nil); !errors.Is(err, failure.Invalid) {
		t.Errorf("namespace path: %v", err)
	}
}

func TestMalformedRequestsOnTheWire(t *testing.T) {
	ns := testNS(t)
	sock, _ := startServer(t, testConfig(t))
	ok := `{"op":"hello","network":{"bridge":"banger0","cidr":"172.16.0.0/24","namespace":"` + ns + `"}}`
	for name, in := range map[string]string{
		"valid":         ok,
		"unknown field": `{"op":"hello","network":{"bridge":"banger0","cidr":"172.16.0.0/24","namespace":"` + ns + `"},"x":1}`,
		"trailing data": ok + `{}`,
		"malformed":     ok[:20],
		"oversized":     ok + strings.Repeat(" ", MaxRequest),
		"empty":         ``,
	} {
		var resp Response
		var err error
		asCaller(t, memberUID, testGID, nil, func() { resp, err = rawRequest(sock, []byte(in)) })
		if name == "oversized" && err != nil {
			continue // the helper may close before reading it all: refused either way
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "valid" {
			if !resp.OK || resp.Protocol != ProtocolVersion {
				t.Errorf("valid: %+v", resp)
			}
			continue
		}
		if resp.OK || resp.Error == nil || resp.Error.Kind != KindInvalid {
			t.Errorf("%s: %+v, want an invalid error", name, resp)
		}
	}
}

// TestEndToEnd drives a real helper as an unprivileged member of its group: bridge, a tap whose
// queue comes back over the socket, the packet filter, sockets in the namespace, teardown.
func TestEndToEnd(t *testing.T) {
	ns := testNS(t)
	sock, _ := startServer(t, testConfig(t))
	inNS(t, ns, "nft", "add", "table", "inet", "foreign")
	inNS(t, ns, "nft", "add", "chain", "inet", "foreign", "input", "{ type filter hook input priority 10 ; }")
	inNS(t, ns, "nft", "add", "rule", "inet", "foreign", "input", "tcp", "dport", "9999", "drop")
	foreign := inNS(t, ns, "nft", "list", "table", "inet", "foreign")

	as := func(fn func() error) {
		t.Helper()
		var err error
		asCaller(t, memberUID, testGID, nil, func() { err = fn() })
		if err != nil {
			t.Fatal(err)
		}
	}
	var c *Client
	as(func() (err error) { c, err = Dial(sock, netOf(ns), []uint16{7002}); return err })
	if c.NetNSPath() != "/run/netns/"+ns || c.HostIP() != netip.MustParseAddr("172.16.0.1") || len(c.GuestIPs()) != 253 {
		t.Fatalf("client facts: %s %s %d", c.NetNSPath(), c.HostIP(), len(c.GuestIPs()))
	}
	as(c.EnsureBridge)
	as(c.EnsureBridge) // idempotent
	if addrs := inNS(t, ns, "ip", "-o", "addr", "show", "banger0"); !strings.Contains(addrs, "172.16.0.1/24") {
		t.Fatalf("bridge addresses: %s", addrs)
	}

	id := "0123456789abcdef"
	tap := hostnet.TapName(id)
	for range 2 { // the second replaces the first: idempotent
		as(func() error {
			f, err := c.AddTap(id)
			if err != nil {
				return err
			}
			defer f.Close()
			name, err := TapQueueName(f)
			if err != nil || name != tap {
				t.Errorf("the queue handed out names %q (%v), want %s", name, err, tap)
			}
			return nil
		})
	}
	if owner, ok := tapOwner(t, ns, tap); !ok || owner != memberUID {
		t.Fatalf("tap %s: owner %d (exists %v), want uid %d", tap, owner, ok, memberUID)
	}
	if links := inNS(t, ns, "ip", "-o", "link", "show", tap); !strings.Contains(links, "master banger0") || !strings.Contains(links, "UP") {
		t.Fatalf("tap: %s", links)
	}
	var taps []string
	as(func() (err error) { taps, err = c.Taps(); return err })
	if len(taps) != 1 || taps[0] != tap {
		t.Fatalf("taps = %v", taps)
	}

	g := hostnet.GuestOf(id, netip.MustParseAddr("172.16.0.2"), true)
	as(func() error { return c.SetGuests([]hostnet.Guest{g}) })
	ruleset := inNS(t, ns, "nft", "list", "ruleset")
	for _, want := range []string{"table bridge banger", "table inet banger", `iifname "` + tap + `"`, "172.16.0.2", g.MAC.String(), "dport 8080", "dport 7002"} {
		if !strings.Contains(ruleset, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, ruleset)
		}
	}

	// Sockets in the namespace: DNS on the bridge, a loopback listener, and a dial to it.
	var pc net.PacketConn
	as(func() (err error) { pc, err = c.ListenPacket("udp", "172.16.0.1:53"); return err })
	if out := inNS(t, ns, "ss", "-lun"); !strings.Contains(out, "172.16.0.1:53") {
		t.Errorf("no UDP socket on the bridge's port 53 while it is open:\n%s", out)
	}
	pc.Close()
	as(func() error {
		l, err := c.Listen("tcp", "172.16.0.1:53")
		if err != nil {
			return err
		}
		l.Close()
		l, err = c.Listen("tcp", "127.0.0.1:40053")
		if err != nil {
			return err
		}
		defer l.Close()
		go func() {
			if a, err := l.Accept(); err == nil {
				a.Write([]byte("in the namespace"))
				a.Close()
			}
		}()
		conn, err := c.Dial("tcp", "127.0.0.1:40053")
		if err != nil {
			return err
		}
		defer conn.Close()
		got, err := io.ReadAll(conn)
		if err != nil || string(got) != "in the namespace" {
			t.Errorf("read %q, %v", got, err)
		}
		if _, err := c.Listen("tcp", "127.0.0.1:22"); !errors.Is(err, failure.Invalid) {
			t.Errorf("listen on a privileged loopback port: %v", err)
		}
		return nil
	})

	// Teardown.
	as(func() error { return c.DeleteTap(id) })
	as(func() error { return c.DeleteTap(id) }) // a missing tap is fine
	if _, ok := tapOwner(t, ns, tap); ok {
		t.Fatal("the tap is still there")
	}
	as(func() error { return c.SetGuests(nil) })
	if rs := inNS(t, ns, "nft", "list", "ruleset"); strings.Contains(rs, "banger") {
		t.Errorf("banger's tables are still there:\n%s", rs)
	}
	as(c.RemoveBridge)
	if out, _ := exec.Command("ip", "netns", "exec", ns, "ip", "link", "show", "banger0").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Errorf("the bridge is still there: %s", out)
	}
	if got := inNS(t, ns, "nft", "list", "table", "inet", "foreign"); got != foreign {
		t.Errorf("the foreign table changed:\n%s\nwas\n%s", got, foreign)
	}
}

// TestTapsAndGuestsOfAnotherUID: a caller cannot remove, replace or admit another uid's tap,
// nor claim an address another uid's guest set holds; root can remove any banger tap.
func TestTapsAndGuestsOfAnotherUID(t *testing.T) {
	ns := testNS(t)
	sock, _ := startServer(t, testConfig(t))
	a, err := dialAs(t, memberUID, testGID, nil, sock, netOf(ns))
	if err != nil {
		t.Fatal(err)
	}
	b, err := dialAs(t, otherUID, testGID, nil, sock, netOf(ns))
	if err != nil {
		t.Fatal(err)
	}
	id := "aaaaaaaaaaaa"
	asA := func(fn func() error) (err error) {
		asCaller(t, memberUID, testGID, nil, func() { err = fn() })
		return err
	}
	asB := func(fn func() error) (err error) {
		asCaller(t, otherUID, testGID, nil, func() { err = fn() })
		return err
	}
	if err := asA(func() error {
		f, err := a.AddTap(id)
		if err == nil {
			f.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ga := hostnet.GuestOf(id, netip.MustParseAddr("172.16.0.2"), false)
	if err := asA(func() error { return a.SetGuests([]hostnet.Guest{ga}) }); err != nil {
		t.Fatal(err)
	}

	if err := asB(func() error { return b.DeleteTap(id) }); !errors.Is(err, failure.Conflict) {
		t.Errorf("B deletes A's tap: %v, want Conflict", err)
	}
	if err := asB(func() error {
		f, err := b.AddTap(id)
		if f != nil {
			f.Close()
		}
		return err
	}); !errors.Is(err, failure.Conflict) {
		t.Errorf("B replaces A's tap: %v, want Conflict", err)
	}
	if err := asB(func() error {
		return b.SetGuests([]hostnet.Guest{hostnet.GuestOf(id, netip.MustParseAddr("172.16.0.9"), true)})
	}); !errors.Is(err, failure.Conflict) {
		t.Errorf("B admits A's tap: %v, want Conflict", err)
	}
	if err := asB(func() error {
		return b.SetGuests([]hostnet.Guest{hostnet.GuestOf("bbbbbbbbbbbb", netip.MustParseAddr("172.16.0.2"), true)})
	}); !errors.Is(err, failure.Conflict) {
		t.Errorf("B claims A's address: %v, want Conflict", err)
	}
	var taps []string
	asB(func() (err error) { taps, err = b.Taps(); return err })
	if len(taps) != 0 {
		t.Errorf("B lists A's taps: %v", taps)
	}
	if owner, ok := tapOwner(t, ns, hostnet.TapName(id)); !ok || owner != memberUID {
		t.Fatalf("A's tap after B's attempts: owner %d, exists %v", owner, ok)
	}

	// B's own guests join A's in the filter; replacing B's set leaves A's.
	gb := hostnet.GuestOf("bbbbbbbbbbbb", netip.MustParseAddr("172.16.0.3"), true)
	if err := asB(func() error { return b.SetGuests([]hostnet.Guest{gb}) }); err != nil {
		t.Fatal(err)
	}
	rs := inNS(t, ns, "nft", "list", "table", "bridge", "banger")
	if !strings.Contains(rs, ga.Tap) || !strings.Contains(rs, gb.Tap) {
		t.Errorf("the filter does not admit both sets:\n%s", rs)
	}
	if err := asB(func() error { return b.SetGuests(nil) }); err != nil {
		t.Fatal(err)
	}
	rs = inNS(t, ns, "nft", "list", "table", "bridge", "banger")
	if !strings.Contains(rs, ga.Tap) || strings.Contains(rs, `"`+gb.Tap+`"`) {
		t.Errorf("after B emptied its set:\n%s", rs)
	}

	// Root removes any banger tap.
	root, err := Dial(sock, netOf(ns), nil)
	if err != nil {
		t.Fatal(err)
	}
	if taps, err := root.Taps(); err != nil || len(taps) != 0 {
		t.Errorf("root lists %v (%v); want none of the users' taps", taps, err)
	}
	if err := root.DeleteTap(id); err != nil {
		t.Fatal(err)
	}
	if _, ok := tapOwner(t, ns, hostnet.TapName(id)); ok {
		t.Fatal("root could not delete the tap")
	}
}

// TestRestartedHelperKeepsEveryonesGuests: a helper that restarts (an upgrade, a crash) knows
// the guest sets of the uids that do not call again, so the next set_guests of another uid
// keeps admitting them.
func TestRestartedHelperKeepsEveryonesGuests(t *testing.T) {
	ns := testNS(t)
	cfg := testConfig(t)
	sock, srv := startServer(t, cfg)
	a, err := dialAs(t, memberUID, testGID, nil, sock, netOf(ns))
	if err != nil {
		t.Fatal(err)
	}
	ga := hostnet.GuestOf("aaaaaaaaaaaa", netip.MustParseAddr("172.16.0.2"), true)
	asCaller(t, memberUID, testGID, nil, func() { err = a.SetGuests([]hostnet.Guest{ga}) })
	if err != nil {
		t.Fatal(err)
	}
	stops[srv]()

	sock, _ = startServer(t, cfg)
	b, err := dialAs(t, otherUID, testGID, nil, sock, netOf(ns))
	if err != nil {
		t.Fatal(err)
	}
	gb := hostnet.GuestOf("bbbbbbbbbbbb", netip.MustParseAddr("172.16.0.2"), true)
	asCaller(t, otherUID, testGID, nil, func() { err = b.SetGuests([]hostnet.Guest{gb}) })
	if !errors.Is(err, failure.Conflict) {
		t.Fatalf("B claims the address A's set held before the restart: %v, want Conflict", err)
	}
	gb.IP = netip.MustParseAddr("172.16.0.3")
	asCaller(t, otherUID, testGID, nil, func() { err = b.SetGuests([]hostnet.Guest{gb}) })
	if err != nil {
		t.Fatal(err)
	}
	rs := inNS(t, ns, "nft", "list", "table", "bridge", "banger")
	if !strings.Contains(rs, ga.Tap) || !strings.Contains(rs, gb.Tap) {
		t.Errorf("after the restart the filter admits:\n%s\nwant both %s and %s", rs, ga.Tap, gb.Tap)
	}

	// A namespace made anew under the same name does not inherit the sets.
	for _, srv := range stops {
		srv()
	}
	for _, args := range [][]string{{"ip", "netns", "del", ns}, {"ip", "netns", "add", ns}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	sock, _ = startServer(t, cfg)
	b, err = dialAs(t, otherUID, testGID, nil, sock, netOf(ns))
	if err != nil {
		t.Fatal(err)
	}
	gb.IP = ga.IP
	asCaller(t, otherUID, testGID, nil, func() { err = b.SetGuests([]hostnet.Guest{gb}) })
	if err != nil {
		t.Fatalf("in a new namespace of the same name, an address of the old one's sets: %v", err)
	}
}

// TestFilterFollowsTheUplink: once a network has guests, the helper re-applies its filter
// when the default route changes, so that NAT guests leave through the new uplink.
func TestFilterFollowsTheUplink(t *testing.T) {
	ns := testNS(t)
	inNS(t, ns, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0peer")
	inNS(t, ns, "ip", "addr", "add", "10.98.0.1/24", "dev", "up0")
	inNS(t, ns, "ip", "link", "set", "up0", "up")
	inNS(t, ns, "ip", "link", "set", "up0peer", "up")
	reapplied := make(chan struct{}, 16)
	sock, _ := startServer(t, testConfig(t), func(s *Server) { s.reapplied = func() { reapplied <- struct{}{} } })
	c, err := Dial(sock, netOf(ns), nil)
	if err != nil {
		t.Fatal(err)
	}
	g := hostnet.GuestOf("cccccccccccc", netip.MustParseAddr("172.16.0.5"), true)
	if err := c.SetGuests([]hostnet.Guest{g}); err != nil {
		t.Fatal(err)
	}
	if rs := inNS(t, ns, "nft", "list", "chain", "inet", "banger", "postrouting"); strings.Contains(rs, "up0") {
		t.Fatalf("masquerading through up0 before it is the uplink:\n%s", rs)
	}
	inNS(t, ns, "ip", "route", "add", "default", "via", "10.98.0.2")
	select {
	case <-reapplied:
	case <-time.After(10 * time.Second):
		t.Fatal("no re-apply within 10 s of the default route change")
	}
	if rs := inNS(t, ns, "nft", "list", "chain", "inet", "banger", "postrouting"); !strings.Contains(rs, `oifname "up0"`) {
		t.Fatalf("after the default route moved to up0:\n%s", rs)
	}
}

// TestHostNamespaceUnderAnotherName: a name under /run/netns that is the helper's own
// namespace is refused when the configuration does not allow the helper's own namespace.
func TestHostNamespaceUnderAnotherName(t *testing.T) {
	needRoot(t)
	name := nsPrefix + "host"
	if out, err := exec.Command("ip", "netns", "attach", name, strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
		t.Skipf("ip netns attach: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	sock, _ := startServer(t, testConfig(t))
	if _, err := Dial(sock, netOf(name), nil); !errors.Is(err, failure.Invalid) || !strings.Contains(err.Error(), "helper's own") {
		t.Fatalf("Dial in the host namespace under another name = %v, want Invalid", err)
	}
}

// TestOneBridgePerNamespace: banger's filter is one per namespace, so a second configured
// bridge is refused in a namespace where the first has guests.
func TestOneBridgePerNamespace(t *testing.T) {
	ns := testNS(t)
	cfg := testConfig(t)
	cfg.Networks = append(cfg.Networks, NetworkConfig{Bridge: "banger1", CIDR: "172.17.0.0/24"})
	sock, _ := startServer(t, cfg)
	a, err := Dial(sock, netOf(ns), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetGuests([]hostnet.Guest{hostnet.GuestOf("dddddddddddd", netip.MustParseAddr("172.16.0.2"), false)}); err != nil {
		t.Fatal(err)
	}
	b, err := Dial(sock, Network{Bridge: "banger1", CIDR: "172.17.0.0/24", Namespace: ns}, nil)
	if !errors.Is(err, failure.Conflict) {
		t.Fatalf("a second bridge in the namespace: %v, %v; want Conflict", b, err)
	}
	if err := a.SetGuests(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(sock, Network{Bridge: "banger1", CIDR: "172.17.0.0/24", Namespace: ns}, nil); err != nil {
		t.Fatalf("the second bridge once the first has no guests: %v", err)
	}
}

// TestHostNamespaceSocketsInProcess: without a namespace the client opens unprivileged
// sockets itself; the helper is not asked (its configuration here would refuse).
func TestHostNamespaceSocketsInProcess(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	cfg.HostNamespace = true // hello only: nothing below asks the helper to change anything
	sock, _ := startServer(t, cfg)
	c, err := Dial(sock, netOf(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if a, err := l.Accept(); err == nil {
			a.Write([]byte("here"))
			a.Close()
		}
	}()
	conn, err := c.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got, err := io.ReadAll(conn); err != nil || string(got) != "here" {
		t.Fatalf("read %q, %v", got, err)
	}
	pc, err := c.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
	if c.NetNSPath() != "" || c.WatchUplink(nil, nil) != nil {
		t.Error("host namespace client: NetNSPath or WatchUplink")
	}
}
