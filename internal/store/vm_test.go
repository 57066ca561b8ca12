package store

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/banger-dev/banger/internal/failure"
)

func sampleVM(name string) *VM {
	return &VM{
		Name:       name,
		State:      "created",
		Image:      "debian-bookworm",
		Kernel:     "debian-6.1",
		VMM:        "qemu",
		Accel:      "kvm",
		VCPU:       2,
		MemoryMiB:  2048,
		DiskBytes:  8 << 30,
		Dir:        "/state/vms/" + name,
		AutoRemove: true,
		Spec:       json.RawMessage(`{"vcpu":{"value":2,"source":"flag"}}`),
		Runtime:    json.RawMessage(`{"pid":1234,"sockets":["/run/x.sock"]}`),
		LastError:  "",
	}
}

var idPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

func TestCreateAndGetVM(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	v := sampleVM("dev")
	before := time.Now().UTC()
	if err := s.CreateVM(ctx, v); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	if !idPattern.MatchString(v.ID) {
		t.Errorf("generated ID %q is not 16 lower-case hex characters", v.ID)
	}
	if v.CreatedAt.Before(before.Add(-time.Second)) || v.CreatedAt.Location() != time.UTC || !v.UpdatedAt.Equal(v.CreatedAt) {
		t.Errorf("CreatedAt, UpdatedAt = %v, %v; want now in UTC, equal", v.CreatedAt, v.UpdatedAt)
	}

	byName, err := s.GetVM(ctx, "dev")
	if err != nil {
		t.Fatalf("GetVM: %v", err)
	}
	if !reflect.DeepEqual(byName, *v) {
		t.Errorf("GetVM =\n %+v\nwant\n %+v", byName, *v)
	}
	byID, err := s.GetVMByID(ctx, v.ID)
	if err != nil {
		t.Fatalf("GetVMByID: %v", err)
	}
	if !reflect.DeepEqual(byID, *v) {
		t.Errorf("GetVMByID =\n %+v\nwant\n %+v", byID, *v)
	}
}

func TestCreateVMKeepsGivenIDAndCreatedAt(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	created := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("CEST", 2*3600))
	v := &VM{ID: "0123456789abcdef", Name: "fixed", CreatedAt: created}
	if err := s.CreateVM(ctx, v); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	got, err := s.GetVMByID(ctx, "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreatedAt.Equal(created) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want %v in UTC", got.CreatedAt, created)
	}
	if got.Spec != nil || got.Runtime != nil {
		t.Errorf("Spec, Runtime = %q, %q; want nil for NULL", got.Spec, got.Runtime)
	}

	err = s.CreateVM(ctx, &VM{ID: "0123456789abcdef", Name: "other"})
	if err == nil || errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), "id 0123456789abcdef is already in use") {
		t.Errorf("CreateVM with a duplicate id = %v, want an id error that is not ErrNameTaken", err)
	}
}

func TestCreateVMRejectsBadID(t *testing.T) {
	s := openTest(t)
	for _, id := range []string{"xyz", "0123456789ABCDEF", "0123456789abcdef0"} {
		err := s.CreateVM(context.Background(), &VM{ID: id, Name: "n"})
		if err == nil || !strings.Contains(err.Error(), "is not 16 lower-case hex characters") {
			t.Errorf("CreateVM(id %q) = %v, want an id format error", id, err)
		}
	}
}

func TestCreateVMNameTaken(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := s.CreateVM(ctx, sampleVM("dev")); err != nil {
		t.Fatal(err)
	}
	dup := sampleVM("dev")
	err := s.CreateVM(ctx, dup)
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("second CreateVM(dev) = %v, want ErrNameTaken", err)
	}
	if want := `create vm "dev": a vm with that name already exists`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if dup.ID != "" || !dup.CreatedAt.IsZero() {
		t.Errorf("failed CreateVM changed its argument: ID %q, CreatedAt %v", dup.ID, dup.CreatedAt)
	}
}

