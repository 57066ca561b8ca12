package roothelper

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ActivationListener returns the socket systemd passed (socket activation: LISTEN_PID is this
// process and LISTEN_FDS is 1, the socket at descriptor 3), or nil when the helper was not
// started that way. It unsets the variables, so that no child inherits them.
func ActivationListener() (net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if fds != "1" {
		return nil, fmt.Errorf("systemd passed LISTEN_FDS=%q; banger-helper.socket has exactly one ListenStream", fds)
	}
	unix.CloseOnExec(3)
	f := os.NewFile(3, "banger-helper.socket")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the socket systemd passed: %w", err)
	}
	if _, ok := l.(*net.UnixListener); !ok {
		l.Close()
		return nil, fmt.Errorf("the socket systemd passed is not a unix stream socket")
	}
	return l, nil
}

// Listen makes the helper's socket at path itself (without systemd): the directory is made
// (0755) when missing, a stale socket is replaced, and the new one gets mode 0660 and group
// gid (root only, 0600, when gid is -1).
func Listen(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	// Until the chmod the socket has the umask's mode: at most the owner's (root's) access.
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := os.Chown(path, 0, gid); err != nil {
			l.Close()
			return nil, err
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// GroupID is the gid of the group the server admits, -1 for none.
func (s *Server) GroupID() int { return s.gid }
