package dnsserver

import (
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// silentUpstream is a resolver that reads queries and never answers: every forwarded query
// waits for its full timeout.
func silentUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

type peaks struct{ fds, goroutines int }

// sample records the peak open fds and goroutines until stop is closed.
func sample(t *testing.T, stop <-chan struct{}) <-chan peaks {
	out := make(chan peaks, 1)
	go func() {
		var p peaks
		for {
			p.fds = max(p.fds, openFDs(t))
			p.goroutines = max(p.goroutines, runtime.NumGoroutine())
			select {
			case <-stop:
				out <- p
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return out
}

// flood sends n distinct forwarded queries from one UDP socket bound to src and counts the
// answers by rcode until quiet for 1.5s (so answers that take longer are not counted).
// sent runs once all are sent.
func flood(t *testing.T, src, server string, n int, sent func()) map[int]int {
	t.Helper()
	laddr, _ := net.ResolveUDPAddr("udp", src)
	raddr, _ := net.ResolveUDPAddr("udp", server)
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadBuffer(4 << 20)
	var mu sync.Mutex
	rcodes := map[int]int{}
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:k]) == nil {
				mu.Lock()
				rcodes[m.Rcode]++
				mu.Unlock()
				got.Add(1)
			}
		}
	}()
	for i := range n {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn("q"+itoa(i)+".example.test"), dns.TypeA)
		b, _ := m.Pack()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if i%200 == 199 {
			time.Sleep(time.Millisecond) // let the kernel buffers drain; still ~4,000 in well under a second
		}
	}
	if sent != nil {
		sent()
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	return rcodes
}

func itoa(i int) string {
	return string(rune('a'+i%26)) + string(rune('a'+(i/26)%26)) + string(rune('a'+(i/676)%26))
}

// A guest that sends 4,000 queries against a resolver that never answers must not make the
// daemon hold thousands of sockets and goroutines.
func TestFloodAgainstASlowUpstreamIsBounded(t *testing.T) {
	s := New([]string{silentUpstream(t)}, nil, nil)
	defer s.Close()
	addr := freeAddr(t)
	if err := s.Listen(plain{}, addr); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	baseFDs, baseG := openFDs(t), runtime.NumGoroutine()
	stop := make(chan struct{})
	pk := sample(t, stop)
	var held int
	rcodes := flood(t, "127.0.0.1:0", addr, 4000, func() {
		// Queries still waiting on the upstream after the flood: the goroutines a guest can
		// make the daemon hold. The fewest seen between 0.3 s and 2 s after sending (before
		// any forwarded query's timeout), so that a backlog of short-lived refusals on a
		// busy machine is not counted.
		time.Sleep(300 * time.Millisecond)
		held = runtime.NumGoroutine() - baseG
		for range 34 {
			time.Sleep(50 * time.Millisecond)
			held = min(held, runtime.NumGoroutine()-baseG)
		}
	})
	close(stop)
	p := <-pk
	t.Logf("4,000 queries: open fds %d -> peak %d (+%d), goroutines %d -> peak %d (+%d), held after it +%d; answers by rcode %v",
		baseFDs, p.fds, p.fds-baseFDs, baseG, p.goroutines, p.goroutines-baseG, held, rcodes)
	const limit = 64 + 16 // DefaultLimits.Inflight and the listeners
	if extra := p.fds - baseFDs; extra > limit {
		t.Errorf("peak open fds +%d during the flood, want at most %d", extra, limit)
	}
	if held > limit {
		t.Errorf("%d goroutines still held after the flood, want at most %d", held, limit)
	}
	if rcodes[dns.RcodeRefused] == 0 {
		t.Errorf("no query refused for rate; answers %v", rcodes)
	}
}
