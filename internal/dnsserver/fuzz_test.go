package dnsserver

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// recorder is a dns.ResponseWriter that keeps what the handler writes.
type recorder struct {
	remote net.Addr
	msgs   []*dns.Msg
	raw    int
}

func (r *recorder) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr        { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msgs = append(r.msgs, m.Copy()); return nil }
func (r *recorder) Write(b []byte) (int, error) { r.raw++; return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}
func (r *recorder) String() string              { return r.remote.String() }
func inZone(name string) bool {
	n := strings.ToLower(name)
	return n == Zone || strings.HasSuffix(n, "."+Zone)
}
func fuzzSeed(f *testing.F, build func(m *dns.Msg)) {
	m := new(dns.Msg)
	build(m)
	b, _ := m.Pack()
	f.Add(b, false)
}

// upstreamIP is what the fuzz upstream answers every A query with: a forwarded answer is
// recognisable by it.
const upstreamIP = "192.0.2.53"

// FuzzServeDNS feeds the handler any message a guest can send. It must not panic, must answer
// at most once, under the client's ID, as a response, within the size the client can take;
// and every record it answers is either banger's own (in the vm zone, authoritative, a VM's
// address) or the upstream's, unchanged.
func FuzzServeDNS(f *testing.F) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(upstreamIP)}}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = up.ActivateAndServe() }()
	f.Cleanup(func() { _ = up.Shutdown() })

	s := New([]string{pc.LocalAddr().String()}, nil, nil)
	l := DefaultLimits
	l.Rate, l.Burst, l.Timeout = 1e9, 1e9, 300*time.Millisecond
	s.SetLimits(l)
	vmIP := netip.MustParseAddr("172.16.0.5")
	s.Set("dev", vmIP)

	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"dev.vm.", dns.TypeA}, {"api.dev.vm.", dns.TypeA}, {"vm.", dns.TypeSOA}, {"vm.", dns.TypeNS}, {"vm.", dns.TypeANY},
		{"nope.vm.", dns.TypeA}, {"dev.vm.", dns.TypeAAAA}, {"www.example.test.", dns.TypeA}, {"example.test.", dns.TypeMX}, {".", dns.TypeNS}} {
		fuzzSeed(f, func(m *dns.Msg) { m.SetQuestion(q.name, q.qtype) })
	}
	fuzzSeed(f, func(m *dns.Msg) { m.SetQuestion("www.example.test.", dns.TypeA); m.SetEdns0(4096, true) })
	fuzzSeed(f, func(m *dns.Msg) { m.SetQuestion("dev.vm.", dns.TypeA); m.Response = true })
	fuzzSeed(f, func(m *dns.Msg) {
		m.SetUpdate("vm.")
		m.Ns = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "x.vm.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(1, 2, 3, 4)}}
	})
	fuzzSeed(f, func(m *dns.Msg) {
		m.SetQuestion("dev.vm.", dns.TypeA)
		m.Question = append(m.Question, dns.Question{Name: "evil.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	})
	fuzzSeed(f, func(m *dns.Msg) { m.Id = 7 })

	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil {
			return // the server answers unparsable messages itself, before any handler
		}
		w := &recorder{remote: &net.UDPAddr{IP: net.IPv4(172, 16, 0, 9), Port: 5353}}
		if tcp {
			w.remote = &net.TCPAddr{IP: net.IPv4(172, 16, 0, 9), Port: 5353}
		}
		s.ServeDNS(w, req)
		if w.raw > 0 || len(w.msgs) > 1 {
			t.Fatalf("wrote %d raw buffers and %d messages, want at most one message", w.raw, len(w.msgs))
		}
		if len(w.msgs) == 0 {
			if !req.Response {
				t.Fatalf("a query went unanswered")
			}
			return
		}
		if req.Response {
			t.Fatalf("answered a response: %v", w.msgs[0])
		}
		resp := w.msgs[0]
		if resp.Id != req.Id || !resp.Response {
			t.Fatalf("answer id %d response %v, want id %d as a response", resp.Id, resp.Response, req.Id)
		}
		b, err := resp.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v", err)
		}
		limit := dns.MaxMsgSize
		if !tcp {
			limit = dns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > limit {
				limit = int(opt.UDPSize())
			}
		}
		if len(b) > limit {
			t.Fatalf("answer of %d bytes, client takes %d", len(b), limit)
		}
		if len(resp.Answer) == 0 {
			return
		}
		if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
			t.Fatalf("answered records to a malformed query: %v", resp)
		}
		q := req.Question[0]
		own := inZone(q.Name)
		for _, rr := range append(append([]dns.RR{}, resp.Answer...), resp.Ns...) {
			if own {
				if !inZone(rr.Header().Name) || !resp.Authoritative {
					t.Fatalf("a vm zone answer holds a record out of the zone, or is not authoritative: %v", resp)
				}
				if a, ok := rr.(*dns.A); ok && a.A.String() != vmIP.String() {
					t.Fatalf("a vm zone answer names %v, not the VM's address", a.A)
				}
				continue
			}
			if resp.Authoritative {
				t.Fatalf("claimed authority outside the vm zone: %v", resp)
			}
			if a, ok := rr.(*dns.A); !ok || a.A.String() != upstreamIP || !strings.EqualFold(a.Hdr.Name, q.Name) {
				t.Fatalf("forwarded answer is not the upstream's: %v", rr)
			}
		}
	})
}
