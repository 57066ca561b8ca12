package vmservice

import (
	"context"
	"errors"

	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
)

// Steps of taking a snapshot and of making a VM from one, in order, besides the create steps
// (record, dirs, network) and the resume steps (restore, agent, renew, ready) they share.
// Their names are stable: tests inject faults and pause the daemon by name.
const (
	StepSettle  = "settle"  // a cold-booted guest's systemd finishes starting units (boot snapshots)
	StepCapture = "capture" // the guest paused, saved with a copy of its disk, continued
	StepPublish = "publish" // the snapshot named and visible
	StepClone   = "clone"   // a new VM's disk copied from the snapshot's
)

// SnapshotRequest asks for a snapshot of a running VM (SnapshotVM).
type SnapshotRequest struct {
	// Name is the snapshot's name; "" names it after the VM and the time.
	Name string
	// FailStep and PauseStep: see CreateRequest.
	FailStep, PauseStep string
}

// ForkRequest asks for live clones of a running VM (Fork).
type ForkRequest struct {
	// Count is how many clones; 0 means len(Names), or 1 when there are no names.
	Count int
	// Names are the clones' names, Count of them; none: generated names.
	Names []string
	// FailStep and PauseStep: see CreateRequest. They apply to the capture and to each
	// clone's steps.
	FailStep, PauseStep string
}

// SnapshotVM saves a running VM (memory, devices, its disk) as a user snapshot and lets it
// run on.
func (s *Service) SnapshotVM(ctx context.Context, ref string, req SnapshotRequest, obs Observer) (snapshot.Info, error) {
	return snapshot.Info{}, errors.New("vm snapshot: not implemented yet")
}

// Fork makes live clones of a running VM: each continues from the VM's state at the fork
// (processes, page cache, workspace) as a machine of its own. All are made or none.
func (s *Service) Fork(ctx context.Context, ref string, req ForkRequest, obs Observer) ([]store.VM, error) {
	return nil, errors.New("vm fork: not implemented yet")
}

// Snapshots lists the snapshots, boot and user, oldest first.
func (s *Service) Snapshots(ctx context.Context) ([]snapshot.Info, error) { return s.snaps.List() }

// RemoveSnapshot removes a snapshot (boot or user) by name, waiting for restores reading it;
// failure.NotFound when there is none. VMs made from it keep running: they have their own
// disks, and their memory maps of its files outlive the files' names.
func (s *Service) RemoveSnapshot(ctx context.Context, name string) error { return s.snaps.Remove(name) }

// DropBootSnapshots removes the boot snapshots whose description match selects (those of an
// image that was rebuilt or deleted, of a kernel replaced, of another agent build) and
// returns their names.
func (s *Service) DropBootSnapshots(ctx context.Context, match func(snapshot.Meta) bool) ([]string, error) {
	list, err := s.snaps.List()
	if err != nil {
		return nil, err
	}
	var dropped []string
	var errs []error
	for _, i := range list {
		if i.Kind != snapshot.Boot || !match(i.Meta) {
			continue
		}
		if err := s.snaps.Remove(i.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		dropped = append(dropped, i.Name)
	}
	return dropped, errors.Join(errs...)
}