func TestGetVMNotFound(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	_, err := s.GetVM(ctx, "ghost")
	if !errors.Is(err, failure.NotFound) || err.Error() != `vm "ghost": not found` {
		t.Errorf("GetVM(ghost) = %v, want `vm \"ghost\": not found` matching failure.NotFound", err)
	}
	_, err = s.GetVMByID(ctx, "0000000000000000")
	if !errors.Is(err, failure.NotFound) || err.Error() != `vm id 0000000000000000: not found` {
		t.Errorf("GetVMByID = %v, want `vm id 0000000000000000: not found` matching failure.NotFound", err)
	}
}

func TestListVMsOrderedByCreation(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if vms, err := s.ListVMs(ctx); err != nil || len(vms) != 0 {
		t.Fatalf("ListVMs on an empty store = %v, %v; want none", vms, err)
	}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	// Insert out of order; 10ns and 9ns apart to catch text sorting of fractional seconds.
	for _, c := range []struct {
		name string
		at   time.Duration
	}{{"c", 100}, {"a", 10}, {"b", 19}, {"d", time.Hour}} {
		if err := s.CreateVM(ctx, &VM{Name: c.name, CreatedAt: base.Add(c.at)}); err != nil {
			t.Fatal(err)
		}
	}
	vms, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vms {
		names = append(names, v.Name)
	}
	if got := strings.Join(names, ","); got != "a,b,c,d" {
		t.Errorf("ListVMs order = %s, want a,b,c,d", got)
	}
}

// TestUpdateVM runs on synctest's clock, so that its millisecond sleep makes the update's
// time exactly that much later than the create's, and the test checks that time exactly.
func TestUpdateVM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t)
		ctx := context.Background()
		v := sampleVM("dev")
		if err := s.CreateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
		created := v.CreatedAt
		time.Sleep(time.Millisecond)

		v.Name = "dev2"
		v.State = "running"
		v.VMM = "firecracker"
		v.Accel = "tcg"
		v.VCPU, v.MemoryMiB, v.DiskBytes = 4, 4096, 16<<30
		v.Dir = "/elsewhere"
		v.AutoRemove = false
		v.Spec = nil
		v.Runtime = json.RawMessage(`{"pid":99}`)
		v.LastError = "boom"
		v.CreatedAt = time.Time{} // ignored by UpdateVM
		if err := s.UpdateVM(ctx, v); err != nil {
			t.Fatalf("UpdateVM: %v", err)
		}
		if want := created.Add(time.Millisecond); !v.UpdatedAt.Equal(want) {
			t.Errorf("UpdatedAt = %v, want the update's time %v", v.UpdatedAt, want)
		}
		got, err := s.GetVMByID(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		v.CreatedAt = created
		if !reflect.DeepEqual(got, *v) {
			t.Errorf("after UpdateVM, GetVMByID =\n %+v\nwant\n %+v", got, *v)
		}
		if _, err := s.GetVM(ctx, "dev"); !errors.Is(err, failure.NotFound) {
			t.Errorf("old name still resolves after rename: %v", err)
		}
	})
}

