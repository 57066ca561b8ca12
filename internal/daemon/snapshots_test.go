package daemon

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmservice"
)

// fakeSnapshots stands in for the VM service's SnapshotVM and Fork, recording what the
// handlers asked and answering with what the test set; listing and removal are the real
// service's.
type fakeSnapshots struct {
	snapshotter

	mu      sync.Mutex
	ref     string
	snapReq vmservice.SnapshotRequest
	forkReq vmservice.ForkRequest
	calls   int
	info    snapshot.Info
	clones  []store.VM
	err     error
}

func (f *fakeSnapshots) SnapshotVM(ctx context.Context, ref string, req vmservice.SnapshotRequest, obs vmservice.Observer) (snapshot.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.ref, f.snapReq = ref, req
	obs.Notice("saving " + ref)
	return f.info, f.err
}

func (f *fakeSnapshots) Fork(ctx context.Context, ref string, req vmservice.ForkRequest, obs vmservice.Observer) ([]store.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.ref, f.forkReq = ref, req
	obs.Notice("forking " + ref)
	return f.clones, f.err
}

func (f *fakeSnapshots) called() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// withFakeSnapshots puts a fakeSnapshots in h's daemon.
func withFakeSnapshots(h *harness) *fakeSnapshots {
	f := &fakeSnapshots{snapshotter: h.d.vms}
	h.d.snaps = f
	return f
}

func testMeta(name string) snapshot.Meta {
	return snapshot.Meta{
		Name: name, Kind: snapshot.User, Created: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), From: "dev",
		Image: "debian-bookworm@3", Kernel: "debian-6.1", Agent: "initramfs-abc", VMM: "firecracker", Accel: "kvm",
		VCPU: 2, MemoryMiB: 1024, DiskBytes: 8 << 30, Hostname: "dev",
	}
}

