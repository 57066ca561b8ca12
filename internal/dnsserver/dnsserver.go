// Package dnsserver is banger's DNS server (miekg/dns): it answers A queries for <name>.vm with
// the addresses of running VMs, from a table the VM service keeps current, and forwards every
// other query to upstream resolvers. It listens on the bridge address for guests and on a
// loopback port for the host, inside the network namespace guest networking lives in.
//
// Guests are hostile, so every resource a query can hold is bounded: queries per second per
// source address (a token bucket; excess answered REFUSED), upstream queries in flight at
// once (excess answered SERVFAIL at once), the time one may take, and open TCP connections.
// An upstream answer is taken only when its ID and question match what was asked.
package dnsserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Zone is the domain VMs are named in.
const Zone = "vm."

// ttl of the answers for VMs: short, since VMs come and go.
const ttl = 5

// Dialer opens sockets where the server lives (inside a network namespace, say).
type Dialer func(network, addr string) (net.Conn, error)

// Listener opens listening sockets where the server lives.
type Listener interface {
	ListenPacket(network, addr string) (net.PacketConn, error)
	Listen(network, addr string) (net.Listener, error)
}

// Subnet is implemented by a Listener whose non-loopback addresses sit on one subnet (the
// bridge, whose CIDR it returns): the server answers there only queries from that subnet, so
// that the bridge address, reachable from other networks on a host that routes, is not an
// open resolver. A Listener without it gets no source check on non-loopback addresses.
type Subnet interface {
	CIDR() netip.Prefix
}

// Limits bound what queries can make the server hold.
type Limits struct {
	Inflight int           // upstream queries in flight at once; more are answered SERVFAIL
	Rate     float64       // queries per second per source address; more are answered REFUSED
	Burst    int           // queries a quiet source may send at once
	Sources  int           // source addresses whose rate is tracked at once
	Timeout  time.Duration // one forwarded query, over all upstreams
	TCPConns int           // open TCP connections; more are closed at once
}

// DefaultLimits are generous for a guest's resolver and small for the daemon.
var DefaultLimits = Limits{Inflight: 64, Rate: 100, Burst: 200, Sources: 4096, Timeout: 4 * time.Second, TCPConns: 64}

// Server answers DNS.
type Server struct {
	upstreams []string
	dial      Dialer
	log       *slog.Logger
	limits    Limits
	inflight  chan struct{} // a slot per upstream query in flight
	rate      *rateLimiter
	tcpConns  chan struct{} // a slot per open TCP connection

	mu      sync.RWMutex
	records map[string]netip.Addr // VM name → address
	servers map[string][]*dns.Server
}

// New returns a server forwarding to upstreams ("ip" or "ip:port"). dial opens the sockets for
// forwarding (nil: the daemon's own namespace).
func New(upstreams []string, dial Dialer, log *slog.Logger) *Server {
	if dial == nil {
		dial = net.Dial
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var ups []string
	for _, u := range upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			u = net.JoinHostPort(u, "53")
		}
		ups = append(ups, u)
	}
	lim := DefaultLimits
	return &Server{upstreams: ups, dial: dial, log: log, limits: lim,
		inflight: make(chan struct{}, lim.Inflight),
		rate:     newRateLimiter(lim.Rate, lim.Burst, lim.Sources),
		tcpConns: make(chan struct{}, lim.TCPConns),
		records:  map[string]netip.Addr{}, servers: map[string][]*dns.Server{}}
}

// SetLimits replaces the limits; call it before Listen.
func (s *Server) SetLimits(l Limits) {
	s.limits = l
	s.inflight = make(chan struct{}, l.Inflight)
	s.rate = newRateLimiter(l.Rate, l.Burst, l.Sources)
	s.tcpConns = make(chan struct{}, l.TCPConns)
}

// Upstreams are the resolvers non-VM queries go to.
func (s *Server) Upstreams() []string { return s.upstreams }

// Set makes <name>.vm answer ip.
func (s *Server) Set(name string, ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[strings.ToLower(name)] = ip
}

// Remove forgets <name>.vm.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, strings.ToLower(name))
}

// Lookup returns the address of <name>.vm, if any.
func (s *Server) Lookup(name string) (netip.Addr, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ip, ok := s.records[strings.ToLower(name)]
	return ip, ok
}

