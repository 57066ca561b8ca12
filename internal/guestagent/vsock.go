package guestagent

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/mdlayher/vsock"
)

// Back-off bounds for ServeVsock while the guest has no usable vsock (no device, no
// transport module, or a listen error): it tries again after vsockRetryMin, doubling up to
// vsockRetryMax, and logs only when the reason changes.
var (
	vsockRetryMin = 500 * time.Millisecond
	vsockRetryMax = 30 * time.Second
)

// ServeVsock serves the host over AF_VSOCK port port until ctx ends: under Firecracker the
// host connects through the VM's vsock unix socket ("CONNECT <port>"). Each connection is
// served by ServeConn, concurrently, so a host that reconnects while an old session lingers
// is answered at once. In a guest without vsock (QEMU here) it waits quietly.
func (s *Server) ServeVsock(ctx context.Context, port uint32) error {
	return s.serveListeners(ctx, func() (net.Listener, error) { return vsock.Listen(port, nil) }, "vsock port")
}

// serveListeners runs listen until it succeeds, serves the listener until it fails, and
// starts over, backing off between failed attempts. what names the endpoint in logs.
func (s *Server) serveListeners(ctx context.Context, listen func() (net.Listener, error), what string) error {
	retry := vsockRetryMin
	lastErr := ""
	for ctx.Err() == nil {
		ln, err := listen()
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				s.Log.Printf("%s: cannot listen (%v); retrying quietly with back-off", what, err)
				lastErr = msg
			}
			if sleep(ctx, retry) != nil {
				break
			}
			retry = min(retry*2, vsockRetryMax)
			continue
		}
		if lastErr != "" {
			s.Log.Printf("%s: listening", what)
		}
		lastErr = ""
		retry = vsockRetryMin
		if err := s.serveListener(ctx, ln); err != nil && ctx.Err() == nil {
			s.Log.Printf("%s: %v; listening again", what, err)
			if sleep(ctx, retry) != nil {
				break
			}
		}
	}
	return ctx.Err()
}

// serveListener accepts host connections on ln until ctx ends or ln fails; ln is closed when
// it returns.
func (s *Server) serveListener(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	var pause time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Transient errors (EMFILE, ECONNABORTED) get a short, growing pause; a listener
			// that keeps failing is given up and recreated by the caller.
			pause = max(pause*2, 10*time.Millisecond)
			if pause > time.Second {
				return err
			}
			if sleep(ctx, pause) != nil {
				return nil
			}
			continue
		}
		pause = 0
		go func() {
			err := s.ServeConn(ctx, conn)
			if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.Log.Printf("vsock session: %v", err)
			}
		}()
	}
}
