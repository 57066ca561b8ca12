package dnsserver

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is a token bucket per source address. It tracks at most max sources: when full,
// sources whose bucket has refilled (the same as untracked) are dropped, and if none has, an
// arbitrary one is, so memory stays bounded whatever the sources.
type rateLimiter struct {
	rate  float64 // tokens per second
	burst float64
	max   int

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst, max int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), max: max, buckets: map[netip.Addr]*bucket{}}
}

// allow takes a token from src's bucket and reports whether there was one.
func (r *rateLimiter) allow(src netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[src]
	if !ok {
		if len(r.buckets) >= r.max {
			r.evict(now)
		}
		b = &bucket{tokens: r.burst, last: now}
		r.buckets[src] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(r.burst, b.tokens+elapsed*r.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict makes room for one more source.
func (r *rateLimiter) evict(now time.Time) {
	for a, b := range r.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*r.rate >= r.burst {
			delete(r.buckets, a)
		}
	}
	for a := range r.buckets {
		if len(r.buckets) < r.max {
			return
		}
		delete(r.buckets, a)
	}
}

// limitListener closes connections beyond its slots as soon as they are accepted, so a flood
// of TCP connections costs the daemon neither fds nor goroutines beyond the limit (and does
// not stall the accept loop, as waiting for a slot would).
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
