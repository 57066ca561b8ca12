package vmmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/vmm"
)

// The fake's snapshot files: its "device state" starts with stateMagic, its "memory" is a
// sparse file of the guest's size.
const (
	stateFile  = "state"
	memoryFile = "memory"
	stateMagic = "vmmtest snapshot\n"
)

func (d *Driver) version() string {
	if d.Version != "" {
		return d.Version
	}
	return DefaultVersion
}

// Running reports whether the machine's (pretend) vCPUs run: not paused and the process alive.
func (m *Machine) Running() bool {
	select {
	case <-m.proc.Done():
		return false
	default:
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.paused
}

// Pause implements vmm.Pauser.
func (m *Machine) Pause(ctx context.Context) error { return m.setPaused(true) }

// Resume implements vmm.Pauser.
func (m *Machine) Resume(ctx context.Context) error { return m.setPaused(false) }

func (m *Machine) setPaused(p bool) error {
	select {
	case <-m.proc.Done():
		return fmt.Errorf("vmmtest: machine (pid %d) is gone", m.rec.PID)
	default:
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Kept beside the machine's sockets as well, as a real VMM keeps it in its process: a
	// machine attached again (a daemon restart) is as paused as it was.
	marker := m.pausedMarker()
	if p {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return fmt.Errorf("vmmtest: %w", err)
		}
	} else if err := os.Remove(marker); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("vmmtest: %w", err)
	}
	m.paused = p
	return nil
}

// pausedMarker is the file that says the machine is paused.
func (m *Machine) pausedMarker() string {
	return filepath.Join(filepath.Dir(m.rec.Sockets["agent"]), "paused")
}

// Snapshot implements vmm.Snapshotter: it writes a state file and a sparse memory file of the
// guest's size into dir, and leaves the machine paused or running as it was.
func (m *Machine) Snapshot(ctx context.Context, dir string) (vmm.Snapshot, error) {
	select {
	case <-m.proc.Done():
		return vmm.Snapshot{}, fmt.Errorf("vmmtest: snapshot: machine (pid %d) is gone", m.rec.PID)
	default:
	}
	m.mu.Lock()
	precopied := m.precopied == dir
	m.precopied = ""
	m.mu.Unlock()
	check := []string{stateFile, memoryFile}
	if precopied {
		check = check[:1] // the memory file is the Precopy's
	}
	if err := vmm.CheckSnapshotDir(dir, check...); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("vmmtest: snapshot: %w", err)
	}
	var sh shape
	if err := json.Unmarshal(m.rec.Extra, &sh); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("vmmtest: snapshot: the machine's record has no shape: %v", err)
	}
	snap := vmm.Snapshot{Dir: dir, Driver: Name, VMMVersion: m.version, VCPU: sh.VCPU, MemoryMiB: sh.MemoryMiB,
		Disks: sh.Disks, NIC: sh.NIC, Files: map[string]string{"state": stateFile, "memory": memoryFile}}
	err := os.WriteFile(filepath.Join(dir, stateFile), []byte(stateMagic), 0o600)
	if err == nil && !precopied {
		err = writeMemoryFile(dir, sh.MemoryMiB)
	}
	if err == nil {
		err = vmm.WriteSnapshot(snap)
	}
	if err != nil {
		vmm.RemoveSnapshotFiles(dir, stateFile, memoryFile)
		return vmm.Snapshot{}, fmt.Errorf("vmmtest: snapshot: %w", err)
	}
	return snap, nil
}

// writeMemoryFile writes the sparse memory file of a guest of memoryMiB into dir.
func writeMemoryFile(dir string, memoryMiB int) error {
	err := os.WriteFile(filepath.Join(dir, memoryFile), nil, 0o600)
	if err == nil {
		err = os.Truncate(filepath.Join(dir, memoryFile), int64(memoryMiB)<<20)
	}
	return err
}

// Precopy implements vmm.Precopier: it writes the memory file a Snapshot into dir writes, and
// records whether the machine was paused then (Precopies).
func (m *Machine) Precopy(ctx context.Context, dir string) (func(), error) {
	if err := vmm.CheckSnapshotDir(dir, stateFile, memoryFile); err != nil {
		return nil, fmt.Errorf("vmmtest: precopy: %w", err)
	}
	var sh shape
	if err := json.Unmarshal(m.rec.Extra, &sh); err != nil {
		return nil, fmt.Errorf("vmmtest: precopy: the machine's record has no shape: %v", err)
	}
	if err := writeMemoryFile(dir, sh.MemoryMiB); err != nil {
		vmm.RemoveSnapshotFiles(dir, memoryFile)
		return nil, fmt.Errorf("vmmtest: precopy: %w", err)
	}
	m.mu.Lock()
	m.precopied = dir
	m.precopies++
	if m.paused {
		m.pausedPrecopies++
	}
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		if m.precopied == dir {
			m.precopied = ""
		}
		m.mu.Unlock()
	}, nil
}

// Precopies says how many times Precopy ran on the machine, and how many of them while it was
// paused.
func (m *Machine) Precopies() (n, paused int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.precopies, m.pausedPrecopies
}

// Restore implements vmm.Restorer: after the checks every driver makes it reads the state
// file (a wrong one fails the restore after the process started, as a real VMM's would) and
// starts a running machine.
func (d *Driver) Restore(ctx context.Context, cfg vmm.Config, snap vmm.Snapshot) (vmm.Machine, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := snap.Compatible(Name, d.version(), cfg); err != nil {
		return nil, fmt.Errorf("vmmtest: %w", err)
	}
	if d.StartErr != nil {
		return nil, d.StartErr
	}
	m, err := d.start(cfg, true)
	if err != nil {
		return nil, err
	}
	state, err := os.ReadFile(snap.Path("state"))
	if err == nil && !bytes.Equal(state, []byte(stateMagic)) {
		err = errors.New("the state file is not a snapshot's")
	}
	if err == nil {
		_, err = os.Stat(snap.Path("memory"))
	}
	if err != nil {
		_ = m.Kill()
		d.machines = d.machines[:len(d.machines)-1]
		return nil, fmt.Errorf("vmmtest: restore from %s: %w", snap.Dir, err)
	}
	m.paused = false
	return m, nil
}

var (
	_ vmm.Pauser      = (*Machine)(nil)
	_ vmm.Snapshotter = (*Machine)(nil)
	_ vmm.Precopier   = (*Machine)(nil)
	_ vmm.Restorer    = (*Driver)(nil)
)
