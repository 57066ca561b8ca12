package client

import (
	"context"
	"io"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/wire"
)

// OpenExec starts a command in a running VM and returns the upgraded connection that carries
// the session's frames (package wire). The caller drives it, e.g. with wire.Call, and
// closes it.
func (c *Client) OpenExec(ctx context.Context, ref string, req api.ExecRequest) (io.ReadWriteCloser, error) {
	return c.openUpgrade(ctx, to(api.RouteExec, ref), api.ExecUpgrade, req)
}

// Exec runs a command in a running VM with its stdio connected to cio and returns its exit
// status.
func (c *Client) Exec(ctx context.Context, ref string, req api.ExecRequest, cio wire.CallerIO) (wire.ExitMsg, error) {
	rwc, err := c.OpenExec(ctx, ref, req)
	if err != nil {
		return wire.ExitMsg{}, err
	}
	defer rwc.Close()
	stop := context.AfterFunc(ctx, func() { rwc.Close() })
	defer stop()
	return wire.Call(rwc, cio)
}
