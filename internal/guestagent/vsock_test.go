package guestagent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
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

// pipeListener is an in-memory net.Listener, so that a test runs on synctest's clock: Dial
// hands the server one end of a net.Pipe and returns the other.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// Dial connects to the listener; it blocks until the server accepts or ctx ends.
func (l *pipeListener) Dial(ctx context.Context) (net.Conn, error) {
	host, guest := net.Pipe()
	var err error
	select {
	case l.conns <- guest:
		return host, nil
	case <-l.closed:
		err = net.ErrClosed
	case <-ctx.Done():
		err = fmt.Errorf("not accepted: %w", ctx.Err())
	}
	host.Close()
	guest.Close()
	return nil, err
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
	case <-time.After(time.Minute): // a guard against hanging, not a timing check
		t.Fatal("serveListeners did not return after its context ended")
	}
	if strings.Contains(logs.String(), "vsock session:") {
		t.Errorf("sessions logged errors:\n%s", logs.String())
	}
}

// TestServeListenersBacksOffQuietly: without vsock (QEMU guests) listening fails forever;
// the agent must neither spin nor fill the journal. On synctest's clock the attempts come
// exactly on the back-off's schedule: vsockRetryMin, doubling up to vsockRetryMax.
func TestServeListenersBacksOffQuietly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var attempts []time.Duration
		var logs lockedBuffer
		s := &Server{Version: "test", Log: log.New(&logs, "", 0)}
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		err := s.serveListeners(ctx, func() (net.Listener, error) {
			attempts = append(attempts, time.Since(start))
			if len(attempts) == 100 {
				cancel() // a busy loop never lets synctest's clock move: end it here
			}
			return nil, errors.New("address family not supported by protocol")
		}, "vsock port")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("serveListeners = %v; want the context's deadline", err)
		}
		var want []time.Duration
		for at, wait := time.Duration(0), vsockRetryMin; at < 2*time.Minute; at, wait = at+wait, min(wait*2, vsockRetryMax) {
			want = append(want, at) // 0, 0.5s, 1.5s, 3.5s, … 31.5s, then every 30s
		}
		if !slices.Equal(attempts, want) {
			t.Errorf("listen attempts at %v; want %v", attempts, want)
		}
		if n := strings.Count(logs.String(), "\n"); n != 1 {
			t.Errorf("logged %d lines for one unchanging failure; want 1:\n%s", n, logs.String())
		}
	})
}

// TestServeListenersRecoversFromAFailedListener: a listener whose Accept keeps failing is
// given up after its growing pauses pass a second, and replaced by a new one. On synctest's
// clock that takes about two seconds; the hour is a deterministic bound, not a timing check.
func TestServeListenersRecoversFromAFailedListener(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := newPipeListener()
		listened := make(chan struct{})
		calls := 0
		s := &Server{Version: "test", Log: log.New(io.Discard, "", 0)}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = s.serveListeners(ctx, func() (net.Listener, error) {
				calls++
				switch calls {
				case 1:
					return failingListener{}, nil
				case 2:
					close(listened)
					return ln, nil
				}
				return nil, errors.New("listen again")
			}, "test port")
		}()
		select {
		case <-listened:
		case <-time.After(time.Hour):
			t.Fatal("no new listener an hour after the failing one")
		}
		conn, err := ln.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The first step of the handshake shows a session serves the connection. The test
		// stops there: yamux, which the session starts after it, keeps timers in a pool that
		// synctest does not allow to be shared between bubbles.
		_, _ = io.WriteString(conn, "BANGER-SYNC 1\n")
		line, err := bufio.NewReader(conn).ReadString('\n')
		if want := "BANGER-ACK 1 test\n"; err != nil || line != want {
			t.Errorf("handshake through the new listener: read %q, %v; want %q", line, err, want)
		}
		conn.Close()
		cancel()
		<-done
	})
}

type failingListener struct{}

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }
func (failingListener) Close() error              { return nil }
func (failingListener) Addr() net.Addr            { return &net.UnixAddr{} }
