package daemon

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/vmservice"
)

func testMeta(name string) snapshot.Meta {
	return snapshot.Meta{
		Name: name, Kind: snapshot.User, Created: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), From: "dev",
		Image: "debian-bookworm@3", Kernel: "debian-6.1", Agent: "initramfs-abc", VMM: "firecracker", Accel: "kvm",
		VCPU: 2, MemoryMiB: 1024, DiskBytes: 8 << 30, Hostname: "dev",
	}
}

// With test hooks, snapshot and fork fail at the step the header names, as create does, and
// leave nothing behind; without them the header is ignored.
func TestSnapshotAndForkHonourTestHooks(t *testing.T) {
	ctx := context.Background()
	on := newHarness(t, true)
	if _, err := on.c.CreateVMResult(ctx, api.CreateVMRequest{Name: "dev", Cold: true}, nil); err != nil {
		t.Fatal(err)
	}
	on.c.Header.Set(api.HeaderInjectFault, vmservice.StepCapture)
	var stages []string
	_, err := on.c.SnapshotVM(ctx, "dev", api.SnapshotVMRequest{Name: "base"}, func(ev api.Event) { stages = append(stages, ev.Type+":"+ev.Stage) })
	if err == nil || !strings.Contains(err.Error(), `fault injected at step "capture"`) {
		t.Errorf("snapshot with an injected fault: %v; want the fault", err)
	}
	on.c.Header.Set(api.HeaderInjectFault, vmservice.StepClone)
	if _, err := on.c.ForkVM(ctx, "dev", api.ForkVMRequest{Count: 2}, nil); err == nil || !strings.Contains(err.Error(), `fault injected at step "clone"`) {
		t.Errorf("fork with an injected fault: %v; want the fault", err)
	}
	if list, _ := on.c.ListSnapshots(ctx); len(list) != 0 {
		t.Errorf("failed snapshots left %+v", list)
	}
	if vms, _ := on.c.ListVMs(ctx); len(vms) != 1 || vms[0].State != "running" {
		t.Errorf("failed forks left %+v; want dev alone, running", vms)
	}

	off := newHarness(t, false)
	if _, err := off.c.CreateVMResult(ctx, api.CreateVMRequest{Name: "dev", Cold: true}, nil); err != nil {
		t.Fatal(err)
	}
	off.c.Header.Set(api.HeaderInjectFault, vmservice.StepCapture)
	stages = nil
	if _, err := off.c.SnapshotVM(ctx, "dev", api.SnapshotVMRequest{Name: "base"}, func(ev api.Event) { stages = append(stages, ev.Type+":"+ev.Stage) }); err != nil {
		t.Errorf("without test hooks the header must be ignored: %v", err)
	}
	if len(stages) == 0 {
		t.Error("the snapshot sent no progress")
	}
	if _, err := off.c.ForkVM(ctx, "dev", api.ForkVMRequest{}, nil); err != nil {
		t.Errorf("without test hooks the header must be ignored: %v", err)
	}
}

