package fcjail

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/peercred"
)

// OpenSocket opens the unix socket at rel (slash-separated, e.g. "run/api.sock") inside
// the jail root without following any symlink: the jail's uid owns root and everything below
// it, and a compromised Firecracker could replace any of it with a link to a socket of the
// host (a container runtime's, another VM's) for the root daemon to talk to. Every directory
// on the way is opened with O_NOFOLLOW|O_DIRECTORY, the socket itself with O_PATH|O_NOFOLLOW
// (which opens a symlink as itself), and what was opened must be a socket owned by uid. The
// returned O_PATH file names that very inode.
func OpenSocket(root, rel string, uid int) (*os.File, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("firecracker: open jail %s: %w", root, err)
	}
	parts := strings.Split(rel, "/")
	for _, p := range parts[:len(parts)-1] {
		next, err := unix.Openat(dir, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(dir)
		if err != nil {
			return nil, fmt.Errorf("firecracker: %s in the jail is not a directory (a symlink is never followed there): %w", filepath.Join(root, p), err)
		}
		dir = next
	}
	path := filepath.Join(root, rel)
	fd, err := unix.Openat(dir, parts[len(parts)-1], unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	unix.Close(dir)
	if err != nil {
		return nil, fmt.Errorf("firecracker: open socket %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	hint := "the jailed Firecracker (uid " + strconv.Itoa(uid) + ") may be compromised; banger did not connect"
	if err := peercred.CheckSocketFileInfo(path, fi, hint, uid); err != nil {
		f.Close()
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	return f, nil
}

// DialSocket connects to the socket at rel inside the jail root (see OpenSocket) and
// checks that the process listening on it runs as the jail's uid.
func DialSocket(ctx context.Context, root, rel string, uid int) (net.Conn, error) {
	f, err := OpenSocket(root, rel, uid)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Connecting through /proc/self/fd/N reaches the inode the descriptor holds, whatever the
	// jail's uid renames or replaces meanwhile (systemd connects to sockets the same way).
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(int(f.Fd())))
	if err != nil {
		return nil, fmt.Errorf("firecracker: connect to %s: %w", filepath.Join(root, rel), err)
	}
	what := "the process serving " + filepath.Join(root, rel)
	if err := peercred.Check(conn, what, "the jailed Firecracker may be compromised", uid); err != nil {
		conn.Close()
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	return conn, nil
}
