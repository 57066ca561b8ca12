package vmservice

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/store"
)

// Ports lists a running VM's listening sockets.
func (s *Service) Ports(ctx context.Context, ref string) ([]agent.Port, error) {
	c, vm, err := s.agentOf(ctx, ref)
	if err != nil {
		return nil, err
	}
	ports, err := c.Ports(ctx)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return ports, nil
}

// ListenAddr is a TCP listening address in a guest, as Ports reports it.
type ListenAddr struct {
	Addr string // 0.0.0.0, ::, or a specific address
	Port int
}

// Bounds of SpeaksHTTP: a guest decides how many ports it lists and how slowly it answers.
const (
	httpProbeMax      = 32 // ports probed per call; the rest count as not HTTP
	httpProbeParallel = 8
	httpProbeTimeout  = 1500 * time.Millisecond
)

// SpeaksHTTP asks each listening address of a running VM, through its agent, whether an HTTP
// server answers there (a HEAD request, host as its Host header) and reports which did. A
// server that speaks first (sshd's banner), says anything but "HTTP/", or stays silent for
// httpProbeTimeout does not. At most httpProbeMax ports are probed.
func (s *Service) SpeaksHTTP(ctx context.Context, ref, host string, addrs []ListenAddr) []bool {
	out := make([]bool, len(addrs))
	sem := make(chan struct{}, httpProbeParallel)
	var wg sync.WaitGroup
	for i, a := range addrs {
		if i >= httpProbeMax {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = s.probeHTTP(ctx, ref, host, a)
		}()
	}
	wg.Wait()
	return out
}

func (s *Service) probeHTTP(ctx context.Context, ref, host string, a ListenAddr) bool {
	ctx, cancel := context.WithTimeout(ctx, httpProbeTimeout)
	defer cancel()
	addr := a.Addr
	if ip := net.ParseIP(addr); ip == nil {
		return false
	} else if ip.IsUnspecified() && ip.To4() != nil {
		addr = "127.0.0.1"
	} else if ip.IsUnspecified() {
		addr = "::1"
	}
	conn, _, err := s.Dial(ctx, ref, "tcp", net.JoinHostPort(addr, strconv.Itoa(a.Port)))
	if err != nil {
		return false
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // bounds the write and the read
	defer stop()
	if _, err := io.WriteString(conn, "HEAD / HTTP/1.0\r\nHost: "+host+"\r\nUser-Agent: banger\r\n\r\n"); err != nil {
		return false
	}
	var b [5]byte
	_, err = io.ReadFull(conn, b[:])
	return err == nil && string(b[:]) == "HTTP/"
}

// Dial connects to network/address inside a running VM, through its agent.
func (s *Service) Dial(ctx context.Context, ref, network, address string) (net.Conn, store.VM, error) {
	c, vm, err := s.agentOf(ctx, ref)
	if err != nil {
		return nil, vm, err
	}
	conn, err := c.Dial(ctx, network, address)
	if err != nil {
		return nil, vm, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return conn, vm, nil
}

// agentOf returns the agent session of a running VM.
func (s *Service) agentOf(ctx context.Context, ref string) (*agent.Client, store.VM, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return nil, vm, err
	}
	c, err := s.agentOfVM(ctx, vm)
	return c, vm, err
}

// agentOfVM returns the agent session of vm, which must be running.
func (s *Service) agentOfVM(ctx context.Context, vm store.VM) (*agent.Client, error) {
	in := s.instance(vm.ID)
	if vm.State != StateRunning || in == nil {
		return nil, conflictf("vm %q is %s, not running", vm.Name, vm.State)
	}
	c, err := s.session(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return c, nil
}
