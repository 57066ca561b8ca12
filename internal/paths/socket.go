package paths

import (
	"fmt"
	"path/filepath"
	"strconv"
)

// SocketName is the daemon socket's file name inside the runtime directory.
const SocketName = "bangerd.sock"

// MaxSocketPathLen is the longest unix socket path, in bytes, that works everywhere: the kernel's
// sun_path holds 108 bytes including the terminating NUL.
const MaxSocketPathLen = 107

// socketPath picks the daemon socket; see New.
func socketPath(lookup LookupFunc, uid int) (path string, fromEnv bool, err error) {
	if v, ok := lookup("BANGER_SOCKET"); ok && v != "" {
		if !filepath.IsAbs(v) {
			return "", false, fmt.Errorf("BANGER_SOCKET=%q is not an absolute path; set it to one, e.g. /run/banger/bangerd.sock", v)
		}
		return filepath.Clean(v), true, nil
	}
	if v, ok := lookup("XDG_RUNTIME_DIR"); ok && filepath.IsAbs(v) {
		return filepath.Join(v, App, SocketName), false, nil
	}
	if uid == 0 {
		return filepath.Join("/run", App, SocketName), false, nil
	}
	return filepath.Join("/tmp", App+"-"+strconv.Itoa(uid), SocketName), false, nil
}

// CheckSocketPath reports an error naming path and its length when path is too long to bind
// or dial as a unix socket (more than MaxSocketPathLen bytes). Check every socket banger
// creates, including per-VM sockets in the runtime directory.
func CheckSocketPath(path string) error {
	if len(path) <= MaxSocketPathLen {
		return nil
	}
	return fmt.Errorf("unix socket path %q is %d bytes, over the limit of %d; "+
		"set BANGER_SOCKET to a shorter path (e.g. /run/banger/bangerd.sock) so the runtime directory is shorter",
		path, len(path), MaxSocketPathLen)
}
