package daemon

import (
	"context"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestSuspendAndResumeRoutes(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.c.CreateVMResult(ctx, api.CreateVMRequest{Name: "dev"}, nil); err != nil {
		t.Fatal(err)
	}
	var stages []string
	vm, unchanged, err := h.c.SuspendVM(ctx, "dev", func(ev api.Event) { stages = append(stages, ev.Type+":"+ev.Stage) })
	if err != nil || unchanged || vm.State != "suspended" || len(stages) == 0 {
		t.Fatalf("suspend = %+v, unchanged %v, %v, events %v; want it suspended, with its progress", vm, unchanged, err, stages)
	}
	if _, unchanged, err := h.c.SuspendVM(ctx, "dev", nil); err != nil || !unchanged {
		t.Errorf("suspend of a suspended VM: unchanged %v, %v; want it unchanged", unchanged, err)
	}
	if vm, err := h.c.GetVM(ctx, "dev"); err != nil || vm.State != "suspended" {
		t.Errorf("show = %+v, %v; want suspended", vm, err)
	}
	vm, unchanged, err = h.c.ResumeVM(ctx, "dev", nil)
	if err != nil || unchanged || vm.State != "running" {
		t.Fatalf("resume = %+v, unchanged %v, %v; want it running", vm, unchanged, err)
	}
	if _, unchanged, err := h.c.ResumeVM(ctx, "dev", nil); err != nil || !unchanged {
		t.Errorf("resume of a running VM: unchanged %v, %v; want it unchanged", unchanged, err)
	}
	if _, _, err := h.c.StopVM(ctx, "dev", 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.c.SuspendVM(ctx, "dev", nil); apiErr(t, err).Code != "conflict" {
		t.Errorf("suspend of a stopped VM: %v, want conflict", err)
	}
	if _, _, err := h.c.ResumeVM(ctx, "nope", nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("resume of an unknown VM: %v, want not_found", err)
	}
}
