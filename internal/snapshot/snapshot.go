// Package snapshot owns saved guests on the host: the boot snapshots warm starts restore
// from and the snapshots users take of running VMs (vm snapshot, and the transient ones vm
// fork makes). A snapshot is a directory holding what the VMM saved (the machine: vCPUs,
// devices, memory), a copy of the VM's writable disk as it was at that moment, and a
// description (Meta) of where it came from: image version, kernel and agent build, VMM,
// shape, and the identity of the guest it saved, which a restored clone must shed.
//
// Snapshots are put together in a hidden staging directory and published whole under their
// name, the description written last: a directory without a valid description is not a
// snapshot, and Clean removes it and every staging directory a crash left behind.
package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/names"
)

// Kind says why a snapshot exists.
type Kind string

const (
	// Boot snapshots are of a freshly booted, settled guest; warm starts restore from them.
	// banger makes and removes them; their name is derived from their Key.
	Boot Kind = "boot"
	// User snapshots were asked for (vm snapshot) and live until removed.
	User Kind = "user"
)

// Layout of a snapshot's directory.
const (
	MetaFile   = "meta.json" // the description, written last
	MachineDir = "machine"   // what the VMM saved (vmm.Snapshot)
	DiskFile   = "disk.ext4" // the VM's writable disk at the snapshot
)

// maxMeta bounds a description file.
const maxMeta = 64 << 10

// Meta describes a snapshot: what it was made from and the guest it saved. Its JSON form is
// the snapshot's MetaFile.
type Meta struct {
	Name    string    `json:"name"`
	Kind    Kind      `json:"kind"`
	Created time.Time `json:"created"`
	// Key identifies a boot snapshot's combination (see Combination.Key); "" for others.
	Key string `json:"key,omitempty"`
	// From is the name of the VM the snapshot was taken of.
	From string `json:"from"`

	// What restoring it needs, unchanged: a restore into anything else is refused.
	Image  string `json:"image"`  // name@version: the read-only root the disk lies over
	Kernel string `json:"kernel"` // the kernel's name
	Agent  string `json:"agent"`  // the guest agent's build (its initramfs's name)
	VMM    string `json:"vmm"`    // the driver's name
	Accel  string `json:"accel"`

	VCPU      int   `json:"vcpu"`
	MemoryMiB int   `json:"memory_mib"`
	DiskBytes int64 `json:"disk_bytes"`
	NAT       bool  `json:"nat"`
	// Spec is the saved VM's resolved spec (config.VMSpec), copied into its clones' records.
	Spec json.RawMessage `json:"spec,omitempty"`

	// The saved guest's identity, which a clone replaces before it runs anything.
	Hostname string `json:"hostname"`
	MAC      string `json:"mac,omitempty"` // "" when the guest had no network device
}

// Info is a snapshot found on disk.
type Info struct {
	Meta
	Dir string // the snapshot's directory
	// Bytes is the space its files take on the host (allocated blocks, not apparent size).
	Bytes int64
}

// Machine is the directory of the VMM's files (vmm.ReadSnapshot reads it).
func (i Info) Machine() string { return filepath.Join(i.Dir, MachineDir) }

// Disk is the saved writable disk, which each clone copies.
func (i Info) Disk() string { return filepath.Join(i.Dir, DiskFile) }

// ValidName checks the name of a user snapshot: a DNS label, like a VM's name, and not
// starting with "boot-" (boot snapshots' names).
func ValidName(name string) error {
	if err := names.Validate(name); err != nil {
		return fmt.Errorf("snapshot name: %s", strings.TrimPrefix(err.Error(), "VM name "))
	}
	if strings.HasPrefix(name, bootPrefix) {
		return fmt.Errorf("snapshot name %q: names starting with %q are banger's boot snapshots", name, bootPrefix)
	}
	return nil
}

// bootPrefix starts the names of boot snapshots.
const bootPrefix = "boot-"

// ParseMeta reads a description and checks it: known fields only, a valid name for its kind,
// a kind, the artifacts it needs named, a sane shape.
func ParseMeta(b []byte) (Meta, error) {
	if len(b) > maxMeta {
		return Meta{}, fmt.Errorf("snapshot description is %d bytes, more than %d", len(b), maxMeta)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Meta
	if err := dec.Decode(&m); err != nil {
		return Meta{}, fmt.Errorf("snapshot description: %w", err)
	}
	if dec.More() {
		return Meta{}, errors.New("snapshot description: data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return Meta{}, fmt.Errorf("snapshot description: %w", err)
	}
	return m, nil
}

// Validate checks what ParseMeta promises.
func (m Meta) Validate() error {
	switch m.Kind {
	case Boot:
		if m.Name != BootName(m.Key) || len(m.Key) != keyLen {
			return fmt.Errorf("boot snapshot %q: its name does not follow from its key %q", m.Name, m.Key)
		}
	case User:
		if err := ValidName(m.Name); err != nil {
			return err
		}
	default:
		return fmt.Errorf("snapshot %q: unknown kind %q", m.Name, m.Kind)
	}
	switch {
	case m.Image == "" || m.Kernel == "" || m.Agent == "" || m.VMM == "":
		return fmt.Errorf("snapshot %q: it does not name its image, kernel, agent and VMM", m.Name)
	case m.VCPU < 1 || m.VCPU > 1024:
		return fmt.Errorf("snapshot %q: %d vCPUs", m.Name, m.VCPU)
	case m.MemoryMiB < 1 || m.MemoryMiB > 16<<20:
		return fmt.Errorf("snapshot %q: %d MiB of memory", m.Name, m.MemoryMiB)
	case m.DiskBytes < 1:
		return fmt.Errorf("snapshot %q: a disk of %d bytes", m.Name, m.DiskBytes)
	case m.From != "" && names.Validate(m.From) != nil:
		return fmt.Errorf("snapshot %q: it names an invalid VM %q", m.Name, m.From)
	case names.Validate(m.Hostname) != nil:
		return fmt.Errorf("snapshot %q: its guest's hostname %q is not a DNS label", m.Name, m.Hostname)
	case len(m.Spec) > 16<<10:
		return fmt.Errorf("snapshot %q: a spec of %d bytes", m.Name, len(m.Spec))
	}
	for _, s := range []string{m.Image, m.Kernel, m.Agent, m.VMM, m.Accel, m.MAC} {
		if len(s) > 256 || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("snapshot %q: a field holds control characters or is too long", m.Name)
		}
	}
	return nil
}