// Requests the service refuses come back as "invalid", without a snapshot or a clone made;
// a body the daemon cannot read is refused before any operation starts.
func TestBadSnapshotAndForkRequestsAreRefused(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.c.CreateVMResult(ctx, api.CreateVMRequest{Name: "dev", Cold: true}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		snap *api.SnapshotVMRequest
		fork *api.ForkVMRequest
		want string
	}{
		{snap: &api.SnapshotVMRequest{Name: "Bad_Name"}, want: "Bad_Name"},
		{snap: &api.SnapshotVMRequest{Name: "boot-1"}, want: "boot snapshots"},
		{fork: &api.ForkVMRequest{Count: -1}, want: "1 to 64 clones"},
		{fork: &api.ForkVMRequest{Count: 65}, want: "1 to 64 clones"},
		{fork: &api.ForkVMRequest{Count: 3, Names: []string{"a", "b"}}, want: "one name per clone"},
		{fork: &api.ForkVMRequest{Names: []string{"a", "a"}}, want: "given twice"},
	} {
		var err error
		if tc.snap != nil {
			_, err = h.c.SnapshotVM(ctx, "dev", *tc.snap, nil)
		} else {
			_, err = h.c.ForkVM(ctx, "dev", *tc.fork, nil)
		}
		if e := apiErr(t, err); e.Code != "invalid" || !strings.Contains(e.Message, tc.want) {
			t.Errorf("snapshot %+v / fork %+v: %+v; want invalid, mentioning %q", tc.snap, tc.fork, e, tc.want)
		}
	}
	for _, route := range []api.Route{api.RouteSnapshotVM, api.RouteForkVM} {
		if code, body := h.raw(t, "POST", route.Path("dev"), `{"nmae":"x"}`, nil); code != http.StatusBadRequest || !strings.Contains(body, "unknown field") {
			t.Errorf("%s with an unknown field: %d %s; want 400", route, code, body)
		}
	}
	if list, _ := h.c.ListSnapshots(ctx); len(list) != 0 {
		t.Errorf("refused requests left snapshots: %+v", list)
	}
	if vms, _ := h.c.ListVMs(ctx); len(vms) != 1 {
		t.Errorf("refused requests left VMs: %+v", vms)
	}
}

