// Package dnsserver is banger's DNS server (miekg/dns): it answers A queries for <name>.vm with
// the addresses of running VMs, from a table the VM service keeps current, and forwards every
// other query to upstream resolvers. It listens on the bridge address for guests and on a
// loopback port for the host, inside the network namespace guest networking lives in.
package dnsserver

import (
	"bufio"
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

// Server answers DNS.
type Server struct {
	upstreams []string
	dial      Dialer
	log       *slog.Logger

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
	return &Server{upstreams: ups, dial: dial, log: log, records: map[string]netip.Addr{}, servers: map[string][]*dns.Server{}}
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
// does nothing.
func (s *Server) Listen(l Listener, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.servers[addr]; ok {
		return nil
	}
	pc, err := l.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dns: listen on udp %s: %w", addr, err)
	}
	ln, err := l.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listen on tcp %s: %w", addr, err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
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

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if name == Zone || strings.HasSuffix(name, "."+Zone) {
		_ = w.WriteMsg(s.answerVM(req, q, name))
		return
	}
	resp, err := s.forward(req, w.RemoteAddr().Network())
	if err != nil {
		s.log.Debug("dns forward failed", "name", q.Name, "err", err)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		_ = w.WriteMsg(m)
		return
	}
	resp.Id = req.Id
	_ = w.WriteMsg(resp)
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

// forward asks the upstreams in order; a truncated UDP answer is asked again over TCP.
func (s *Server) forward(req *dns.Msg, network string) (*dns.Msg, error) {
	if len(s.upstreams) == 0 {
		return nil, errors.New("no upstream resolvers configured")
	}
	var lastErr error
	for _, up := range s.upstreams {
		nw := "udp"
		if network == "tcp" {
			nw = "tcp"
		}
		resp, err := s.exchange(nw, up, req)
		if err == nil && resp.Truncated && nw == "udp" {
			resp, err = s.exchange("tcp", up, req)
		}
		if err == nil {
			return resp, nil
		}
		lastErr = fmt.Errorf("%s: %w", up, err)
	}
	return nil, lastErr
}

func (s *Server) exchange(network, upstream string, req *dns.Msg) (*dns.Msg, error) {
	c, err := s.dial(network, upstream)
	if err != nil {
		return nil, err
	}
	conn := &dns.Conn{Conn: c, UDPSize: dns.DefaultMsgSize}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if err := conn.WriteMsg(req); err != nil {
		return nil, err
	}
	return conn.ReadMsg()
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
