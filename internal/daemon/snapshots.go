package daemon

import (
	"context"
	"net/http"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/vmservice"
)

// Handlers of snapshots: taking one of a running VM, forking a running VM into live clones,
// listing and removing them. Snapshot and fork are operations, like the other VM operations;
// they go on when their client leaves (vm watch follows them), and undo themselves when they
// fail or the daemon stops. The VM service checks the requests (names, counts), as it does a
// create's.

func toAPISnapshot(i snapshot.Info) api.Snapshot {
	return api.Snapshot{
		Name: i.Name, Kind: string(i.Kind), Created: i.Created, From: i.From,
		Image: i.Image, Kernel: i.Kernel, VMM: i.VMM,
		VCPU: i.VCPU, MemoryMiB: i.MemoryMiB, DiskBytes: i.DiskBytes, SizeBytes: i.Bytes,
	}
}

func (d *Daemon) handleSnapshotVM(w http.ResponseWriter, r *http.Request) {
	var req api.SnapshotVMRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	sreq := vmservice.SnapshotRequest{Name: req.Name}
	sreq.FailStep, sreq.PauseStep = d.testHooks(r)
	ref := r.PathValue("ref")
	target := d.opTarget(r)
	d.runOp(w, r, "vm.snapshot", target, false, func(ctx context.Context, op *operation) {
		start := time.Now()
		info, err := d.vms.SnapshotVM(ctx, ref, sreq, op.observer())
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
	freq := vmservice.ForkRequest{Count: req.Count, Names: req.Names}
	freq.FailStep, freq.PauseStep = d.testHooks(r)
	ref := r.PathValue("ref")
	target := d.opTarget(r)
	d.runOp(w, r, "vm.fork", target, false, func(ctx context.Context, op *operation) {
		start := time.Now()
		forked, err := d.vms.Fork(ctx, ref, freq, op.observer())
		if err != nil {
			d.log.Warn("fork failed", "vm", target, "err", err)
			op.fail(err)
			return
		}
		d.log.Info("forked VM", "vm", target, "clones", len(forked.Clones), "took", time.Since(start))
		op.publish(forkResult(forked))
	})
}

// forkResult is the final event of a fork: the clones, as the API shows them, and the
// timing of the capture and then of each clone's steps, clone by clone.
func forkResult(f vmservice.Forked) api.Event {
	ev := api.Event{Type: api.EventResult, VMs: make([]api.VM, 0, len(f.Clones))}
	for _, vm := range f.Clones {
		ev.VMs = append(ev.VMs, toAPIVM(vm))
	}
	for _, t := range f.Capture {
		ev.Timings = append(ev.Timings, api.StepTiming{Name: t.Name, Duration: t.Duration})
	}
	for i, list := range f.Steps {
		for _, t := range list {
			ev.Timings = append(ev.Timings, api.StepTiming{Name: t.Name, VM: f.Clones[i].Name, Duration: t.Duration})
		}
	}
	return ev
}

func (d *Daemon) handleListSnapshots(w http.ResponseWriter, r *http.Request) {
	list, err := d.vms.Snapshots(r.Context())
	spares := d.vms.SpareCounts()
	writeList(w, list, err, func(i snapshot.Info) api.Snapshot {
		s := toAPISnapshot(i)
		s.Spares = spares[i.Name]
		return s
	})
}

func (d *Daemon) handleDeleteSnapshot(w http.ResponseWriter, r *http.Request) {
	// A removal must finish even if the client goes away half way.
	name := r.PathValue("name")
	if err := d.vms.RemoveSnapshot(context.WithoutCancel(r.Context()), name); err != nil {
		writeError(w, err)
		return
	}
	d.log.Info("removed snapshot", "snapshot", name)
	writeJSON(w, http.StatusOK, struct{}{})
}