// Through the real VM service (on the stand-in VMM): a snapshot of a running VM, VMs made from
// it and forks of it, and the errors a user meets, with their kinds.
func TestSnapshotForkAndFromSnapshotRoutes(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.c.CreateVMResult(ctx, api.CreateVMRequest{Name: "dev", Cold: true}, nil); err != nil {
		t.Fatal(err)
	}
	snap, err := h.c.SnapshotVM(ctx, "dev", api.SnapshotVMRequest{Name: "base"}, nil)
	if err != nil || snap.Name != "base" || snap.Kind != api.SnapshotUser || snap.From != "dev" || snap.VCPU != 1 || snap.MemoryMiB != 512 || snap.SizeBytes <= 0 {
		t.Fatalf("snapshot = %+v, %v; want base, a user snapshot of dev with its shape and size", snap, err)
	}
	if vm, err := h.c.GetVM(ctx, "dev"); err != nil || vm.State != "running" {
		t.Errorf("after the snapshot dev is %+v, %v; want it running on", vm, err)
	}
	if _, err := h.c.SnapshotVM(ctx, "dev", api.SnapshotVMRequest{Name: "base"}, nil); apiErr(t, err).Code != "conflict" {
		t.Errorf("a second snapshot named base: %v, want conflict", err)
	}
	if _, err := h.c.SnapshotVM(ctx, "nope", api.SnapshotVMRequest{}, nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("snapshot of a missing VM: %v, want not_found", err)
	}

	vm, err := h.c.CreateVM(ctx, api.CreateVMRequest{Name: "t1", FromSnapshot: "base"}, nil)
	if err != nil || vm.Name != "t1" || vm.State != "running" {
		t.Errorf("create from base = %+v, %v; want t1 running", vm, err)
	}
	if _, err := h.c.CreateVM(ctx, api.CreateVMRequest{Name: "t2", FromSnapshot: "nope"}, nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("create from a missing snapshot: %v, want not_found", err)
	}

	res, err := h.c.ForkVMResult(ctx, "dev", api.ForkVMRequest{Names: []string{"c1", "c2"}}, nil)
	clones := res.VMs
	if err != nil || len(clones) != 2 || clones[0].Name != "c1" || clones[1].Name != "c2" || clones[0].State != "running" || clones[0].ID == clones[1].ID {
		t.Fatalf("fork = %+v, %v; want c1 and c2 running", clones, err)
	}
	// The timings: the capture (no VM), then each clone's steps under its name, ready last.
	if len(res.Timings) == 0 || res.Timings[0].Name != "capture" || res.Timings[0].VM != "" {
		t.Errorf("fork timings %+v; want the capture first, of no clone", res.Timings)
	}
	for _, name := range []string{"c1", "c2"} {
		var steps []string
		for _, st := range res.Timings {
			if st.VM == name {
				steps = append(steps, st.Name)
			}
		}
		if len(steps) == 0 || !slices.Contains(steps, "restore") || steps[len(steps)-1] != "ready" {
			t.Errorf("fork timings of %s: %v; want its restore among them, ready last", name, steps)
		}
	}
	if _, err := h.c.ForkVM(ctx, "dev", api.ForkVMRequest{Names: []string{"c1"}}, nil); apiErr(t, err).Code != "conflict" {
		t.Errorf("a fork into a taken name: %v, want conflict", err)
	}
	if _, err := h.c.ForkVM(ctx, "nope", api.ForkVMRequest{}, nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("fork of a missing VM: %v, want not_found", err)
	}
	if _, _, err := h.c.StopVM(ctx, "dev", 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.ForkVM(ctx, "dev", api.ForkVMRequest{}, nil); apiErr(t, err).Code != "conflict" {
		t.Errorf("fork of a stopped VM: %v, want conflict", err)
	}

	if err := h.c.DeleteSnapshot(ctx, "base"); err != nil {
		t.Fatal(err)
	}
	if vm, err := h.c.GetVM(ctx, "t1"); err != nil || vm.State != "running" {
		t.Errorf("after rm of its snapshot t1 is %+v, %v; want it running on", vm, err)
	}
}

func TestSnapshotListAndRemoveRoutes(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	if list, err := h.c.ListSnapshots(ctx); err != nil || list == nil || len(list) != 0 {
		t.Errorf("list with no snapshots = %#v, %v; want an empty list", list, err)
	}
	// A snapshot as SnapshotVM would leave it in the daemon's store.
	st, err := snapshot.NewStore(h.layout.SnapshotsDir()).Stage("base")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Publish(testMeta("base")); err != nil {
		t.Fatal(err)
	}
	list, err := h.c.ListSnapshots(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %+v, %v; want the snapshot", list, err)
	}
	if s := list[0]; s.Name != "base" || s.Kind != api.SnapshotUser || s.From != "dev" || s.Image != "debian-bookworm@3" || s.VCPU != 2 ||
		s.MemoryMiB != 1024 || s.DiskBytes != 8<<30 || !s.Created.Equal(testMeta("").Created) || s.SizeBytes <= 0 {
		t.Errorf("listed %+v; want every field of the snapshot, and the space it takes", s)
	}
	if err := h.c.DeleteSnapshot(ctx, "base"); err != nil {
		t.Fatal(err)
	}
	if list, _ := h.c.ListSnapshots(ctx); len(list) != 0 {
		t.Errorf("after rm: %+v", list)
	}
	if code, body := h.raw(t, "DELETE", api.RouteDeleteSnapshot.Path("base"), "", nil); code != http.StatusNotFound || !strings.Contains(body, "snapshot list") {
		t.Errorf("rm of a missing snapshot: %d %s; want 404 with a hint", code, body)
	}
}

// A create passes every field of its request to the VM service, the snapshot to restore and
// --cold included.
func TestCreateRequestCarriesEveryField(t *testing.T) {
	vcpu, mem, disk := 2, 1024, int64(8<<30)
	got := createRequest(api.CreateVMRequest{Name: "dev", Image: "img", Kernel: "k", VCPU: &vcpu, MemoryMiB: &mem, DiskBytes: &disk,
		AutoRemove: true, NoStart: true, NoNAT: true, KeepUnreachable: true, FromSnapshot: "base", Cold: true, CancelOnDisconnect: true})
	memBytes := int64(1024) << 20
	want := vmservice.CreateRequest{Name: "dev", Image: "img", Kernel: "k", VCPU: &vcpu, MemoryBytes: &memBytes, DiskBytes: &disk,
		AutoRemove: true, NoStart: true, NoNAT: true, KeepUnreachable: true, FromSnapshot: "base", Cold: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("createRequest =\n %+v\nwant\n %+v", got, want)
	}
}
