package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/banger-dev/banger/internal/hostnet"
)

// All guest networking of these tests lives in the harness's network namespace (h.netns);
// "the host" below is that namespace: commands run in it with `ip netns exec`.

// inNetns runs a command in the test's network namespace and returns its output.
func inNetns(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.netns}, args...)...).CombinedOutput()
	return string(out), err
}

// natRules lists the addresses banger masquerades in the test namespace.
func natRules(t *testing.T) []netip.Addr {
	t.Helper()
	n, err := hostnet.Open(hostnet.Config{Bridge: "banger0", CIDR: netip.MustParsePrefix("172.16.0.0/24"), NetNS: h.netns, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ips, err := n.NATRules()
	if err != nil {
		t.Fatal(err)
	}
	return ips
}

// listenPacketIn opens a packet socket (network "udp", "udp4") on addr inside namespace ns.
func listenPacketIn(t *testing.T, ns, network, addr string) net.PacketConn {
	t.Helper()
	type res struct {
		pc  net.PacketConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		target, err := netns.GetFromName(ns)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			ch <- res{nil, err}
			return
		}
		pc, err := net.ListenPacket(network, addr)
		ch <- res{pc, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, r.err)
	}
	return r.pc
}

func TestGuestsReachEachOtherAndTheHostByName(t *testing.T) {
	ensureWarm(t)
	// The "host" (the namespace) resolves .vm through banger's server on the bridge.
	etc := filepath.Join("/etc/netns", h.netns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(etc)
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 172.16.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	mustBanger(t, "vm", "create", "--name", "alpha", "--memory", "768M")
	mustBanger(t, "vm", "create", "--name", "beta", "--memory", "768M", "--no-nat")
	defer mustBanger(t, "vm", "delete", "-f", "alpha", "beta")
	a, b := show(t, "alpha"), show(t, "beta")
	if a.State != "running" || b.State != "running" {
		t.Fatalf("states %s %s", a.State, b.State)
	}

	// Guest to guest, by name.
	if out := guest(t, "alpha", "ping", "-c", "2", "-W", "5", "beta.vm"); !strings.Contains(out, " 0% packet loss") {
		t.Errorf("alpha ping beta.vm:\n%s", out)
	}
	if got := guest(t, "beta", "getent", "hosts", "alpha.vm"); !strings.HasPrefix(got, "172.16.0.") {
		t.Errorf("beta resolves alpha.vm to %q", got)
	}
	if got := guest(t, "beta", "hostname"); got != "beta" {
		t.Errorf("hostname %q", got)
	}

	// Host to guest, by name: a server in alpha, curl from the namespace.
	// The image has no web server; systemd-socket-activate hands each connection to a tiny
	// shell script that reads the request and answers it.
	hello := "while IFS= read -r l; do l=${l%$(printf '\\r')}; [ -n \"$l\" ] || break; done\n" +
		"printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nserved-by-alpha\\n'\n"
	r, err := bangerStdin(strings.NewReader(hello), nil, "vm", "exec", "alpha", "--", "sh", "-c",
		"cat > /usr/local/bin/http-hello; setsid systemd-socket-activate -l 8080 -a --inetd sh /usr/local/bin/http-hello >/dev/null 2>&1 </dev/null &")
	if err != nil || r.code != 0 {
		t.Fatalf("start the server in alpha: %v %+v", err, r)
	}
	var body, lastErr string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, err := inNetns(t, "curl", "-sS", "--max-time", "3", "http://alpha.vm:8080/")
		if err == nil {
			body = out
			break
		}
		lastErr = fmt.Sprintf("%v: %s", err, out)
		time.Sleep(300 * time.Millisecond)
	}
	if strings.TrimSpace(body) != "served-by-alpha" {
		t.Errorf("curl http://alpha.vm:8080 from the host = %q (last error: %s)", body, lastErr)
	}
	if out, err := inNetns(t, "getent", "hosts", "beta.vm"); err != nil || !strings.HasPrefix(out, b.IP) {
		t.Errorf("host resolves beta.vm: %q %v", out, err)
	}

	// NAT: alpha is masqueraded, beta (--no-nat) is not; both rules go with the VMs.
	rules := natRules(t)
	if len(rules) != 1 || rules[0].String() != a.IP {
		t.Errorf("NAT rules %v, want only alpha (%s)", rules, a.IP)
	}
}

func TestNATRulesGoWithTheLastVM(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "natted", "--memory", "768M")
	if rules := natRules(t); len(rules) != 1 {
		t.Errorf("with one NAT VM: %v", rules)
	}
	mustBanger(t, "vm", "stop", "natted")
	if rules := natRules(t); len(rules) != 0 {
		t.Errorf("after stop: %v, want no rules", rules)
	}
	mustBanger(t, "vm", "start", "natted")
	if rules := natRules(t); len(rules) != 1 {
		t.Errorf("after start: %v", rules)
	}
	mustBanger(t, "vm", "delete", "-f", "natted")
	if rules := natRules(t); len(rules) != 0 {
		t.Errorf("after delete: %v, want the table gone", rules)
	}
	if out, _ := inNetns(t, "ip", "-o", "link", "show"); strings.Contains(out, " bg") {
		t.Errorf("taps left after delete:\n%s", out)
	}
	assertNothingLeft(t)
}

// TestGuestResolvesThroughTheForwarder points the daemon's upstream at a DNS server the test
// runs on loopback inside the namespace, and resolves a name from a guest through it.
func TestGuestResolvesThroughTheForwarder(t *testing.T) {
	ensureWarm(t)
	pc := listenPacketIn(t, h.netns, "udp", "127.0.0.1:5354")
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "upstream.test." {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "upstream.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP("192.0.2.55")}}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	defer srv.Shutdown()

	writeConfig(t, "dns_upstreams = [\"127.0.0.1:5354\"]\n")
	// Network settings are read when the daemon starts.
	mustBanger(t, "daemon", "stop")
	defer mustBanger(t, "daemon", "stop")

	mustBanger(t, "vm", "create", "--name", "resolver", "--memory", "768M")
	defer mustBanger(t, "vm", "delete", "-f", "resolver")
	if got := guest(t, "resolver", "getent", "hosts", "upstream.test"); !strings.HasPrefix(got, "192.0.2.55") {
		t.Errorf("guest resolved upstream.test to %q, want the test upstream's answer", got)
	}
}
