package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// A Firecracker snapshot is its own pair of files: the microVM state ("state", PUT
// /snapshot/create's snapshot_path) and the guest memory ("memory", mem_file_path, as large as
// the guest's memory). A restore loads them into a fresh Firecracker with the memory file as
// a File backend, which Firecracker maps privately: machines restored from one snapshot share
// the pages none of them wrote. The restored machine gets its own tap (network_overrides),
// vsock socket (vsock_override) and disks (PATCH /drives after the load, before it resumes).
//
// Firecracker opens the disks recorded in the snapshot (the original machine's paths) while
// it loads, so those files must still exist when a clone is restored; the clone then uses
// cfg's. Jailed Firecrackers are not snapshotted or restored yet.
const (
	stateFile  = "state"
	memoryFile = "memory"
)

// saveBound bounds a snapshot's creation (Firecracker writes the whole guest memory).
const saveBound = time.Minute

// snapshotExtra is a Firecracker snapshot's own data (vmm.Snapshot.Extra).
type snapshotExtra struct {
	// Vsock is the vsock socket the snapshotted machine had; a restore overrides it.
	Vsock string `json:"vsock,omitempty"`
}

// Snapshot implements vmm.Snapshotter: it pauses the machine if it runs, has Firecracker
// write its state and memory into dir, and resumes it if it ran.
func (m *Machine) Snapshot(ctx context.Context, dir string) (snap vmm.Snapshot, err error) {
	select {
	case <-m.proc.Done():
		return vmm.Snapshot{}, fmt.Errorf("firecracker: snapshot: the machine (pid %d) is gone", m.rec.PID)
	default:
	}
	if err := vmm.CheckSnapshotDir(dir, stateFile, memoryFile); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("firecracker: snapshot: %w", err)
	}
	if m.ex.Jail != "" || m.ex.Helper {
		return vmm.Snapshot{}, errors.New("firecracker: snapshots of a jailed Firecracker are not supported yet")
	}
	if m.ex.VCPU == 0 || m.ex.MemoryMiB == 0 {
		return vmm.Snapshot{}, errors.New("firecracker: snapshot: the machine was started by a banger that did not record its shape; restart it to snapshot it")
	}
	ctx, cancel := context.WithTimeout(ctx, saveBound)
	defer cancel()
	c := m.client()
	defer c.Close()
	info, err := c.Describe(ctx)
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("firecracker: snapshot: %w", err)
	}
	switch info.State {
	case StateRunning:
		if err := c.PatchVM(ctx, VMPaused); err != nil {
			return vmm.Snapshot{}, fmt.Errorf("firecracker: snapshot: %w", err)
		}
		defer func() {
			if rerr := c.PatchVM(ctx, VMResumed); rerr != nil {
				err = errors.Join(err, fmt.Errorf("firecracker: snapshot: resume the machine: %w", rerr))
			}
		}()
	case StatePaused:
	default:
		return vmm.Snapshot{}, fmt.Errorf("firecracker: snapshot: the machine is %q, not running or paused", info.State)
	}
	defer func() {
		if err != nil {
			vmm.RemoveSnapshotFiles(dir, stateFile, memoryFile)
		}
	}()
	err = c.CreateSnapshot(ctx, SnapshotCreate{SnapshotType: SnapshotFull,
		SnapshotPath: filepath.Join(dir, stateFile), MemFilePath: filepath.Join(dir, memoryFile)})
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("firecracker: snapshot into %s: %w", dir, err)
	}
	extra, _ := json.Marshal(snapshotExtra{Vsock: m.rec.Sockets["vsock"]})
	snap = vmm.Snapshot{Dir: dir, Driver: Name, VMMVersion: m.ex.Version, VCPU: m.ex.VCPU, MemoryMiB: m.ex.MemoryMiB,
		Disks: m.ex.Disks, NIC: m.ex.NIC, Files: map[string]string{"state": stateFile, "memory": memoryFile}, Extra: extra}
	if err := vmm.WriteSnapshot(snap); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("firecracker: snapshot: %w", err)
	}
	return snap, nil
}

// Restore implements vmm.Restorer.
func (d *Driver) Restore(ctx context.Context, cfg vmm.Config, snap vmm.Snapshot) (vmm.Machine, error) {
	info, err := d.Inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	if err := snap.Compatible(Name, info.Version.String(), cfg); err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	if snap.Path("state") == "" || snap.Path("memory") == "" {
		return nil, fmt.Errorf("firecracker: cannot restore the snapshot in %s: it lacks its state or memory file: %w", snap.Dir, vmm.ErrIncompatibleSnapshot)
	}
	ctx, cancel := context.WithTimeout(ctx, saveBound)
	defer cancel()
	m, err := d.start(ctx, cfg, &snap)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// load is configure for a restore: the logger and metrics, the snapshot with this machine's
// tap and vsock socket, its disks, and resume.
func (m *Machine) load(ctx context.Context, began time.Time, pl plan, snap vmm.Snapshot) error {
	if err := m.waitAPI(ctx, began); err != nil {
		return err
	}
	c := m.client()
	defer c.Close()
	wrap := m.wrapStartError
	t := time.Now()
	if err := c.PutLogger(ctx, pl.Logger); err != nil {
		return wrap(err)
	}
	if err := c.PutMetrics(ctx, pl.Metrics); err != nil {
		return wrap(err)
	}
	if err := m.checkVersion(ctx, c); err != nil {
		return err
	}
	if m.ex.Version != snap.VMMVersion {
		return fmt.Errorf("firecracker: cannot restore the snapshot in %s: it was made by firecracker %s, this one is %s: %w", snap.Dir, snap.VMMVersion, m.ex.Version, vmm.ErrIncompatibleSnapshot)
	}
	load := loadRequest(pl, snap)
	if err := c.LoadSnapshot(ctx, load); err != nil {
		return wrap(err)
	}
	for _, d := range pl.Drives {
		if err := c.PatchDrive(ctx, PartialDrive{DriveID: d.DriveID, PathOnHost: d.PathOnHost}); err != nil {
			return wrap(err)
		}
	}
	m.timings.Configure = time.Since(t)
	t = time.Now()
	err := c.PatchVM(ctx, VMResumed)
	m.timings.InstanceStart = time.Since(t)
	if err != nil {
		return wrap(err)
	}
	return nil
}

// loadRequest is PUT /snapshot/load for a machine with plan pl: the snapshot's files, its
// memory file as a File backend (mapped privately), not resumed (the drives are changed
// first), and the machine's own tap and vsock socket where they differ from the snapshot's.
func loadRequest(pl plan, snap vmm.Snapshot) SnapshotLoad {
	var ex snapshotExtra
	_ = json.Unmarshal(snap.Extra, &ex) // a bad extra only costs the vsock override's check
	load := SnapshotLoad{
		SnapshotPath: snap.Path("state"),
		MemBackend:   MemBackend{BackendType: "File", BackendPath: snap.Path("memory")},
	}
	for _, n := range pl.Networks {
		load.NetworkOverrides = append(load.NetworkOverrides, NetworkOverride{IfaceID: n.IfaceID, HostDevName: n.HostDevName})
	}
	if pl.Vsock.UDSPath != ex.Vsock {
		load.VsockOverride = &VsockOverride{UDSPath: pl.Vsock.UDSPath}
	}
	return load
}

var (
	_ vmm.Snapshotter = (*Machine)(nil)
	_ vmm.Restorer    = (*Driver)(nil)
)
