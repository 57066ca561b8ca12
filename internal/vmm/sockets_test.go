package vmm

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestUntilListening: a socket that is missing, then bound but refusing, is waited for; any
// other error ends the wait; so do the VMM's exit and the context.
func TestUntilListening(t *testing.T) {
	ctx := context.Background()
	notYet := []error{os.ErrNotExist, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, &os.PathError{Op: "stat", Path: "x", Err: syscall.ENOENT}}
	calls := 0
	err := UntilListening(ctx, nil, func() error {
		calls++
		if calls <= len(notYet) {
			return notYet[calls-1]
		}
		return nil
	})
	if err != nil || calls != len(notYet)+1 {
		t.Errorf("UntilListening = %v after %d tries; want nil after %d", err, calls, len(notYet)+1)
	}

	denied := &os.PathError{Op: "stat", Path: "x", Err: syscall.EACCES}
	calls = 0
	if err := UntilListening(ctx, nil, func() error { calls++; return denied }); err != denied || calls != 1 {
		t.Errorf("UntilListening on EACCES = %v after %d tries; want it at once", err, calls)
	}

	exited := make(chan struct{})
	close(exited)
	if err := UntilListening(ctx, exited, func() error { return syscall.ECONNREFUSED }); !errors.Is(err, ErrExited) {
		t.Errorf("UntilListening with the VMM gone = %v; want ErrExited", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	calls = 0
	err = UntilListening(cctx, nil, func() error {
		calls++
		if calls == 2 {
			cancel()
		}
		return syscall.ENOENT
	})
	if !errors.Is(err, syscall.ENOENT) || calls != 2 {
		t.Errorf("UntilListening with the context done = %v after %d tries; want the last error after 2", err, calls)
	}
}

// TestUntilListeningOnARealSocket: a unix socket bound but not listening refuses; the wait ends
// once it listens.
func TestUntilListeningOnARealSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	tries := 0
	err = UntilListening(context.Background(), nil, func() error {
		tries++
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		} else if tries == 1 {
			// Refused while bound only: now listen, as a VMM does a moment later.
			if lerr := syscall.Listen(fd, 1); lerr != nil {
				t.Fatal(lerr)
			}
		}
		return err
	})
	if err != nil || tries != 2 {
		t.Errorf("UntilListening = %v after %d tries; want nil after 2 (refused, then listening)", err, tries)
	}
}
