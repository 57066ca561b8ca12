package dnsserver

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/miekg/dns"
)

// spoofingUpstream answers each query with the messages lies(query) returns, in order, on the
// socket the query came from, the way an off-path attacker racing the real resolver would.
func spoofingUpstream(t *testing.T, lies func(q *dns.Msg) []*dns.Msg) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			for _, m := range lies(q) {
				b, _ := m.Pack()
				_, _ = pc.WriteTo(b, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func answerA(q *dns.Msg, name, ip string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)}}
	return m
}

func serve(t *testing.T, s *Server) string {
	t.Helper()
	t.Cleanup(func() { s.Close() })
	addr := freeAddr(t)
	if err := s.Listen(plain{}, addr); err != nil {
		t.Fatal(err)
	}
	return addr
}

func quickLimits() Limits {
	l := DefaultLimits
	l.Timeout = 700 * time.Millisecond
	return l
}

func TestForwarderRefusesAnswersWithTheWrongIDOrQuestion(t *testing.T) {
	const good, evil = "192.0.2.1", "203.0.113.66"
	cases := []struct {
		name     string
		lies     func(q *dns.Msg) []*dns.Msg
		wantGood bool
	}{
		{"wrong id first, then the real answer", func(q *dns.Msg) []*dns.Msg {
			spoof := answerA(q, q.Question[0].Name, evil)
			spoof.Id = q.Id + 1
			return []*dns.Msg{spoof, answerA(q, q.Question[0].Name, good)}
		}, true},
		{"only a wrong id", func(q *dns.Msg) []*dns.Msg {
			spoof := answerA(q, q.Question[0].Name, evil)
			spoof.Id = q.Id ^ 0x5555
			return []*dns.Msg{spoof}
		}, false},
		{"right id, another question", func(q *dns.Msg) []*dns.Msg {
			spoof := answerA(q, "bank.example.", evil)
			spoof.Question[0].Name = "bank.example."
			return []*dns.Msg{spoof}
		}, false},
		{"right id, another type", func(q *dns.Msg) []*dns.Msg {
			spoof := answerA(q, q.Question[0].Name, evil)
			spoof.Question[0].Qtype = dns.TypeMX
			return []*dns.Msg{spoof}
		}, false},
		{"right id and question, but a query not an answer", func(q *dns.Msg) []*dns.Msg {
			spoof := answerA(q, q.Question[0].Name, evil)
			spoof.Response = false
			return []*dns.Msg{spoof}
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := New([]string{spoofingUpstream(t, c.lies)}, nil, nil)
			s.SetLimits(quickLimits())
			addr := serve(t, s)
			r := query(t, addr, "www.example.test", dns.TypeA)
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok && a.A.String() == evil {
					t.Fatalf("the forwarder passed on the spoofed answer: %v", r)
				}
			}
			if c.wantGood {
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != good {
					t.Errorf("got %v, want the real answer %s", r, good)
				}
			} else if r.Rcode != dns.RcodeServerFailure {
				t.Errorf("got %v, want SERVFAIL", r)
			}
		})
	}
}

// The upstream sees a fresh ID, not the guest's: a guest sending ID 0 every time must not
// make forwarded queries guessable.
func TestForwardedQueriesGetAFreshID(t *testing.T) {
	seen := make(chan uint16, 4)
	up := spoofingUpstream(t, func(q *dns.Msg) []*dns.Msg {
		seen <- q.Id
		return []*dns.Msg{answerA(q, q.Question[0].Name, "192.0.2.1")}
	})
	s := New([]string{up}, nil, nil)
	addr := serve(t, s)
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	m.Id = 0
	r, err := dns.Exchange(m, addr)
	if err != nil || r.Id != 0 || len(r.Answer) != 1 {
		t.Fatalf("answer %v, %v; want the answer under the client's ID 0", r, err)
	}
	if id := <-seen; id == 0 {
		t.Errorf("upstream saw the client's ID")
	}
}

