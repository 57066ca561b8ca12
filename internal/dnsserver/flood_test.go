package dnsserver

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/miekg/dns"
)

// silentUpstream is a Dialer to a resolver that reads queries and never answers: every
// forwarded query waits for its full timeout. It is in memory (net.Pipe), so that the tests
// using it run on synctest's clock; it counts the sockets the server holds open through it,
// which are the only sockets a flood of UDP queries makes the server open.
type silentUpstream struct {
	mu         sync.Mutex
	open, peak int
}

func (u *silentUpstream) dial(network, addr string) (net.Conn, error) {
	server, upstream := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, upstream) }() // ends when the server closes its end
	u.mu.Lock()
	defer u.mu.Unlock()
	u.open++
	u.peak = max(u.peak, u.open)
	return &countedConn{Conn: server, u: u}, nil
}

// held returns the sockets open now and the most that were open at once.
func (u *silentUpstream) held() (open, peak int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.open, u.peak
}

type countedConn struct {
	net.Conn
	once sync.Once
	u    *silentUpstream
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.u.mu.Lock()
		defer c.u.mu.Unlock()
		c.u.open--
	})
	return c.Conn.Close()
}

// ask hands s.ServeDNS one A query for name from src ("ip:port") and returns the rcode of its
// answer, or -1 unless there was exactly one answer.
func ask(s *Server, src, name string) int {
	w := &recorder{remote: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src))}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	s.ServeDNS(w, m)
	if len(w.msgs) != 1 {
		return -1
	}
	return w.msgs[0].Rcode
}

// flood hands s n distinct forwarded queries from src, each on its own goroutine as the
// server's listeners do, all at the same instant of synctest's clock (call it in a bubble).
// It returns the answers by rcode given before any forwarded query could time out, and a
// function that waits for the rest and returns them.
func flood(s *Server, src string, n int) (quick map[int]int, rest func() map[int]int) {
	answers := make(chan int, n)
	for i := range n {
		go func() { answers <- ask(s, src, fmt.Sprintf("q%d.example.test", i)) }()
	}
	// Every goroutine has been answered or waits on the upstream: the clock has not moved.
	synctest.Wait()
	quick = map[int]int{}
	got := 0
	for len(answers) > 0 {
		quick[<-answers]++
		got++
	}
	return quick, func() map[int]int {
		late := map[int]int{}
		for ; got < n; got++ {
			late[<-answers]++ // synctest's clock moves on to the forwarded queries' timeout
		}
		return late
	}
}

// A guest that sends 4,000 queries at once against a resolver that never answers must not make
// the server hold thousands of sockets and goroutines: the first Burst pass the rate limit,
// Inflight of those are forwarded and wait on the upstream, and every other one is answered at
// once. On synctest's clock no token refills and no forwarded query times out during the
// flood, so the counts are exact.
func TestFloodAgainstASlowUpstreamIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := &silentUpstream{}
		s := New([]string{"127.0.0.1:9"}, up.dial, nil) // dialled through up only
		l := DefaultLimits
		const n = 4000
		quick, rest := flood(s, "127.0.0.1:5353", n)
		open, _ := up.held()
		t.Logf("%d queries: answered at once %v, %d waiting on the upstream", n, quick, open)
		if want := n - l.Burst; quick[dns.RcodeRefused] != want {
			t.Errorf("%d queries REFUSED at once, want %d: all but the burst of %d", quick[dns.RcodeRefused], want, l.Burst)
		}
		if want := l.Burst - l.Inflight; quick[dns.RcodeServerFailure] != want {
			t.Errorf("%d queries SERVFAIL at once, want %d: the burst less the %d in flight", quick[dns.RcodeServerFailure], want, l.Inflight)
		}
		waiting := n
		for _, k := range quick {
			waiting -= k
		}
		if open != l.Inflight || waiting != l.Inflight {
			t.Errorf("%d upstream sockets open and %d queries waiting, want %d of each", open, waiting, l.Inflight)
		}
		late := rest()
		synctest.Wait()
		open, peak := up.held()
		if late[dns.RcodeServerFailure] != l.Inflight || open != 0 || peak != l.Inflight {
			t.Errorf("after the upstream timeout: answers %v, %d sockets open, at most %d at once; want %d SERVFAIL, none open, at most %d",
				late, open, peak, l.Inflight, l.Inflight)
		}
	})
}