func TestUpdateVMErrors(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	a, b := sampleVM("a"), sampleVM("b")
	for _, v := range []*VM{a, b} {
		if err := s.CreateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	renamed := *b
	renamed.Name = "a"
	if err := s.UpdateVM(ctx, &renamed); !errors.Is(err, ErrNameTaken) {
		t.Errorf("UpdateVM renaming b to a = %v, want ErrNameTaken", err)
	}
	gone := sampleVM("gone")
	gone.ID = "ffffffffffffffff"
	if err := s.UpdateVM(ctx, gone); !errors.Is(err, failure.NotFound) {
		t.Errorf("UpdateVM of a missing VM = %v, want failure.NotFound", err)
	}
	bad := *a
	bad.Runtime = json.RawMessage("{")
	if err := s.UpdateVM(ctx, &bad); err == nil || !strings.Contains(err.Error(), "runtime is not valid JSON") {
		t.Errorf("UpdateVM with bad runtime JSON = %v, want a JSON error", err)
	}
	empty := *a
	empty.Name = ""
	if err := s.UpdateVM(ctx, &empty); err == nil || !strings.Contains(err.Error(), "empty name") {
		t.Errorf("UpdateVM with empty name = %v, want an empty-name error", err)
	}
}

// TestSetVMState runs on synctest's clock, so that its millisecond sleep makes the new state's
// time exactly that much later than the create's, and the test checks that time exactly.
func TestSetVMState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t)
		ctx := context.Background()
		v := sampleVM("dev")
		if err := s.CreateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		if err := s.SetVMState(ctx, v.ID, "failed", "qemu exited with status 1"); err != nil {
			t.Fatalf("SetVMState: %v", err)
		}
		got, err := s.GetVM(ctx, "dev")
		if err != nil {
			t.Fatal(err)
		}
		if got.State != "failed" || got.LastError != "qemu exited with status 1" || !got.UpdatedAt.Equal(v.UpdatedAt.Add(time.Millisecond)) {
			t.Errorf("after SetVMState: State %q, LastError %q, UpdatedAt %v (was %v); want failed, the error, 1ms later",
				got.State, got.LastError, got.UpdatedAt, v.UpdatedAt)
		}
		if got.Image != v.Image || !reflect.DeepEqual(got.Runtime, v.Runtime) {
			t.Errorf("SetVMState changed other fields: %+v", got)
		}

		err = s.SetVMState(ctx, "ffffffffffffffff", "running", "")
		if !errors.Is(err, failure.NotFound) {
			t.Errorf("SetVMState on a missing VM = %v, want failure.NotFound", err)
		}
	})
}

func TestDeleteVM(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	v := sampleVM("dev")
	if err := s.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, v.ID); err != nil {
		t.Fatalf("DeleteVM: %v", err)
	}
	if _, err := s.GetVMByID(ctx, v.ID); !errors.Is(err, failure.NotFound) {
		t.Errorf("GetVMByID after delete = %v, want failure.NotFound", err)
	}
	err := s.DeleteVM(ctx, v.ID)
	if !errors.Is(err, failure.NotFound) || err.Error() != "delete vm id "+v.ID+": not found" {
		t.Errorf("second DeleteVM = %v, want failure.NotFound naming the id", err)
	}
	if err := s.CreateVM(ctx, sampleVM("dev")); err != nil {
		t.Errorf("name not free after delete: %v", err)
	}
}

func TestFindVMs(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, c := range []struct{ id, name string }{
		{"aaaa000000000001", "dev"},
		{"aaaa000000000002", "devbox"},
		{"bbbb000000000003", "web"},
		{"dddd000000000004", "Dev"},
		{"cccc000000000005", "d%_"},
	} {
		if err := s.CreateVM(ctx, &VM{ID: c.id, Name: c.name, CreatedAt: base.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   string
	}{
		{"dev", "dev,devbox"},
		{"devb", "devbox"},
		{"aaaa", "dev,devbox"},
		{"aaaa000000000002", "devbox"},
		{"d", "dev,devbox,Dev,d%_"}, // names starting with "d", and Dev by its id "dddd..."
		{"D", "Dev"},                // case-sensitive
		{"w", "web"},
		{"b", "web"}, // by id
		{"d%", "d%_"},
		{"%", ""}, // LIKE wildcards are literal
		{"_", ""},
		{"zzz", ""},
		{"", "dev,devbox,web,Dev,d%_"},
	}
	for _, tt := range tests {
		vms, err := s.FindVMs(ctx, tt.prefix)
		if err != nil {
			t.Fatalf("FindVMs(%q): %v", tt.prefix, err)
		}
		var names []string
		for _, v := range vms {
			names = append(names, v.Name)
		}
		if got := strings.Join(names, ","); got != tt.want {
			t.Errorf("FindVMs(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}
}