// With the rate limit out of the way, a flood is held to Inflight upstream queries; the rest
// are answered SERVFAIL at once instead of waiting (on synctest's clock: before any forwarded
// query could time out).
func TestInflightUpstreamQueriesAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := &silentUpstream{}
		s := New([]string{"127.0.0.1:9"}, up.dial, nil) // dialled through up only
		l := DefaultLimits
		l.Inflight, l.Rate, l.Burst, l.Timeout = 8, 1e9, 1e9, 3*time.Second
		s.SetLimits(l)
		quick, rest := flood(s, "127.0.0.1:5353", 500)
		if open, _ := up.held(); quick[dns.RcodeServerFailure] != 500-8 || open != 8 {
			t.Errorf("500 queries, 8 in flight: answered at once %v with %d upstream sockets open; want 492 SERVFAIL and 8 open", quick, open)
		}
		late := rest()
		synctest.Wait()
		if open, peak := up.held(); late[dns.RcodeServerFailure] != 8 || open != 0 || peak != 8 {
			t.Errorf("after the upstream timeout: answers %v, %d sockets open, at most %d at once; want 8 SERVFAIL, none open, at most 8", late, open, peak)
		}
	})
}

// A source gets Burst queries at once, then Rate a second; another source has its own bucket.
// On synctest's clock no token refills between the queries, so the counts are exact.
func TestRateIsLimitedPerSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(nil, nil, nil)
		l := DefaultLimits
		l.Rate, l.Burst = 5, 20
		s.SetLimits(l)
		s.Set("dev", netip.MustParseAddr("172.16.0.5"))
		asks := func(src string, n int) map[int]int {
			counts := map[int]int{}
			for range n {
				counts[ask(s, src, "dev.vm")]++
			}
			return counts
		}
		if got := asks("127.0.0.1:5353", 60); got[dns.RcodeSuccess] != 20 || got[dns.RcodeRefused] != 40 {
			t.Errorf("60 queries at once from one source with burst 20: %v, want 20 answered and 40 REFUSED", got)
		}
		if got := asks("127.0.0.2:5353", 1); got[dns.RcodeSuccess] != 1 {
			t.Errorf("another source is refused too (%v): the limit must be per source", got)
		}
		time.Sleep(time.Second)
		if got := asks("127.0.0.1:5353", 6); got[dns.RcodeSuccess] != 5 || got[dns.RcodeRefused] != 1 {
			t.Errorf("6 queries a second later at 5 a second: %v, want 5 answered and 1 REFUSED", got)
		}
	})
}

func TestRateLimiterMemoryIsBounded(t *testing.T) {
	r := newRateLimiter(1, 1, 100)
	now := time.Now()
	for i := range 10000 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !r.allow(src, now) {
			t.Fatalf("first query from new source %v refused", src)
		}
		if r.allow(src, now) {
			t.Fatalf("second query from %v within its burst of 1 allowed", src)
		}
	}
	if n := len(r.buckets); n > 100 {
		t.Errorf("%d sources tracked, want at most 100", n)
	}
}

// tcpQuery sends a query for x.vm on c and returns the answer.
func tcpQuery(c net.Conn) (*dns.Msg, error) {
	co := &dns.Conn{Conn: c}
	m := new(dns.Msg)
	m.SetQuestion("x.vm.", dns.TypeA)
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	return co.ReadMsg()
}

// Connections beyond TCPConns are closed at once, unanswered, while the held ones keep working.
func TestExcessTCPConnectionsAreClosed(t *testing.T) {
	s := New(nil, nil, nil)
	l := DefaultLimits
	l.TCPConns = 4
	s.SetLimits(l)
	addr := serve(t, s)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// An answer shows the server accepted the connection, which took a slot.
		_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a guard against hanging, not a timing check
		if r, err := tcpQuery(c); err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("query on held connection %d: %v, %v", len(held), r, err)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a guard against hanging, not a timing check
	if r, err := tcpQuery(c); err == nil || (err != io.EOF && !strings.Contains(err.Error(), "reset")) {
		t.Errorf("fifth connection over a limit of 4: answer %v, %v; want it closed unanswered", r, err)
	}
	// A held connection still works.
	if r, err := tcpQuery(held[0]); err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("query on a held connection: %v, %v", r, err)
	}
}

