package daemon

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/names"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmservice"
)

// Handlers of snapshots: taking one of a running VM, forking a running VM into live clones,
// listing and removing them. Snapshot and fork are operations, like the other VM operations;
// they go on when their client leaves (vm watch follows them), and undo themselves when they
// fail or the daemon stops.

// snapshotter is what the snapshot handlers ask of the VM service.
type snapshotter interface {
	SnapshotVM(ctx context.Context, ref string, req vmservice.SnapshotRequest, obs vmservice.Observer) (snapshot.Info, error)
	Fork(ctx context.Context, ref string, req vmservice.ForkRequest, obs vmservice.Observer) ([]store.VM, error)
	Snapshots(ctx context.Context) ([]snapshot.Info, error)
	RemoveSnapshot(ctx context.Context, name string) error
}

// snapshots is the daemon's snapshotter: its VM service unless a test put another.
func (d *Daemon) snapshots() snapshotter {
	if d.snaps != nil {
		return d.snaps
	}
	return d.vms
}

func toAPISnapshot(i snapshot.Info) api.Snapshot {
	return api.Snapshot{
		Name: i.Name, Kind: string(i.Kind), Created: i.Created, From: i.From,
		Image: i.Image, Kernel: i.Kernel, VMM: i.VMM,
		VCPU: i.VCPU, MemoryMiB: i.MemoryMiB, DiskBytes: i.DiskBytes, SizeBytes: i.Bytes,
	}
}

// maxForkCount bounds the clones one fork makes: a typo (-n 1000) must not fill the host.
const maxForkCount = 64

func (d *Daemon) handleSnapshotVM(w http.ResponseWriter, r *http.Request) {
	var req api.SnapshotVMRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Name != "" {
		if err := snapshot.ValidName(req.Name); err != nil {
			writeError(w, &api.Error{Code: "invalid", Message: err.Error()})
			return
		}
	}
	sreq := vmservice.SnapshotRequest{Name: req.Name}
	sreq.FailStep, sreq.PauseStep = d.testHooks(r)
	ref := r.PathValue("ref")
	target := d.opTarget(r)
	d.runOp(w, r, "vm.snapshot", target, false, func(ctx context.Context, op *operation) {
		start := time.Now()
		info, err := d.snapshots().SnapshotVM(ctx, ref, sreq, op.observer())
		if err != nil {
			d.log.Warn("snapshot failed", "vm", target, "err", err)
			op.fail(err)
			return
		}
		d.log.Info("took snapshot", "vm", target, "snapshot", info.Name, "took", time.Since(start))
		out := toAPISnapshot(info)
		op.publish(api.Event{Type: api.EventResult, Snapshot: &out})
	})
}

func (d *Daemon) handleForkVM(w http.ResponseWriter, r *http.Request) {
	var req api.ForkVMRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case req.Count < 0 || req.Count > maxForkCount || len(req.Names) > maxForkCount:
		writeError(w, &api.Error{Code: "invalid", Message: fmt.Sprintf("a fork makes 1 to %d clones; asked for %d", maxForkCount, max(req.Count, len(req.Names)))})
		return
	case len(req.Names) > 0 && req.Count != 0 && req.Count != len(req.Names):
		writeError(w, &api.Error{Code: "invalid", Message: fmt.Sprintf("a fork of %d clones with %d names; give a name to each clone, or none", req.Count, len(req.Names))})
		return
	}
	seen := map[string]bool{}
	for _, n := range req.Names {
		if err := names.Validate(n); err != nil {
			writeError(w, &api.Error{Code: "invalid", Message: err.Error()})
			return
		}
		if seen[n] {
			writeError(w, &api.Error{Code: "invalid", Message: fmt.Sprintf("the name %q is given twice; each clone needs its own", n)})
			return
		}
		seen[n] = true
	}
	freq := vmservice.ForkRequest{Count: req.Count, Names: req.Names}
	freq.FailStep, freq.PauseStep = d.testHooks(r)
	ref := r.PathValue("ref")
	target := d.opTarget(r)
	d.runOp(w, r, "vm.fork", target, false, func(ctx context.Context, op *operation) {
		start := time.Now()
		clones, err := d.snapshots().Fork(ctx, ref, freq, op.observer())
		if err != nil {
			d.log.Warn("fork failed", "vm", target, "err", err)
			op.fail(err)
			return
		}
		d.log.Info("forked VM", "vm", target, "clones", len(clones), "took", time.Since(start))
		op.publish(forkResult(clones))
	})
}

// forkResult is the final event of a fork: the clones, as the API shows them.
func forkResult(clones []store.VM) api.Event {
	out := make([]api.VM, 0, len(clones))
	for _, vm := range clones {
		out = append(out, toAPIVM(vm))
	}
	return api.Event{Type: api.EventResult, VMs: out}
}

func (d *Daemon) handleListSnapshots(w http.ResponseWriter, r *http.Request) {
	list, err := d.snapshots().Snapshots(r.Context())
	writeList(w, list, err, toAPISnapshot)
}

func (d *Daemon) handleDeleteSnapshot(w http.ResponseWriter, r *http.Request) {
	// A removal must finish even if the client goes away half way.
	name := r.PathValue("name")
	if err := d.snapshots().RemoveSnapshot(context.WithoutCancel(r.Context()), name); err != nil {
		writeError(w, err)
		return
	}
	d.log.Info("removed snapshot", "snapshot", name)
	writeJSON(w, http.StatusOK, struct{}{})
}
