package wire

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// errStopped is what a pollReader's Read returns once it has been woken to stop.
var errStopped = errors.New("stdin reader stopped")

// pollReader reads a file only after poll(2) has said it has something (data, its end, an
// error), so that a Read never blocks in read(2) (unless another reader of the same file
// takes the bytes first); wake ends a wait in progress, and every later Read returns
// errStopped without touching the file. This is how Call lets go of a
// terminal or pipe it was reading when the command ends, without closing it or changing its
// mode (os.Stdin is usually a blocking descriptor, on which deadlines do not work).
type pollReader struct {
	f    *os.File
	rc   syscall.RawConn
	quit <-chan struct{}
	// wakeR is watched beside the file; closing wakeW makes it readable (end of file).
	wakeR, wakeW int
}

func newPollReader(f *os.File, quit <-chan struct{}) (*pollReader, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("stdin %s: %w", f.Name(), err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("make the pipe that stops the stdin reader: %w", err)
	}
	return &pollReader{f: f, rc: rc, quit: quit, wakeR: p[0], wakeW: p[1]}, nil
}

// wake ends the wait of a Read in progress; that Read and every later one return errStopped.
// It is called once, after quit is closed.
func (r *pollReader) wake() { _ = unix.Close(r.wakeW) }

// release frees the wake pipe; it is called once, after wake, when no Read is in progress.
func (r *pollReader) release() { _ = unix.Close(r.wakeR) }

// Read waits until the file has something or the reader is woken, then reads it once.
func (r *pollReader) Read(p []byte) (int, error) {
	ready, err := r.wait()
	if err != nil {
		return 0, err
	}
	if !ready {
		return 0, errStopped
	}
	return r.f.Read(p)
}

// wait polls the file and the wake pipe; it reports whether the file is ready.
func (r *pollReader) wait() (ready bool, err error) {
	select {
	case <-r.quit:
		return false, nil
	default:
	}
	var perr error
	cerr := r.rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(r.wakeR), Events: unix.POLLIN}}
		for {
			_, perr = unix.Poll(fds, -1)
			if errors.Is(perr, unix.EINTR) {
				continue
			}
			if perr == nil && fds[1].Revents == 0 {
				ready = fds[0].Revents != 0
			}
			return
		}
	})
	if cerr != nil {
		return false, fmt.Errorf("wait for stdin %s: %w", r.f.Name(), cerr)
	}
	if perr != nil {
		return false, fmt.Errorf("wait for stdin %s: %w", r.f.Name(), perr)
	}
	return ready, nil
}
