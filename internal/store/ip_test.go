package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestVMAddressesAreUniqueAndReleasedWithTheVM(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	a := &VM{Name: "a", State: "running", IP: "172.16.0.2", NAT: true}
	if err := s.CreateVM(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetVM(ctx, "a")
	if got.IP != "172.16.0.2" || !got.NAT {
		t.Errorf("read back %q nat=%v", got.IP, got.NAT)
	}
	if err := s.CreateVM(ctx, &VM{Name: "b", State: "running", IP: "172.16.0.2"}); !errors.Is(err, ErrIPTaken) {
		t.Errorf("second VM with the same address: err = %v, want ErrIPTaken", err)
	}
	// VMs without an address do not collide.
	for _, n := range []string{"c", "d"} {
		if err := s.CreateVM(ctx, &VM{Name: n, State: "created"}); err != nil {
			t.Errorf("VM %s without an address: %v", n, err)
		}
	}
	if err := s.DeleteVM(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVM(ctx, &VM{Name: "e", State: "running", IP: "172.16.0.2"}); err != nil {
		t.Errorf("address of a deleted VM must be free again: %v", err)
	}
}
