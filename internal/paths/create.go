package paths

import (
	"fmt"
	"os"
	"syscall"
)

// Create makes banger's state, cache and runtime directories (everything except the config
// directory, which belongs to the user) with mode 0700 where they do not exist yet.
//
// Unless the socket came from $BANGER_SOCKET, the runtime directory must afterwards be a real
// directory (not a symlink) owned by l.UID and closed to group and others: under /tmp another
// user could have created it first to intercept the daemon socket.
func (l Layout) Create() error {
	dirs := []string{
		l.StateDir, l.KernelsDir(), l.ImagesDir(), l.VMsDir(), l.TmpDir(), l.SSHDir(),
		l.CacheDir, l.DownloadsDir(),
		l.RuntimeDir(),
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create banger directory: %w", err)
		}
	}
	if l.SocketFromEnv {
		return nil
	}
	return checkPrivateDir(l.RuntimeDir(), l.UID)
}

// checkPrivateDir verifies that dir is a directory, not a symlink, owned by uid, with no
// permissions for group or others.
func checkPrivateDir(dir string, uid int) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check runtime directory: %w", err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("runtime directory %s is a symlink; remove it or set BANGER_SOCKET", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("runtime directory %s is not a directory (mode %s); remove it or set BANGER_SOCKET", dir, fi.Mode())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
		return fmt.Errorf("runtime directory %s is owned by uid %d, not %d; remove it or set BANGER_SOCKET", dir, st.Uid, uid)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("runtime directory %s has mode %04o, open to other users; run chmod 700 %s", dir, perm, dir)
	}
	return nil
}
