package guestagent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeListenersServesConcurrentHosts: every accepted connection gets its own session,
// so a host that reconnects while an old session lingers is answered at once.
func TestServeListenersServesConcurrentHosts(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs lockedBuffer
	s := &Server{Version: "test", Log: log.New(&logs, "", 0)}
	done := make(chan error, 1)
	listened := false
	go func() {
		done <- s.serveListeners(ctx, func() (net.Listener, error) {
			if listened {
				return nil, errors.New("listen again")
			}
			listened = true
			return ln, nil
		}, "test port")
	}()
	var clients []*agent.Client
	for i := 0; i < 2; i++ {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := agent.Connect(cctx, conn)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		if h, err := c.Health(cctx); err != nil || h.AgentVersion != "test" {
			t.Fatalf("session %d health = %+v, %v", i, h, err)
		}
		ccancel()
		clients = append(clients, c) // kept open: the second session runs beside the first
	}
	for _, c := range clients {
		c.Close()
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("serveListeners did not return after its context ended")
	}
	if strings.Contains(logs.String(), "vsock session:") {
		t.Errorf("sessions logged errors:\n%s", logs.String())
	}
}

// TestServeListenersBacksOffQuietly: without vsock (QEMU guests) listening fails forever;
// the agent must neither spin nor fill the journal.
func TestServeListenersBacksOffQuietly(t *testing.T) {
	oldMin, oldMax := vsockRetryMin, vsockRetryMax
	vsockRetryMin, vsockRetryMax = 5*time.Millisecond, 40*time.Millisecond
	defer func() { vsockRetryMin, vsockRetryMax = oldMin, oldMax }()

	var attempts atomic.Int32
	var logs lockedBuffer
	s := &Server{Version: "test", Log: log.New(&logs, "", 0)}
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	err := s.serveListeners(ctx, func() (net.Listener, error) {
		attempts.Add(1)
		return nil, errors.New("address family not supported by protocol")
	}, "vsock port")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("serveListeners = %v; want the context's end", err)
	}
	// 5+10+20+40+40+… ms: about 12 attempts in 400 ms; a busy loop would make thousands.
	if n := attempts.Load(); n < 3 || n > 20 {
		t.Errorf("%d listen attempts in 400 ms; want a back-off (about 12)", n)
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 {
		t.Errorf("logged %d lines for one unchanging failure; want 1:\n%s", n, logs.String())
	}
}

// TestServeListenersRecoversFromAFailedListener: a listener whose Accept keeps failing is
// replaced by a new one.
func TestServeListenersRecoversFromAFailedListener(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	var calls atomic.Int32
	s := &Server{Version: "test", Log: log.New(io.Discard, "", 0)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.serveListeners(ctx, func() (net.Listener, error) {
		if calls.Add(1) == 1 {
			return failingListener{}, nil
		}
		return net.Listen("unix", sock)
	}, "test port")
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			c, err := agent.Connect(ctx, conn)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listener after the failing one (%d listens): %v", calls.Load(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type failingListener struct{}

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }
func (failingListener) Close() error              { return nil }
func (failingListener) Addr() net.Addr            { return &net.UnixAddr{} }
