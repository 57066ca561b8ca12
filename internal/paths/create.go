package paths

import (
	"fmt"
	"os"
	"path/filepath"
)

// Create makes banger's state and cache directories (everything except the config directory,
// which belongs to the user) with mode 0700 where they do not exist yet, then secures the
// runtime directories (see SecureRuntime). The daemon calls it on every start.
func (l Layout) Create() error {
	dirs := []string{
		l.StateDir, l.KernelsDir(), l.ImagesDir(), l.VMsDir(), l.TmpDir(), l.SSHDir(),
		l.CacheDir, l.DownloadsDir(),
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create banger directory: %w", err)
		}
	}
	return l.SecureRuntime()
}

// runtimeFix is what to do when a runtime directory is refused.
func (l Layout) runtimeFix() string {
	return fmt.Sprintf("if you did not make it, another user may have: remove it as root; or set BANGER_SOCKET "+
		"to a socket in a directory only uid %d can write (banger creates missing directories with mode 0700)", l.UID)
}

// SecureRuntime makes sure nobody but root and l.UID can change the directories that hold the
// daemon's socket and the VMs' sockets, whatever chose the socket path ($BANGER_SOCKET or a
// default): another user who could would pose as the daemon to the CLI, or as a guest agent to
// the daemon (and receive the VM's host keys, credentials and workspace).
//
//   - Every directory above the runtime directory (the socket's directory) is owned by root or
//     l.UID and not writable by others unless sticky (like /tmp); symlinks on the way are
//     followed only when root or l.UID owns them.
//   - The runtime directory is a real directory owned by l.UID and not writable by group or
//     others; when banger chose it (no $BANGER_SOCKET), it is private (0700).
//   - The VMs' runtime directory (VMRuntimeDir) and every directory in it are private
//     directories owned by l.UID.
//
// Missing directories are created with mode 0700 and then checked like existing ones, so one
// another user created first is refused rather than used. Errors are *UnsafeError
// (errors.Is(err, ErrUnsafe)) naming the path, the owner or mode found and what to do.
func (l Layout) SecureRuntime() error {
	fix := l.runtimeFix()
	if err := ensureSecureDir(l.RuntimeDir(), l.UID, !l.SocketFromEnv, fix); err != nil {
		return err
	}
	vms := l.VMRuntimeDir()
	if err := ensureSecureDir(vms, l.UID, true, fix); err != nil {
		return err
	}
	entries, err := os.ReadDir(vms)
	if err != nil {
		return fmt.Errorf("check runtime directory: %w", err)
	}
	for _, e := range entries {
		if err := checkOwnDir(filepath.Join(vms, e.Name()), l.UID, true, fix); err != nil {
			return err
		}
	}
	return nil
}

// SecureVMRuntimeDir returns the runtime directory of VM id (<VMRuntimeDir>/<id>, where its
// VMM's sockets go), creating it with mode 0700 when missing, after checking it and every
// directory above it as SecureRuntime does.
func (l Layout) SecureVMRuntimeDir(id string) (string, error) {
	if id == "" || id == "." || id == ".." || filepath.Base(id) != id {
		return "", fmt.Errorf("VM id %q cannot name a directory", id)
	}
	fix := l.runtimeFix()
	if err := ensureSecureDir(l.RuntimeDir(), l.UID, !l.SocketFromEnv, fix); err != nil {
		return "", err
	}
	dir := filepath.Join(l.VMRuntimeDir(), id)
	if err := ensureSecureDir(l.VMRuntimeDir(), l.UID, true, fix); err != nil {
		return "", err
	}
	if err := ensureSecureDir(dir, l.UID, true, fix); err != nil {
		return "", err
	}
	return dir, nil
}
