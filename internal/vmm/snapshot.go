package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Snapshotter is a Machine whose VMM can save its guest (vCPU and device state and guest
// memory) to files that Restorer.Restore starts new machines from.
//
// Snapshot writes the snapshot into dir, which must exist and is the caller's; it refuses a
// dir that already holds a snapshot's files. The driver writes only the files it names in
// Snapshot.Files plus SnapshotFile (snapshot.json, the snapshot's description, written last),
// and nothing else anywhere. It pauses the guest's
// vCPUs while it saves and leaves the machine as it found it: a running machine runs again
// when Snapshot returns, a paused one stays paused, whether Snapshot succeeded or not. The
// machine's disks are not copied: the guest's disk writes that reached the disk files are
// there, and a restore needs a copy of the disks as they were at the snapshot (the caller
// copies them while the machine is paused, or pauses it around Snapshot and the copy).
//
// A snapshot's shape does not depend on how the machine began: where the driver keeps guest
// memory out of the device state (a "memory" file that restored machines map copy-on-write,
// so that clones share the pages none of them wrote), it does so for a machine that was
// itself restored too, so that a fork of a warm-started VM costs what a fork of a booted one
// does. (QEMU: a restored machine's RAM is a private mapping that its migration stream cannot
// leave out, so the memory file it maps is copied and the pages its guest wrote are laid over
// the copy, or, where QEMU's memory cannot be read, it is migrated into a short-lived template
// QEMU whose RAM is the snapshot's memory file; Firecracker writes guest memory to its own
// file always.) Helper processes a
// driver runs for this end before Snapshot returns, and die with the caller's process.
//
// Snapshot returns within the driver's save bound (a minute at most for a guest of a few GiB)
// or when ctx is done. If it fails it removes what it wrote in dir. On a machine whose process
// is gone it returns an error, promptly.
type Snapshotter interface {
	Snapshot(ctx context.Context, dir string) (Snapshot, error)
}

// Precopier is a Snapshotter that can do part of a Snapshot's copying while the guest still
// runs, so that the Snapshot that follows pauses the guest only for what changed meanwhile.
// (QEMU: a restored machine's memory file is copied ahead; the pages its guest writes until
// the Snapshot are QEMU's, not the file's, and are copied then.)
//
// Precopy writes into dir (which must exist and hold no snapshot's files) only files that a
// Snapshot into dir writes, and remembers them for the next Snapshot into dir, which then
// copies what they lack, whatever the guest did meanwhile: the snapshot is the same as
// without the Precopy. Precopy may write nothing, when the machine has nothing to copy ahead.
// The caller calls release once, after that Snapshot or instead of it: it forgets what
// Precopy remembered (a Snapshot into dir after it copies everything); files left in dir are
// the caller's, as dir is. A second Precopy replaces the first. Precopy returns within the
// driver's save bound or when ctx is done; on an error it has removed what it wrote.
type Precopier interface {
	Precopy(ctx context.Context, dir string) (release func(), err error)
}

// Restorer is a Driver that starts machines from snapshots its machines made.
//
// Restore starts a new VMM process from snap with the identity cfg gives it: runtime
// directory (sockets), Dir (logs, console), disks, NIC (tap and MAC, and the tap's queue as
// for Start), network namespace. The
// snapshot's files are read, never written, so that any number of machines may be restored
// from one snapshot, at once; cfg.Disks must be the restored machine's own (a copy of the
// disks as they were at the snapshot, writable ones not shared with another machine).
// Restore returns a running machine (its vCPUs resumed), with the same contracts as one
// Start returned, within a minute (the start bound plus loading the snapshot) or when ctx is
// done.
//
// Restore refuses, before it starts anything, with an error wrapping ErrIncompatibleSnapshot
// that says why: a snapshot of another driver; one made by another version of the VMM than
// the one the driver would run now; one whose vCPU count, memory size, number of disks or
// presence of a NIC differ from cfg's (the guest's devices cannot change under it). If Restore
// fails for any reason, nothing it started is left, as for Start.
type Restorer interface {
	Restore(ctx context.Context, cfg Config, snap Snapshot) (Machine, error)
}

// ErrIncompatibleSnapshot is wrapped by Restore's refusal of a snapshot it cannot restore
// (another driver's, another VMM version's, another machine shape's).
var ErrIncompatibleSnapshot = errors.New("incompatible snapshot")

// SnapshotFile is the name of a snapshot's description (Snapshot in JSON) in its directory.
const SnapshotFile = "snapshot.json"

// maxSnapshotFile bounds the description file a snapshot directory may hold.
const maxSnapshotFile = 64 << 10

// Snapshot describes a saved machine: what made it and the files in its directory. Its JSON
// form is persisted (SnapshotFile) and read back with ReadSnapshot, which checks it.
type Snapshot struct {
	// Dir is the snapshot's directory, where its files are; it is not persisted (the
	// directory may move), ReadSnapshot sets it.
	Dir string `json:"-"`

	Driver     string `json:"driver"`      // the driver's Name
	VMMVersion string `json:"vmm_version"` // the version of the VMM that saved it

	VCPU      int  `json:"vcpu"`
	MemoryMiB int  `json:"memory_mib"`
	Disks     int  `json:"disks"` // how many disks the machine had
	NIC       bool `json:"nic"`   // whether it had a network device

	// Files maps each of the driver's roles ("state", "memory") to a file name in Dir.
	Files map[string]string `json:"files"`
	// Extra is the driver's own data.
	Extra json.RawMessage `json:"extra,omitempty"`
}

// Path returns the path of the file for role, or "" when the snapshot has none.
func (s Snapshot) Path(role string) string {
	name, ok := s.Files[role]
	if !ok {
		return ""
	}
	return filepath.Join(s.Dir, name)
}

// Compatible checks the parts of a snapshot every driver compares before a restore: the
// driver, the VMM version (version is what the driver would run now) and the machine's
// shape, and that it is well-formed (as ParseSnapshot checks: a Snapshot made in memory is
// checked too). Its error wraps ErrIncompatibleSnapshot.
func (s Snapshot) Compatible(driver, version string, cfg Config) error {
	var why string
	if err := s.validate(); err != nil {
		return fmt.Errorf("cannot restore the snapshot in %s: %v: %w", s.Dir, err, ErrIncompatibleSnapshot)
	}
	switch {
	case s.Driver != driver:
		why = fmt.Sprintf("it was made by the %q driver, not %q", s.Driver, driver)
	case s.VMMVersion != version:
		why = fmt.Sprintf("it was made by %s %s, and %s is installed now", driver, s.VMMVersion, version)
	case s.VCPU != cfg.VCPU:
		why = fmt.Sprintf("it has %d vCPUs, the VM %d", s.VCPU, cfg.VCPU)
	case s.MemoryMiB != cfg.MemoryMiB:
		why = fmt.Sprintf("it has %d MiB of memory, the VM %d", s.MemoryMiB, cfg.MemoryMiB)
	case s.Disks != len(cfg.Disks):
		why = fmt.Sprintf("it has %d disks, the VM %d", s.Disks, len(cfg.Disks))
	case s.NIC != (cfg.NIC != nil):
		why = fmt.Sprintf("it has a network device: %v, the VM: %v", s.NIC, cfg.NIC != nil)
	default:
		return nil
	}
	return fmt.Errorf("cannot restore the snapshot in %s: %s: %w", s.Dir, why, ErrIncompatibleSnapshot)
}

// ParseSnapshot reads a snapshot's description and checks it: known fields only, a driver and
// version, a sane shape, and file names that stay inside the snapshot's directory (a plain
// name, no separators, not "." or ".."). Dir is left empty.
func ParseSnapshot(b []byte) (Snapshot, error) {
	if len(b) > maxSnapshotFile {
		return Snapshot{}, fmt.Errorf("snapshot description is %d bytes, more than %d", len(b), maxSnapshotFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Snapshot
	if err := dec.Decode(&s); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot description: %w", err)
	}
	if dec.More() {
		return Snapshot{}, errors.New("snapshot description: data after the JSON object")
	}
	if err := s.validate(); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot description: %w", err)
	}
	return s, nil
}

// validate checks what ParseSnapshot promises of a snapshot.
func (s Snapshot) validate() error {
	switch {
	case s.Driver == "" || s.VMMVersion == "":
		return errors.New("it names no driver or VMM version")
	case s.VCPU < 1 || s.VCPU > 1024:
		return fmt.Errorf("%d vCPUs", s.VCPU)
	case s.MemoryMiB < 1 || s.MemoryMiB > 16<<20:
		return fmt.Errorf("%d MiB of memory", s.MemoryMiB)
	case s.Disks < 0 || s.Disks > 64:
		return fmt.Errorf("%d disks", s.Disks)
	case len(s.Files) == 0:
		return errors.New("it names no files")
	}
	for role, name := range s.Files {
		if role == "" || name == "" || name == "." || name == ".." || name == SnapshotFile ||
			strings.ContainsAny(name, "/\x00") || len(name) > 255 {
			return fmt.Errorf("file %q for %q is not a plain file name", name, role)
		}
	}
	return nil
}

// CheckSnapshotDir makes sure that dir exists and holds none of a snapshot's files (names
// and the description), so that a Snapshotter never overwrites, nor on failure removes, a
// file it did not write.
func CheckSnapshotDir(dir string, names ...string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("snapshot directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("snapshot directory %s is not a directory", dir)
	}
	for _, n := range append(names, SnapshotFile) {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			return fmt.Errorf("snapshot directory %s already holds %s; snapshot into an empty directory", dir, n)
		}
	}
	return nil
}

