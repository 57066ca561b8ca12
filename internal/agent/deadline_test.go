package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/banger-dev/banger/internal/wire"
)

// silentAgent serves the agent's side on a real loopback listener: it completes the
// handshake, accepts every stream and reads its request, and then never answers.
func silentAgent(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := ServerHandshake(conn, "9.9.9")
				if err != nil {
					return
				}
				sess, err := yamux.Server(struct {
					io.Reader
					io.Writer
					io.Closer
				}{r, conn, conn}, YamuxConfig())
				if err != nil {
					return
				}
				for {
					st, err := sess.AcceptStream()
					if err != nil {
						return
					}
					_, _ = DecodeRequest(wire.NewReader(st)) // read the request, never reply
				}
			}()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// A guest whose agent accepts requests and never answers makes every unary call fail with
// ErrNoReply at the call's deadline, even when the caller's context has none.
func TestCallsToASilentGuestHaveADeadline(t *testing.T) {
	addr, stop := silentAgent(t)
	defer stop()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Connect(context.Background(), conn)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	short := 200 * time.Millisecond
	c.timeouts = map[string]time.Duration{OpHealth: short, OpPorts: short, OpProvision: short, OpPoweroff: short, OpDial: short, OpRenew: short}

	calls := map[string]func(context.Context) error{
		"health":    func(ctx context.Context) error { _, err := c.Health(ctx); return err },
		"ports":     func(ctx context.Context) error { _, err := c.Ports(ctx); return err },
		"provision": func(ctx context.Context) error { return c.Provision(ctx, Provision{}) },
		"poweroff":  func(ctx context.Context) error { return c.Poweroff(ctx) },
		"renew":     func(ctx context.Context) error { _, err := c.Renew(ctx, Renewal{Clock: time.Now()}); return err },
		"dial": func(ctx context.Context) error {
			s, err := c.Dial(ctx, "tcp", "127.0.0.1:22")
			if s != nil {
				s.Close()
			}
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- call(context.Background()) }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrNoReply) {
					t.Fatalf("%s against a silent guest: %v; want ErrNoReply", name, err)
				}
			case <-time.After(time.Minute): // a guard against hanging the suite, not a timing check
				t.Fatalf("%s against a silent guest has not returned after a minute", name)
			}
		})
	}
}

func TestDefaultTimeouts(t *testing.T) {
	var c Client
	if c.timeout(OpPorts) != CallTimeout || c.timeout(OpHealth) != CallTimeout || c.timeout(OpProvision) != ProvisionTimeout {
		t.Fatalf("timeouts: ports %s, health %s, provision %s", c.timeout(OpPorts), c.timeout(OpHealth), c.timeout(OpProvision))
	}
	if c.timeout(OpRenew) != ProvisionTimeout {
		t.Fatalf("renew times out after %s, want %s: it reloads sshd as provisioning restarts it", c.timeout(OpRenew), ProvisionTimeout)
	}
}
