package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
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

// ServeSerial serves the host over the virtio-serial port called name until ctx ends. While
// no host is connected the agent sleeps in awaitHost until one is (a read of the port returns
// zero bytes at once then, so reading again and again would keep the guest's CPU busy). After
// every session the port is closed and reopened, which also abandons writes that were blocked
// on a host that went away.
//
// While the port does not exist the lookup backs off from 20 ms to portPollMax: under
// Firecracker (vsock, no virtio-serial) the port never appears, and the agent must not spend
// the guest's CPU looking for it. Once found, the port's device is reopened without a new
// lookup until it fails to open: a guest restored from a snapshot (every clone) starts by
// ending the session its source had, and looking the port up in sysfs again cost it ~50 ms
// of its first second under emulation.
func (s *Server) ServeSerial(ctx context.Context, name string) error {
	idle := 20 * time.Millisecond
	poll := idle
	waitWorks := true
	dev := ""
	for ctx.Err() == nil {
		if dev == "" {
			found, err := FindPort("/sys", name)
			if err != nil {
				if sleep(ctx, poll) != nil {
					break
				}
				poll = min(poll*2, portPollMax)
				continue
			}
			dev, poll = found, idle
		}
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			s.Log.Printf("open %s: %v", dev, err)
			dev = "" // look it up again
			if sleep(ctx, time.Second) != nil {
				break
			}
			continue
		}
		if waitWorks {
			if _, err := awaitHost(ctx, f, hostWaitMax); err != nil && ctx.Err() == nil {
				// Without it the agent polls, as it did before it had awaitHost.
				s.Log.Printf("wait for the host on %s: %v; polling instead", dev, err)
				waitWorks = false
			}
		}
		err = s.ServeConn(ctx, f)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// No host connected (awaitHost timed out, or the host came and went).
			if !waitWorks {
				_ = sleep(ctx, idle)
			}
		default:
			s.Log.Printf("session on %s: %v", dev, err)
			_ = sleep(ctx, idle)
		}
	}
	return ctx.Err()
}

// hostWaitMax bounds one awaitHost: should a host's arrival ever fail to wake the agent, it
// is still served within this time.
var hostWaitMax = 5 * time.Second

// awaitHost waits until f, a virtio-serial port, has a host on its other side, ctx ends, or
// wait passes; it says whether a host is there. The guest kernel's virtio_console reports
// EPOLLHUP on a port while its host side is closed and wakes the port's pollers when the
// host opens it (VIRTIO_CONSOLE_PORT_OPEN). An edge-triggered epoll registration reports the
// state once when made and then sleeps until such a wake-up, so the agent does no work at all
// while no host is connected: polling the port instead (open, read 0 bytes, close, every
// 20 ms) kept an idle guest's vCPU about 30 % busy under emulation whenever its daemon was
// away, a snapshot's source included, for as long as the daemon did not come back.
//
// A connected port reports EPOLLOUT (room to write) or EPOLLIN (the host's first line), so
// either ends the wait. Any file whose poll reports EPOLLHUP until its other side opens and
// writes (a FIFO's read end once a writer has gone) behaves the same; tests use one.
func awaitHost(ctx context.Context, f *os.File, wait time.Duration) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return false, fmt.Errorf("epoll_create1: %w", err)
	}
	defer unix.Close(ep)
	// An eventfd, written when ctx ends, wakes the wait.
	cancel, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return false, fmt.Errorf("eventfd: %w", err)
	}
	defer unix.Close(cancel)
	stop := context.AfterFunc(ctx, func() { _, _ = unix.Write(cancel, []byte{1, 0, 0, 0, 0, 0, 0, 0}) })
	defer stop()
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, cancel, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(cancel)}); err != nil {
		return false, fmt.Errorf("epoll_ctl: %w", err)
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLET, Fd: int32(fd)})
	}); err != nil {
		return false, err
	}
	if cerr != nil {
		return false, fmt.Errorf("epoll_ctl: %w", cerr)
	}
	deadline := time.Now().Add(wait)
	events := make([]unix.EpollEvent, 2)
	for ctx.Err() == nil {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		n, err := unix.EpollWait(ep, events, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("epoll_wait: %w", err)
		}
		for _, e := range events[:n] {
			if e.Fd != int32(cancel) && e.Events&unix.EPOLLHUP == 0 {
				return true, nil
			}
		}
	}
	return false, ctx.Err()
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
