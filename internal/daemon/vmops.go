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

// Handlers of the operations on existing VMs: start, stop, restart, kill, set, prune.

func (d *Daemon) observer(op *operation) vmservice.Observer {
	return vmservice.Observer{
		Progress: op.progress(),
		Spec:     func(s config.VMSpec) { op.publish(api.Event{Type: api.EventSpec, Spec: toAPISpec(s)}) },
		Notice:   func(msg string) { op.publish(api.Event{Type: api.EventNotice, Message: msg}) },
	}
}

// vmResult publishes the final event of a VM operation.
func vmResult(op *operation, vm store.VM, timings []steps.Timing, err error) {
	vmOutcome(op, vm, timings, false, err)
}

// vmOutcome is vmResult that can say nothing was done (the VM already was as asked).
func vmOutcome(op *operation, vm store.VM, timings []steps.Timing, unchanged bool, err error) {
	if err != nil {
		op.fail(err)
		return
	}
	out := toAPIVM(vm)
	ev := api.Event{Type: api.EventResult, VM: &out, Unchanged: unchanged}
	for _, t := range timings {
		ev.Timings = append(ev.Timings, api.StepTiming{Name: t.Name, Duration: t.Duration})
	}
	op.publish(ev)
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
	d.runOp(w, r, "vm.start", d.opTarget(r), false, func(ctx context.Context, op *operation) {
		vm, timings, err := d.vms.Start(ctx, ref, d.observer(op))
		vmOutcome(op, vm, timings, timings == nil, err)
	})
}

func (d *Daemon) handleStopVM(w http.ResponseWriter, r *http.Request) {
	var req api.StopRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ref := r.PathValue("ref")
	d.runOp(w, r, "vm.stop", d.opTarget(r), false, func(ctx context.Context, op *operation) {
		vm, stopped, err := d.vms.Stop(ctx, ref, req.Timeout, d.observer(op))
		vmOutcome(op, vm, nil, !stopped, err)
	})
}

func (d *Daemon) handleRestartVM(w http.ResponseWriter, r *http.Request) {
	var req api.StopRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ref := r.PathValue("ref")
	d.runOp(w, r, "vm.restart", d.opTarget(r), false, func(ctx context.Context, op *operation) {
		vm, err := d.vms.Restart(ctx, ref, req.Timeout, d.observer(op))
		vmResult(op, vm, nil, err)
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