// Listen serves UDP and TCP on addr ("ip:port") through l; listening again on the same address
// does nothing. addr must name one of banger's own addresses (the bridge's, loopback): a
// wildcard address would answer, and forward for, every network the host is on.
func (s *Server) Listen(l Listener, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.servers[addr]; ok {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dns: listen address %q: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.IsUnspecified() {
		return fmt.Errorf("dns: listen address %q is not one specific IP address; give the bridge's or a loopback address", addr)
	}
	h := s.clientsOnly(clientsFor(ip, l))
	pc, err := l.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dns: listen on udp %s: %w", addr, err)
	}
	ln, err := l.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listen on tcp %s: %w", addr, err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: &limitListener{Listener: ln, slots: s.tcpConns}, Handler: h,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxTCPQueries: 100,
		IdleTimeout: func() time.Duration { return 5 * time.Second }}
	for _, srv := range []*dns.Server{udp, tcp} {
		go func(srv *dns.Server) {
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Warn("dns server stopped", "addr", addr, "err", err)
			}
		}(srv)
	}
	s.servers[addr] = []*dns.Server{udp, tcp}
	s.log.Info("dns listening", "addr", addr)
	return nil
}

// Close stops every listener.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for addr, srvs := range s.servers {
		for _, srv := range srvs {
			errs = append(errs, srv.Shutdown())
		}
		delete(s.servers, addr)
	}
	return errors.Join(errs...)
}

// clientsFor says which sources a listener on ip answers: loopback ones on a loopback address,
// the listener's subnet (and loopback: the host itself) on another address when it tells one.
func clientsFor(ip netip.Addr, l Listener) func(netip.Addr) bool {
	if ip.Unmap().IsLoopback() {
		return netip.Addr.IsLoopback
	}
	sn, ok := l.(Subnet)
	if !ok {
		return func(netip.Addr) bool { return true }
	}
	cidr := sn.CIDR().Masked()
	return func(a netip.Addr) bool { return a.IsLoopback() || cidr.Contains(a) }
}

// clientsOnly drops queries whose source allowed refuses: no answer, so a spoofed source
// cannot be used to reflect answers at a third party.
func (s *Server) clientsOnly(allowed func(netip.Addr) bool) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if src, ok := sourceAddr(w.RemoteAddr()); !ok || !allowed(src) {
			s.log.Debug("dns: query from outside banger's networks dropped", "from", w.RemoteAddr())
			_ = w.Close()
			return
		}
		s.ServeDNS(w, req)
	})
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if req.Response {
		return // not a query: never answer an answer
	}
	if src, ok := sourceAddr(w.RemoteAddr()); !ok || !s.rate.allow(src, time.Now()) {
		reply(w, req, dns.RcodeRefused)
		return
	}
	if req.Opcode != dns.OpcodeQuery {
		reply(w, req, dns.RcodeNotImplemented)
		return
	}
	if len(req.Question) != 1 {
		reply(w, req, dns.RcodeFormatError)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if name == Zone || strings.HasSuffix(name, "."+Zone) {
		_ = w.WriteMsg(s.answerVM(req, q, name))
		return
	}
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		s.log.Debug("dns: too many queries in flight", "name", q.Name)
		reply(w, req, dns.RcodeServerFailure)
		return
	}
	network := "udp"
	if w.RemoteAddr() != nil && w.RemoteAddr().Network() == "tcp" {
		network = "tcp"
	}
	resp, err := s.forward(req, network)
	if err != nil {
		s.log.Debug("dns forward failed", "name", q.Name, "err", err)
		reply(w, req, dns.RcodeServerFailure)
		return
	}
	resp.Id = req.Id
	if network == "udp" {
		// As much as fits what the client can take; it asks again over TCP for the rest.
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

func reply(w dns.ResponseWriter, req *dns.Msg, rcode int) {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	_ = w.WriteMsg(m)
}

func sourceAddr(a net.Addr) (netip.Addr, bool) {
	if a == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// answerVM answers authoritatively for the vm zone.
func (s *Server) answerVM(req *dns.Msg, q dns.Question, name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	label := strings.TrimSuffix(strings.TrimSuffix(name, Zone), ".")
	// Subdomains of a VM (api.dev.vm) answer like the VM, so one VM can serve many names.
	if i := strings.LastIndexByte(label, '.'); i >= 0 {
		label = label[i+1:]
	}
	ip, ok := s.Lookup(label)
	switch {
	case name == Zone:
		// The apex exists: its SOA and NS, NODATA for anything else.
		switch q.Qtype {
		case dns.TypeSOA:
			m.Answer = []dns.RR{soa()}
		case dns.TypeNS:
			m.Answer = []dns.RR{&dns.NS{Hdr: dns.RR_Header{Name: Zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: ttl}, Ns: "ns." + Zone}}
		default:
			m.Ns = []dns.RR{soa()}
		}
	case label == "" || !ok:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa()}
	case q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY:
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: ip.AsSlice()}}
	default:
		// The name exists but has no record of this type (AAAA, MX, …): NODATA.
		m.Ns = []dns.RR{soa()}
	}
	return m
}

