package firecracker

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// DialVsock opens a host-initiated vsock connection to guest port through Firecracker's vsock
// unix socket: it connects, writes "CONNECT <port>\n" and waits for "OK <host port>\n". The
// returned connection carries the guest's bytes from then on. If nothing listens on the port
// in the guest, Firecracker closes the connection and DialVsock fails; callers retry.
func DialVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("vsock: %w", err)
	}
	return vsockOver(ctx, conn, port)
}

// vsockOver runs the CONNECT exchange for guest port on conn, a fresh connection to
// Firecracker's vsock unix socket, and closes conn when it fails.
func vsockOver(ctx context.Context, conn net.Conn, port uint32) (net.Conn, error) {
	if err := vsockConnect(ctx, conn, port); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// connectTimeout bounds the CONNECT exchange when ctx has no earlier deadline. Firecracker
// answers at once (OK, or a closed connection when no guest listens).
const connectTimeout = 5 * time.Second

func vsockConnect(ctx context.Context, conn net.Conn, port uint32) error {
	deadline := time.Now().Add(connectTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := io.WriteString(conn, "CONNECT "+strconv.FormatUint(uint64(port), 10)+"\n"); err != nil {
		return fmt.Errorf("vsock: CONNECT %d: %w", port, err)
	}
	// Read the answer one byte at a time so that nothing after its newline (the guest's
	// first bytes) is consumed here.
	var line []byte
	var b [1]byte
	for {
		if _, err := conn.Read(b[:]); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("vsock: CONNECT %d: %w", port, ctx.Err())
			}
			if err == io.EOF {
				return fmt.Errorf("vsock: CONNECT %d: closed without an answer (nothing listens on guest port %d yet)", port, port)
			}
			return fmt.Errorf("vsock: CONNECT %d: %w", port, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
		if len(line) > 64 {
			return fmt.Errorf("vsock: CONNECT %d: unexpected answer %q", port, line)
		}
	}
	f := strings.Fields(string(line))
	if len(f) != 2 || f[0] != "OK" {
		return fmt.Errorf("vsock: CONNECT %d: unexpected answer %q", port, line)
	}
	if _, err := strconv.ParseUint(f[1], 10, 32); err != nil {
		return fmt.Errorf("vsock: CONNECT %d: unexpected answer %q", port, line)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("vsock: CONNECT %d: %w", port, ctx.Err())
	}
	stop()
	_ = conn.SetDeadline(time.Time{})
	return nil
}