// ReadSnapshot reads the snapshot in dir (its SnapshotFile) and checks it with ParseSnapshot
// and that its files exist as regular files.
func ReadSnapshot(dir string) (Snapshot, error) {
	f, err := os.Open(filepath.Join(dir, SnapshotFile))
	if err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSnapshotFile+1))
	if err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot %s: %w", f.Name(), err)
	}
	s, err := ParseSnapshot(b)
	if err != nil {
		return Snapshot{}, fmt.Errorf("%s: %w", f.Name(), err)
	}
	s.Dir = dir
	for role := range s.Files {
		fi, err := os.Lstat(s.Path(role))
		if err != nil {
			return Snapshot{}, fmt.Errorf("snapshot in %s: %w", dir, err)
		}
		if !fi.Mode().IsRegular() {
			return Snapshot{}, fmt.Errorf("snapshot in %s: %s is not a regular file", dir, s.Path(role))
		}
	}
	return s, nil
}

// WriteSnapshot writes s's description into s.Dir (SnapshotFile), the last step of a
// Snapshotter: a directory with a description holds a complete snapshot.
func WriteSnapshot(s Snapshot) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(s.Dir, SnapshotFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write snapshot description: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write snapshot description: %w", err)
	}
	return nil
}

// RemoveSnapshotFiles removes the files a failed Snapshot wrote into dir (names), and the
// description; the directory itself stays, it is the caller's.
func RemoveSnapshotFiles(dir string, names ...string) {
	for _, n := range append(names, SnapshotFile, SnapshotFile+".tmp") {
		_ = os.Remove(filepath.Join(dir, n))
	}
}
