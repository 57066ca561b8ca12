package client

import (
	"context"
	"io"
	"net/url"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// Ports lists a running VM's listening sockets.
func (c *Client) Ports(ctx context.Context, ref string) ([]api.Port, error) {
	var out []api.Port
	err := c.do(ctx, to(api.RoutePorts, ref), nil, &out)
	return out, err
}

// SSH says how to reach a VM's sshd, once it listens (the daemon waits up to wait).
func (c *Client) SSH(ctx context.Context, ref string, wait time.Duration) (api.SSHTarget, error) {
	var t api.SSHTarget
	err := c.do(ctx, to(api.RouteSSH, ref).withQuery(url.Values{"wait": {wait.String()}}), nil, &t)
	return t, err
}

// Forward opens a connection to network/address inside a running VM, through the daemon and
// the VM's agent.
func (c *Client) Forward(ctx context.Context, ref, network, address string) (io.ReadWriteCloser, error) {
	return c.openUpgrade(ctx, to(api.RouteForward, ref), api.ForwardUpgrade, api.ForwardRequest{Network: network, Address: address})
}

// TeardownNetwork removes banger's host network state; the daemon refuses while VMs run.
func (c *Client) TeardownNetwork(ctx context.Context) error {
	return c.do(ctx, to(api.RouteTeardown), nil, nil)
}
