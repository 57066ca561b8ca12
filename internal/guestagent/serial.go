package guestagent

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FindPort returns the device node of the virtio-serial port called name, looking it up in
// sysfs so that no udev rule (/dev/virtio-ports/…) is needed.
func FindPort(sysfs, name string) (string, error) {
	names, err := filepath.Glob(filepath.Join(sysfs, "class/virtio-ports/*/name"))
	if err != nil {
		return "", err
	}
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return filepath.Join("/dev", filepath.Base(filepath.Dir(p))), nil
		}
	}
	return "", ErrNoPort
}

// ServeSerial serves the host over the virtio-serial port called name until ctx ends. A read
// of zero bytes on the port means the host side is not connected; the agent then waits and
// tries again. After every session the port is closed and reopened, which also abandons
// writes that were blocked on a host that went away.
//
// While the port does not exist the lookup backs off from 20 ms to portPollMax: under
// Firecracker (vsock, no virtio-serial) the port never appears, and the agent must not spend
// the guest's CPU looking for it.
func (s *Server) ServeSerial(ctx context.Context, name string) error {
	idle := 20 * time.Millisecond
	poll := idle
	for ctx.Err() == nil {
		dev, err := FindPort("/sys", name)
		if err != nil {
			if sleep(ctx, poll) != nil {
				break
			}
			poll = min(poll*2, portPollMax)
			continue
		}
		poll = idle
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			s.Log.Printf("open %s: %v", dev, err)
			if sleep(ctx, time.Second) != nil {
				break
			}
			continue
		}
		err = s.ServeConn(ctx, f)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// No host connected yet.
			_ = sleep(ctx, idle)
		default:
			s.Log.Printf("session on %s: %v", dev, err)
			_ = sleep(ctx, idle)
		}
	}
	return ctx.Err()
}

// portPollMax is the longest pause between two lookups of a missing virtio-serial port: a
// port that appears late (it does not under QEMU, where it exists from boot) is found within
// it.
var portPollMax = 2 * time.Second

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
