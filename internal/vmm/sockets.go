package vmm

import (
	"fmt"
	"os"
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
