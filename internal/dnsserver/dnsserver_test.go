package dnsserver

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
)

type plain struct{}

func (plain) ListenPacket(network, addr string) (net.PacketConn, error) {
	pc, err := net.ListenPacket(network, addr)
	if err == nil {
		_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20) // floods in the tests should not be lost to a full buffer
	}
	return pc, err
}
func (plain) Listen(network, addr string) (net.Listener, error) { return net.Listen(network, addr) }

// freeAddr finds a free loopback port for UDP and TCP.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// upstream runs a tiny authoritative server for example.test on loopback.
func upstream(t *testing.T) string {
	t.Helper()
	addr := freeAddr(t)
	mux := dns.NewServeMux()
	mux.HandleFunc("example.test.", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.7")}}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{Addr: addr, Net: "udp", Handler: mux}
	ready := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(ready) }
	go func() { _ = srv.ListenAndServe() }()
	<-ready
	t.Cleanup(func() { _ = srv.Shutdown() })
	return addr
}

func query(t *testing.T, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 3 * time.Second}
	resp, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return resp
}

func TestAnswersVMsAndForwardsTheRest(t *testing.T) {
	up := upstream(t)
	s := New([]string{up}, nil, nil)
	defer s.Close()
	addr := freeAddr(t)
	if err := s.Listen(plain{}, addr); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(plain{}, addr); err != nil {
		t.Errorf("listening twice on one address must be a no-op: %v", err)
	}
	s.Set("dev", netip.MustParseAddr("172.16.0.5"))

	r := query(t, addr, "dev.vm", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "172.16.0.5" || !r.Authoritative {
		t.Errorf("dev.vm A = %v", r)
	}
	if r := query(t, addr, "API.Dev.VM", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("subdomain, mixed case: %v", r)
	}
	if r := query(t, addr, "dev.vm", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("dev.vm AAAA = %v, want NODATA", r)
	}
	if r := query(t, addr, "nope.vm", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("nope.vm = %v, want NXDOMAIN", r)
	}
	if r := query(t, addr, "www.example.test", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Errorf("forwarded = %v", r)
	}
	s.Remove("dev")
	if r := query(t, addr, "dev.vm", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("after Remove: %v", r)
	}
}

func TestNoUpstreamIsServfail(t *testing.T) {
	s := New(nil, nil, nil)
	defer s.Close()
	addr := freeAddr(t)
	if err := s.Listen(plain{}, addr); err != nil {
		t.Fatal(err)
	}
	if r := query(t, addr, "example.org", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("without upstreams: %v, want SERVFAIL", r)
	}
}

func TestHostUpstreams(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	_ = os.WriteFile(p, []byte("# comment\nnameserver 10.0.0.2\nnameserver 172.16.0.1\nsearch x\nnameserver fe80::1%eth0\n"), 0o644)
	got := HostUpstreams(p, "172.16.0.1")
	if len(got) != 2 || got[0] != "10.0.0.2" || got[1] != "fe80::1%eth0" {
		t.Errorf("HostUpstreams = %v, want the listed servers minus banger's own", got)
	}
}
