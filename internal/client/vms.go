package client

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// vmOp runs a VM operation that streams events and returns the VM it ends with.
func (c *Client) vmOp(ctx context.Context, t target, action string, body any, onEvent func(api.Event)) (api.VM, bool, error) {
	res, err := c.stream(ctx, t, body, onEvent)
	if err != nil {
		return api.VM{}, false, err
	}
	if res.VM == nil {
		return api.VM{}, false, fmt.Errorf("daemon finished %s but sent no VM", action)
	}
	return *res.VM, res.Unchanged, nil
}

// StartVM boots a created or stopped VM until its agent answers. unchanged says it already
// ran: nothing was done.
func (c *Client) StartVM(ctx context.Context, ref string, onEvent func(api.Event)) (vm api.VM, unchanged bool, err error) {
	return c.vmOp(ctx, to(api.RouteStartVM, ref), "start", nil, onEvent)
}

// StopVM shuts a VM down gracefully (0: the daemon's default timeout). unchanged says it was
// not running: nothing was done.
func (c *Client) StopVM(ctx context.Context, ref string, timeout time.Duration, onEvent func(api.Event)) (vm api.VM, unchanged bool, err error) {
	return c.vmOp(ctx, to(api.RouteStopVM, ref), "stop", api.StopRequest{Timeout: timeout}, onEvent)
}

// SuspendVM saves a running VM's guest to disk and ends its VMM. unchanged says it was
// already suspended: nothing was done.
func (c *Client) SuspendVM(ctx context.Context, ref string, onEvent func(api.Event)) (vm api.VM, unchanged bool, err error) {
	return c.vmOp(ctx, to(api.RouteSuspendVM, ref), "suspend", nil, onEvent)
}

// ResumeVM continues a suspended VM's guest where it was. unchanged says it already ran:
// nothing was done.
func (c *Client) ResumeVM(ctx context.Context, ref string, onEvent func(api.Event)) (vm api.VM, unchanged bool, err error) {
	return c.vmOp(ctx, to(api.RouteResumeVM, ref), "resume", nil, onEvent)
}

// RestartVM stops a VM gracefully and boots it again.
func (c *Client) RestartVM(ctx context.Context, ref string, timeout time.Duration, onEvent func(api.Event)) (api.VM, error) {
	vm, _, err := c.vmOp(ctx, to(api.RouteRestartVM, ref), "restart", api.StopRequest{Timeout: timeout}, onEvent)
	return vm, err
}

// KillVM sends a signal (0: SIGKILL) to a VM's VMM and waits for it to exit.
func (c *Client) KillVM(ctx context.Context, ref string, signal int) (api.VM, error) {
	var vm api.VM
	err := c.do(ctx, to(api.RouteKillVM, ref), api.KillRequest{Signal: signal}, &vm)
	return vm, err
}

// SetVM changes the resources of a VM that is not running.
func (c *Client) SetVM(ctx context.Context, ref string, req api.SetVMRequest) (api.VM, error) {
	var vm api.VM
	err := c.do(ctx, to(api.RouteSetVM, ref), req, &vm)
	return vm, err
}

// PruneVMs deletes every VM that is not running and returns them.
func (c *Client) PruneVMs(ctx context.Context) ([]api.VM, error) {
	var vms []api.VM
	err := c.do(ctx, to(api.RoutePruneVMs), nil, &vms)
	return vms, err
}

// Logs copies a VM's console log (source "console") or VMM log (source "vmm") to w; with
// follow it keeps copying what is appended until ctx ends.
func (c *Client) Logs(ctx context.Context, ref, source string, follow bool, w io.Writer) error {
	q := url.Values{"source": {source}}
	if follow {
		q.Set("follow", "1")
	}
	req, err := c.newRequest(ctx, to(api.RouteLogs, ref).withQuery(q), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.connError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
