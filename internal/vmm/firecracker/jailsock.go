package firecracker

import (
	"context"
	"net"
	"os"

	"github.com/banger-dev/banger/internal/fcjail"
)

// In-jail paths of the sockets a jailed Firecracker creates, relative to the jail's root.
var jailSockets = fcjail.Sockets

// openJailSocket is fcjail.OpenSocket: the socket at rel in the jail root, reached without
// following a symlink, owned by uid.
func openJailSocket(root, rel string, uid int) (*os.File, error) {
	return fcjail.OpenSocket(root, rel, uid)
}

// dialJailSocket is fcjail.DialSocket: connected, and served by uid.
func dialJailSocket(ctx context.Context, root, rel string, uid int) (net.Conn, error) {
	return fcjail.DialSocket(ctx, root, rel, uid)
}
