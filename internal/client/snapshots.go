package client

import (
	"context"
	"fmt"

	"github.com/banger-dev/banger/internal/api"
)

// Snapshots and forks.

// SnapshotVM saves a running VM (memory, devices, its disk) as a snapshot and lets it run on.
func (c *Client) SnapshotVM(ctx context.Context, ref string, req api.SnapshotVMRequest, onEvent func(api.Event)) (api.Snapshot, error) {
	res, err := c.stream(ctx, to(api.RouteSnapshotVM, ref), req, onEvent)
	if err != nil {
		return api.Snapshot{}, err
	}
	if res.Snapshot == nil {
		return api.Snapshot{}, fmt.Errorf("daemon finished the snapshot of %s but sent no snapshot", ref)
	}
	return *res.Snapshot, nil
}

// ForkVM makes live clones of a running VM and returns them, all running; the daemon makes
// all of them or none.
func (c *Client) ForkVM(ctx context.Context, ref string, req api.ForkVMRequest, onEvent func(api.Event)) ([]api.VM, error) {
	res, err := c.ForkVMResult(ctx, ref, req, onEvent)
	if err != nil {
		return nil, err
	}
	return res.VMs, nil
}

// ForkVMResult is ForkVM returning the whole final event: the clones and the daemon's timing
// of the source's capture and of each clone's steps.
func (c *Client) ForkVMResult(ctx context.Context, ref string, req api.ForkVMRequest, onEvent func(api.Event)) (api.Event, error) {
	res, err := c.stream(ctx, to(api.RouteForkVM, ref), req, onEvent)
	if err != nil {
		return api.Event{}, err
	}
	if len(res.VMs) == 0 {
		return api.Event{}, fmt.Errorf("daemon finished the fork of %s but sent no clones", ref)
	}
	return res, nil
}

// ListSnapshots lists the snapshots, boot and user, oldest first.
func (c *Client) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	var out []api.Snapshot
	err := c.do(ctx, to(api.RouteListSnapshots), nil, &out)
	return out, err
}

// DeleteSnapshot removes a snapshot (boot or user) by name; VMs made from it keep running.
func (c *Client) DeleteSnapshot(ctx context.Context, name string) error {
	return c.do(ctx, to(api.RouteDeleteSnapshot, name), nil, nil)
}