func TestSnapshotRoutePassesItsRequestAndReturnsTheSnapshot(t *testing.T) {
	h := newHarness(t, true)
	f := withFakeSnapshots(h)
	f.info = snapshot.Info{Meta: testMeta("base"), Bytes: 12345}
	h.c.Header.Set(api.HeaderInjectFault, "capture")
	h.c.Header.Set(api.HeaderPauseAt, "publish")
	var notices []string
	snap, err := h.c.SnapshotVM(context.Background(), "dev", api.SnapshotVMRequest{Name: "base"}, func(ev api.Event) {
		if ev.Type == api.EventNotice {
			notices = append(notices, ev.Message)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := api.Snapshot{Name: "base", Kind: api.SnapshotUser, Created: f.info.Created, From: "dev", Image: "debian-bookworm@3",
		Kernel: "debian-6.1", VMM: "firecracker", VCPU: 2, MemoryMiB: 1024, DiskBytes: 8 << 30, SizeBytes: 12345}
	if !reflect.DeepEqual(snap, want) {
		t.Errorf("snapshot =\n %+v\nwant\n %+v", snap, want)
	}
	if f.ref != "dev" || f.snapReq != (vmservice.SnapshotRequest{Name: "base", FailStep: "capture", PauseStep: "publish"}) {
		t.Errorf("the service was asked for %q, %+v; want dev, the name and the test hooks", f.ref, f.snapReq)
	}
	if strings.Join(notices, ",") != "saving dev" {
		t.Errorf("notices %q, want the service's", notices)
	}
}

func TestForkRoutePassesItsRequestAndReturnsTheClones(t *testing.T) {
	h := newHarness(t, true)
	f := withFakeSnapshots(h)
	f.clones = []store.VM{{ID: "1", Name: "a", State: "running"}, {ID: "2", Name: "b", State: "running"}}
	h.c.Header.Set(api.HeaderInjectFault, "clone")
	clones, err := h.c.ForkVM(context.Background(), "dev", api.ForkVMRequest{Count: 2, Names: []string{"a", "b"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(clones) != 2 || clones[0].Name != "a" || clones[1].Name != "b" || clones[1].State != "running" {
		t.Errorf("clones = %+v, want a and b, running", clones)
	}
	if f.ref != "dev" || !reflect.DeepEqual(f.forkReq, vmservice.ForkRequest{Count: 2, Names: []string{"a", "b"}, FailStep: "clone"}) {
		t.Errorf("the service was asked for %q, %+v; want dev, count, names and the fault", f.ref, f.forkReq)
	}
}

// Without test hooks the daemon ignores the test headers on snapshot and fork as on create.
func TestSnapshotAndForkIgnoreTestHeadersWithoutTestHooks(t *testing.T) {
	h := newHarness(t, false)
	f := withFakeSnapshots(h)
	f.info = snapshot.Info{Meta: testMeta("base")}
	f.clones = []store.VM{{Name: "a"}}
	h.c.Header.Set(api.HeaderInjectFault, "capture")
	h.c.Header.Set(api.HeaderPauseAt, "capture")
	if _, err := h.c.SnapshotVM(context.Background(), "dev", api.SnapshotVMRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if f.snapReq.FailStep != "" || f.snapReq.PauseStep != "" {
		t.Errorf("snapshot request %+v: want no test hooks", f.snapReq)
	}
	if _, err := h.c.ForkVM(context.Background(), "dev", api.ForkVMRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if f.forkReq.FailStep != "" || f.forkReq.PauseStep != "" {
		t.Errorf("fork request %+v: want no test hooks", f.forkReq)
	}
}

// The service's errors reach the client with their kind: a missing VM is not_found, a VM in
// the wrong state or a name taken is a conflict.
func TestSnapshotAndForkErrorsKeepTheirKind(t *testing.T) {
	h := newHarness(t, false)
	f := withFakeSnapshots(h)
	for _, tc := range []struct {
		err  error
		code string
	}{
		{failure.New(failure.NotFound, `no VM "dev"`), "not_found"},
		{failure.New(failure.Conflict, `vm dev is stopped; only a running VM can be snapshotted`), "conflict"},
		{failure.New(failure.Invalid, `bad`), "invalid"},
		{errors.New("the VMM failed"), "failed"},
	} {
		f.err = tc.err
		_, err := h.c.SnapshotVM(context.Background(), "dev", api.SnapshotVMRequest{}, nil)
		if e := apiErr(t, err); e.Code != tc.code || e.Message != tc.err.Error() {
			t.Errorf("snapshot failing with %v: %+v, want code %s", tc.err, e, tc.code)
		}
		_, err = h.c.ForkVM(context.Background(), "dev", api.ForkVMRequest{}, nil)
		if e := apiErr(t, err); e.Code != tc.code || e.Message != tc.err.Error() {
			t.Errorf("fork failing with %v: %+v, want code %s", tc.err, e, tc.code)
		}
	}
}

func TestBadSnapshotAndForkRequestsAreRefused(t *testing.T) {
	h := newHarness(t, false)
	f := withFakeSnapshots(h)
	for _, tc := range []struct {
		route api.Route
		body  string
		want  string
	}{
		{api.RouteSnapshotVM, `{"name":"Bad_Name"}`, "Bad_Name"},
		{api.RouteSnapshotVM, `{"name":"boot-1"}`, "boot snapshots"},
		{api.RouteSnapshotVM, `{"nmae":"x"}`, `unknown field`},
		{api.RouteForkVM, `{"count":-1}`, "1 to 64 clones"},
		{api.RouteForkVM, `{"count":65}`, "1 to 64 clones"},
		{api.RouteForkVM, `{"count":3,"names":["a","b"]}`, "give a name to each clone"},
		{api.RouteForkVM, `{"names":["a","a"]}`, "is given twice"},
		{api.RouteForkVM, `{"names":["ok","Not-OK"]}`, "Not-OK"},
	} {
		code, body := h.raw(t, "POST", tc.route.Path("dev"), tc.body, nil)
		if code != http.StatusBadRequest || !strings.Contains(body, `"invalid"`) || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s: %d %s; want 400, invalid, mentioning %q", tc.route, tc.body, code, body, tc.want)
		}
	}
	if n := f.called(); n != 0 {
		t.Errorf("bad requests reached the service %d times", n)
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
