package vmservice

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"

	"github.com/banger-dev/banger/internal/dnsserver"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/vmnet"
)

// networkedEnv is newEnv with real guest networking in a network namespace made for the test
// (root only): taps, NAT rules and DNS records are real; the VMs are vmmtest's stand-ins.
func networkedEnv(t *testing.T) (*env, *hostnet.Net, *dnsserver.Server) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	ns := fmt.Sprintf("banger-vs-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	e := newEnv(t)
	n, err := hostnet.Open(hostnet.Config{Bridge: "bgvs0", CIDR: netip.MustParsePrefix("172.31.0.0/29"), NetNS: ns, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	dns := dnsserver.New(nil, n.Dial, nil)
	t.Cleanup(func() { dns.Close() })
	e.svc.net = vmnet.New(vmnet.Options{Host: n, DNS: dns})
	return e, n, dns
}

func TestAddressesNamesAndNAT(t *testing.T) {
	e, n, dns := networkedEnv(t)
	ctx := context.Background()
	// A /29 has five guest addresses: .2 to .6.
	for i, name := range []string{"a", "b", "c"} {
		vm, err := e.create(CreateRequest{Name: name, NoNAT: name == "b"})
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("172.31.0.%d", i+2); vm.IP != want {
			t.Errorf("%s got %s, want %s (lowest free)", name, vm.IP, want)
		}
		if ip, ok := dns.Lookup(name); !ok || ip.String() != vm.IP {
			t.Errorf("%s.vm = %v %v, want %s while running", name, ip, ok, vm.IP)
		}
	}
	nat, _ := n.NATRules()
	if len(nat) != 2 {
		t.Errorf("NAT rules %v, want a and c (b has --no-nat)", nat)
	}
	if st, err := n.Filter(); err != nil || st.Guests != 3 {
		t.Errorf("packet filter %+v %v, want anti-spoofing rules for all three VMs (b too)", st, err)
	}
	taps, _ := n.Taps()
	if len(taps) != 3 {
		t.Errorf("taps %v, want one per running VM", taps)
	}

	if _, _, err := e.svc.Stop(ctx, "a", time.Second, Observer{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := dns.Lookup("a"); ok {
		t.Error("a.vm still answers after stop")
	}
	if nat, _ := n.NATRules(); len(nat) != 1 {
		t.Errorf("NAT rules after stopping a: %v", nat)
	}
	if taps, _ := n.Taps(); len(taps) != 2 {
		t.Errorf("taps after stop: %v", taps)
	}
	if _, err := e.svc.Delete(ctx, "b", true); err != nil {
		t.Fatal(err)
	}
	// b's address is free again; a keeps its own while stopped.
	d, err := e.create(CreateRequest{Name: "d"})
	if err != nil || d.IP != "172.31.0.3" {
		t.Errorf("d got %s (%v), want b's released 172.31.0.3", d.IP, err)
	}
	if vm, _, err := e.svc.Start(ctx, "a", Observer{}); err != nil || vm.IP != "172.31.0.2" {
		t.Errorf("a restarted with %s (%v), want its own address", vm.IP, err)
	}
	if err := e.svc.TeardownNetwork(ctx); !errors.Is(err, failure.Conflict) {
		t.Errorf("teardown with VMs running: %v, want Conflict", err)
	}
	for _, name := range []string{"a", "c", "d"} {
		if _, err := e.svc.Delete(ctx, name, true); err != nil {
			t.Fatal(err)
		}
	}
	if nat, _ := n.NATRules(); len(nat) != 0 {
		t.Errorf("NAT rules after the last VM: %v", nat)
	}
	if err := e.svc.TeardownNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "-n", n.NetNSPath()[len("/run/netns/"):], "-o", "link").CombinedOutput()
	if len(out) > 0 && (strings.Contains(string(out), "bgvs0") || strings.Contains(string(out), " bg")) {
		t.Errorf("links after teardown:\n%s", out)
	}
	e.assertNothingLeft()
}

func TestAddressPoolExhaustionIsClear(t *testing.T) {
	e, _, _ := networkedEnv(t)
	for i := 0; i < 5; i++ {
		if _, err := e.create(CreateRequest{Name: fmt.Sprintf("v%d", i), NoStart: true}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.create(CreateRequest{Name: "one-too-many", NoStart: true})
	if !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "bigger network") {
		t.Errorf("sixth VM in a /29: %v, want a Conflict pointing at bridge_cidr", err)
	}
}

func TestSSHDAddressPrefersLoopback(t *testing.T) {
	for _, c := range []struct {
		ports []agent.Port
		want  string
	}{
		{[]agent.Port{{Proto: "tcp6", Addr: "::", Port: 22}, {Proto: "tcp", Addr: "0.0.0.0", Port: 22}}, "127.0.0.1:22"},
		{[]agent.Port{{Proto: "tcp6", Addr: "::", Port: 22}}, "[::1]:22"},
		{[]agent.Port{{Proto: "tcp", Addr: "172.16.0.5", Port: 22}}, "172.16.0.5:22"},
		{[]agent.Port{{Proto: "tcp", Addr: "127.0.0.1", Port: 22}, {Proto: "tcp", Addr: "0.0.0.0", Port: 80}}, "127.0.0.1:22"},
		{[]agent.Port{{Proto: "udp", Addr: "0.0.0.0", Port: 22}, {Proto: "tcp", Addr: "0.0.0.0", Port: 2222}}, ""},
	} {
		got, ok := sshdAddress(c.ports)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("sshdAddress(%v) = %q, %v; want %q", c.ports, got, ok, c.want)
		}
	}
}
