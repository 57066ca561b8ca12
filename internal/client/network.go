package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// Ports lists a running VM's listening sockets.
func (c *Client) Ports(ctx context.Context, ref string) ([]api.Port, error) {
	var out []api.Port
	err := c.do(ctx, http.MethodGet, api.PathVM+url.PathEscape(ref)+"/ports", nil, &out)
	return out, err
}

// SSH says how to reach a VM's sshd, once it listens (the daemon waits up to wait).
func (c *Client) SSH(ctx context.Context, ref string, wait time.Duration) (api.SSHTarget, error) {
	var t api.SSHTarget
	err := c.do(ctx, http.MethodGet, api.PathVM+url.PathEscape(ref)+"/ssh?wait="+url.QueryEscape(wait.String()), nil, &t)
	return t, err
}

// Forward opens a connection to network/address inside a running VM, through the daemon and
// the VM's agent.
func (c *Client) Forward(ctx context.Context, ref, network, address string) (io.ReadWriteCloser, error) {
	return c.openUpgrade(ctx, api.PathVM+url.PathEscape(ref)+"/forward", api.ForwardUpgrade, api.ForwardRequest{Network: network, Address: address})
}

// TeardownNetwork removes banger's host network state; the daemon refuses while VMs run.
func (c *Client) TeardownNetwork(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, api.PathTeardown, nil, nil)
}
