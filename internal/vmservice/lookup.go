package vmservice

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/names"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// Record returns the VMM record of vm, if it has one.
func Record(vm store.VM) (vmm.Record, bool) {
	if len(vm.Runtime) == 0 {
		return vmm.Record{}, false
	}
	var rec vmm.Record
	if json.Unmarshal(vm.Runtime, &rec) != nil {
		return vmm.Record{}, false
	}
	return rec, true
}

// generateName makes friendly VM names; tests replace it to force collisions.
var generateName = names.Generate

// NewName returns a generated name no VM has yet.
func (s *Service) NewName(ctx context.Context) string {
	return generateName(func(n string) bool {
		_, err := s.store.GetVM(ctx, n)
		return err == nil
	})
}

// List returns every VM, oldest first (spares are nobody's VMs yet: not listed).
func (s *Service) List(ctx context.Context) ([]store.VM, error) {
	vms, err := s.store.ListVMs(ctx)
	return notSpares(vms), err
}

// notSpares is vms without the spares, in place.
func notSpares(vms []store.VM) []store.VM {
	out := vms[:0]
	for _, vm := range vms {
		if !vm.Spare() {
			out = append(out, vm)
		}
	}
	return out
}

// Resolve finds a VM by reference: its full name, its full id, or a prefix of either that
// matches exactly one VM.
func (s *Service) Resolve(ctx context.Context, ref string) (store.VM, error) {
	if ref == "" {
		return store.VM{}, invalidf("empty VM reference; give a VM name or id (see `banger vm list`)")
	}
	if vm, err := s.store.GetVM(ctx, ref); err == nil && !vm.Spare() {
		return vm, nil
	} else if err != nil && !errors.Is(err, failure.NotFound) {
		return store.VM{}, err
	}
	if vm, err := s.store.GetVMByID(ctx, ref); err == nil && !vm.Spare() {
		return vm, nil
	}
	matches, err := s.store.FindVMs(ctx, ref)
	if err != nil {
		return store.VM{}, err
	}
	matches = notSpares(matches)
	switch len(matches) {
	case 0:
		return store.VM{}, notFoundf("no VM named %q (see `banger vm list`)", ref)
	case 1:
		return matches[0], nil
	}
	var names []string
	for _, m := range matches {
		names = append(names, m.Name)
	}
	return store.VM{}, invalidf("%q matches %d VMs (%s); give more of the name", ref, len(matches), strings.Join(names, ", "))
}
