package daemon

import (
	"context"
	"fmt"
	"net/http"
	"syscall"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmservice"
)

// Handlers of the operations on existing VMs: start, stop, suspend, resume, restart, kill,
// set, prune.

// vmDone is what a VM operation did: the VM as it is now, the time its steps took, and
// whether nothing needed doing (the VM already was as asked).
type vmDone struct {
	vm        store.VM
	timings   []steps.Timing
	unchanged bool
}

// vmOp runs a VM operation (see runOp). It is the one way a VM operation's work reaches its
// watchers: fn's progress, spec and notices become the operation's events, and what fn
// returns its final event (the VM with the steps' timings, or the error).
func (d *Daemon) vmOp(w http.ResponseWriter, r *http.Request, kind, target string, cancelOnDisconnect bool,
	fn func(ctx context.Context, obs vmservice.Observer) (vmDone, error)) {
	d.runOp(w, r, kind, target, cancelOnDisconnect, func(ctx context.Context, op *operation) {
		done, err := fn(ctx, op.observer())
		if err != nil {
			op.fail(err)
			return
		}
		out := toAPIVM(done.vm)
		ev := api.Event{Type: api.EventResult, VM: &out, Unchanged: done.unchanged}
		for _, t := range done.timings {
			ev.Timings = append(ev.Timings, api.StepTiming{Name: t.Name, Duration: t.Duration})
		}
		op.publish(ev)
	})
}

// observer turns what a VM operation has to say (progress, spec, notices) into the
// operation's events.
func (op *operation) observer() vmservice.Observer {
	return vmservice.Observer{
		Progress: op.progress(),
		Spec:     func(s config.VMSpec) { op.publish(api.Event{Type: api.EventSpec, Spec: toAPISpec(s)}) },
		Notice:   func(msg string) { op.publish(api.Event{Type: api.EventNotice, Message: msg}) },
	}
}

// opTarget names an operation by the VM's name when the reference resolves.
func (d *Daemon) opTarget(r *http.Request) string {
	ref := r.PathValue("ref")
	if vm, err := d.vms.Resolve(r.Context(), ref); err == nil {
		return vm.Name
	}
	return ref
}

// decodeOptional decodes a JSON body when there is one.
func decodeOptional(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decodeBody(r, v)
}

func (d *Daemon) handleStartVM(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	d.vmOp(w, r, "vm.start", d.opTarget(r), false, func(ctx context.Context, obs vmservice.Observer) (vmDone, error) {
		vm, timings, err := d.vms.Start(ctx, ref, obs)
		return vmDone{vm: vm, timings: timings, unchanged: timings == nil}, err
	})
}

func (d *Daemon) handleStopVM(w http.ResponseWriter, r *http.Request) {
	var req api.StopRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ref := r.PathValue("ref")
	d.vmOp(w, r, "vm.stop", d.opTarget(r), false, func(ctx context.Context, obs vmservice.Observer) (vmDone, error) {
		vm, stopped, err := d.vms.Stop(ctx, ref, req.Timeout, obs)
		return vmDone{vm: vm, unchanged: !stopped}, err
	})
}

func (d *Daemon) handleSuspendVM(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	d.vmOp(w, r, "vm.suspend", d.opTarget(r), false, func(ctx context.Context, obs vmservice.Observer) (vmDone, error) {
		vm, changed, err := d.vms.Suspend(ctx, ref, obs)
		return vmDone{vm: vm, unchanged: !changed}, err
	})
}

func (d *Daemon) handleResumeVM(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	d.vmOp(w, r, "vm.resume", d.opTarget(r), false, func(ctx context.Context, obs vmservice.Observer) (vmDone, error) {
		vm, timings, err := d.vms.Resume(ctx, ref, obs)
		return vmDone{vm: vm, timings: timings, unchanged: timings == nil}, err
	})
}

func (d *Daemon) handleRestartVM(w http.ResponseWriter, r *http.Request) {
	var req api.StopRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ref := r.PathValue("ref")
	d.vmOp(w, r, "vm.restart", d.opTarget(r), false, func(ctx context.Context, obs vmservice.Observer) (vmDone, error) {
		vm, err := d.vms.Restart(ctx, ref, req.Timeout, obs)
		return vmDone{vm: vm}, err
	})
}

func (d *Daemon) handleKillVM(w http.ResponseWriter, r *http.Request) {
	var req api.KillRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Signal < 0 || req.Signal > 64 {
		writeError(w, &api.Error{Code: "invalid", Message: fmt.Sprintf("signal %d is not a signal number", req.Signal)})
		return
	}
	vm, err := d.vms.Kill(r.Context(), r.PathValue("ref"), syscall.Signal(req.Signal))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toAPIVM(vm))
}

func (d *Daemon) handleSetVM(w http.ResponseWriter, r *http.Request) {
	var req api.SetVMRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	sreq := vmservice.SetRequest{VCPU: req.VCPU, DiskBytes: req.DiskBytes}
	if req.MemoryMiB != nil {
		b := int64(*req.MemoryMiB) << 20
		sreq.MemoryBytes = &b
	}
	vm, err := d.vms.Set(r.Context(), r.PathValue("ref"), sreq)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toAPIVM(vm))
}

func (d *Daemon) handlePrune(w http.ResponseWriter, r *http.Request) {
	deleted, err := d.vms.Prune(context.WithoutCancel(r.Context()))
	out := make([]api.VM, 0, len(deleted))
	for _, vm := range deleted {
		out = append(out, toAPIVM(vm))
	}
	if err != nil {
		writeError(w, fmt.Errorf("pruned %d VMs, but: %w", len(out), err))
		return
	}
	writeJSON(w, http.StatusOK, out)
}