func soa() dns.RR {
	return &dns.SOA{Hdr: dns.RR_Header{Name: Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns: "ns." + Zone, Mbox: "hostmaster." + Zone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: ttl}
}

// forward asks the upstreams in order, under a fresh ID; a truncated UDP answer is asked again
// over TCP. The whole takes at most limits.Timeout.
func (s *Server) forward(req *dns.Msg, network string) (*dns.Msg, error) {
	if len(s.upstreams) == 0 {
		return nil, errors.New("no upstream resolvers configured")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.limits.Timeout)
	defer cancel()
	out := req.Copy()
	out.Id = dns.Id()
	var lastErr error
	for _, up := range s.upstreams {
		resp, err := s.exchange(ctx, network, up, out)
		if err == nil && resp.Truncated && network == "udp" {
			resp, err = s.exchange(ctx, "tcp", up, out)
		}
		if err == nil {
			return resp, nil
		}
		lastErr = fmt.Errorf("%s: %w", up, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// errMismatch is an upstream answer that is not the answer to the question asked.
var errMismatch = errors.New("answer does not match the question asked")

// exchange asks one upstream. miekg/dns's client skips (UDP) or refuses (TCP) answers with
// another ID; the question must be the one asked too, so that a spoofed answer needs both.
func (s *Server) exchange(ctx context.Context, network, upstream string, req *dns.Msg) (*dns.Msg, error) {
	c, err := s.dial(network, upstream)
	if err != nil {
		return nil, err
	}
	// Read up to 4 KiB even when the client did not say it takes more (some upstreams send
	// more than 512 bytes anyway); ServeDNS truncates to what the client takes.
	conn := &dns.Conn{Conn: c, UDPSize: dns.DefaultMsgSize}
	defer conn.Close()
	client := &dns.Client{Net: network, Timeout: s.limits.Timeout}
	resp, _, err := client.ExchangeWithConnContext(ctx, req, conn)
	if err != nil {
		return nil, err
	}
	if !resp.Response || resp.Id != req.Id || !sameQuestion(resp.Question, req.Question) {
		return nil, errMismatch
	}
	return resp, nil
}

func sameQuestion(got, asked []dns.Question) bool {
	if len(got) != 1 || len(asked) != 1 {
		return false
	}
	return strings.EqualFold(got[0].Name, asked[0].Name) && got[0].Qtype == asked[0].Qtype && got[0].Qclass == asked[0].Qclass
}

// HostUpstreams reads the host's resolvers from resolv.conf. When it names only the
// systemd-resolved stub (127.0.0.53), the resolvers resolved itself uses are taken instead.
// skip excludes addresses (banger's own server).
func HostUpstreams(resolvConf string, skip ...string) []string {
	servers := nameservers(resolvConf)
	if len(servers) == 1 && servers[0] == "127.0.0.53" {
		if real := nameservers("/run/systemd/resolve/resolv.conf"); len(real) > 0 {
			servers = real
		}
	}
	var out []string
outer:
	for _, s := range servers {
		for _, k := range skip {
			if s == k {
				continue outer
			}
		}
		out = append(out, s)
	}
	return out
}

func nameservers(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if _, err := netip.ParseAddr(strings.Split(fields[1], "%")[0]); err == nil {
				out = append(out, fields[1])
			}
		}
	}
	return out
}