func TestZoneApexAnswersItsSOAAndNS(t *testing.T) {
	s := New(nil, nil, nil)
	addr := serve(t, s)
	r := query(t, addr, "vm.", dns.TypeSOA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA || !r.Authoritative {
		t.Errorf("vm. SOA = %v, want NOERROR with the SOA", r)
	}
	r = query(t, addr, "VM.", dns.TypeNS)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ns.vm." {
		t.Errorf("vm. NS = %v, want NOERROR with the NS", r)
	}
	r = query(t, addr, "vm.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("vm. A = %v, want NODATA (NOERROR, no answer, SOA in authority)", r)
	}
}

func TestListenRefusesWildcardAddresses(t *testing.T) {
	s := New(nil, nil, nil)
	defer s.Close()
	for _, a := range []string{"0.0.0.0:0", "[::]:0", ":0", "localhost:0"} {
		if err := s.Listen(plain{}, a); err == nil {
			t.Errorf("Listen(%q) succeeded; the server must listen only on specific addresses", a)
		}
	}
}

type bridgeListener struct {
	plain
	cidr netip.Prefix
}

func (b bridgeListener) CIDR() netip.Prefix { return b.cidr }

// On the bridge address only the bridge's subnet (and the host) is answered; on loopback only
// loopback. Anyone else routing to the bridge address must not find an open resolver.
func TestClientsAreBanger(t *testing.T) {
	bridge := bridgeListener{cidr: netip.MustParsePrefix("172.16.0.1/24")}
	onBridge := clientsFor(netip.MustParseAddr("172.16.0.1"), bridge)
	onLoopback := clientsFor(netip.MustParseAddr("127.0.0.1"), bridge)
	for _, c := range []struct {
		allowed func(netip.Addr) bool
		src     string
		want    bool
	}{
		{onBridge, "172.16.0.7", true},
		{onBridge, "127.0.0.1", true},
		{onBridge, "172.16.1.7", false},
		{onBridge, "192.168.1.20", false},
		{onBridge, "::ffff:172.16.0.7", false}, // sourceAddr unmaps; a raw mapped address is not ours
		{onLoopback, "127.0.0.1", true},
		{onLoopback, "::1", true},
		{onLoopback, "172.16.0.7", false},
	} {
		if got := c.allowed(netip.MustParseAddr(c.src)); got != c.want {
			t.Errorf("source %s: allowed = %v, want %v", c.src, got, c.want)
		}
	}

	// End to end on loopback: a listener on 127.0.0.1 answers 127.0.0.1, and the same check
	// drops a query from a source outside the subnet without an answer.
	s := New(nil, nil, nil)
	s.Set("dev", netip.MustParseAddr("172.16.0.5"))
	addr := serve(t, s)
	if r := query(t, addr, "dev.vm", dns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("loopback client not answered: %v", r)
	}
	h := s.clientsOnly(onBridge)
	w := &recorder{remote: &net.UDPAddr{IP: net.IPv4(192, 168, 1, 20), Port: 5353}}
	m := new(dns.Msg)
	m.SetQuestion("dev.vm.", dns.TypeA)
	h.ServeDNS(w, m)
	if len(w.msgs) != 0 || w.raw != 0 {
		t.Errorf("a query from 192.168.1.20 on the bridge address was answered: %v", w.msgs)
	}
	w.remote = &net.UDPAddr{IP: net.IPv4(172, 16, 0, 9), Port: 5353}
	h.ServeDNS(w, m)
	if len(w.msgs) != 1 {
		t.Errorf("a guest's query was not answered")
	}
}

// A forwarded answer larger than the client said it takes (512 bytes without EDNS) reaches it
// truncated, with TC set, so the client asks again over TCP.
func TestForwardedUDPAnswersFitTheClient(t *testing.T) {
	up := spoofingUpstream(t, func(q *dns.Msg) []*dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q)
		for i := range 60 {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(i))})
		}
		return []*dns.Msg{m}
	})
	s := New([]string{up}, nil, nil)
	s.SetLimits(quickLimits())
	addr := serve(t, s)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion("big.example.test.", dns.TypeA)
	b, _ := m.Pack()
	_, _ = c.Write(b)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if n > dns.MinMsgSize || !r.Truncated || len(r.Answer) == 0 {
		t.Errorf("answer of %d bytes, TC %v, %d records; want at most 512 bytes, TC set, as many records as fit", n, r.Truncated, len(r.Answer))
	}
}
