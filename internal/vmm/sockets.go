package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is 108 bytes, one of
// them the terminating NUL).
const maxSocketPath = 107

// ClearSockets prepares the socket paths a driver is about to have its VMM create: each must
// fit the unix socket limit, and a stale file left by an earlier VMM is removed. driver names
// the VMM in the error.
func ClearSockets(driver string, sockets map[string]string) error {
	for _, s := range sockets {
		if len(s) > maxSocketPath {
			return fmt.Errorf("%s: socket path %s is %d bytes, over the %d-byte unix socket limit; use a shorter BANGER_SOCKET directory", driver, s, len(s), maxSocketPath)
		}
		_ = os.Remove(s)
	}
	return nil
}

// ErrExited is what UntilListening returns when the VMM process exits while it waits.
var ErrExited = errors.New("the VMM process exited")

// UntilListening calls try (a dial, a stat, a first request) until it returns anything but
// "not yet", and returns that: a socket file that does not exist yet (ENOENT) or exists but does
// not listen yet (ECONNREFUSED: a VMM binds its socket before it listens on it, so a refusal
// right after the file appears means "not yet", not "gone"). It returns ErrExited when exited
// (the VMM's Process.Done) is closed first, and try's last error once ctx is done: ctx bounds
// the wait.
func UntilListening(ctx context.Context, exited <-chan struct{}, try func() error) error {
	for {
		err := try()
		if err == nil || !(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist)) || ctx.Err() != nil {
			return err
		}
		select {
		case <-exited:
			return ErrExited
		case <-ctx.Done():
			return err
		case <-time.After(2 * time.Millisecond):
		}
	}
}
