package api

import "time"

// Snapshot kinds (Snapshot.Kind).
const (
	// SnapshotBoot is a boot snapshot: a freshly booted, settled guest that warm starts
	// restore from. banger makes and removes them.
	SnapshotBoot = "boot"
	// SnapshotUser is a snapshot taken with vm snapshot; it lives until removed.
	SnapshotUser = "user"
)

// Snapshot is a saved guest (memory, devices and a copy of its disk) as the API shows it.
type Snapshot struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"` // SnapshotBoot or SnapshotUser
	Created time.Time `json:"created"`
	// From is the VM the snapshot was taken of.
	From string `json:"from,omitempty"`
	// What a VM restored from it runs: they cannot be changed.
	Image     string `json:"image"` // name@version
	Kernel    string `json:"kernel"`
	VMM       string `json:"vmm"`
	VCPU      int    `json:"vcpu"`
	MemoryMiB int    `json:"memory_mib"`
	DiskBytes int64  `json:"disk_bytes"`
	// SizeBytes is the space its files take on the host (allocated blocks).
	SizeBytes int64 `json:"size_bytes"`
	// Spares is how many spare VMs restored from a boot snapshot the daemon keeps ready
	// (config warm_spares); they are listed nowhere else.
	Spares int `json:"spares,omitempty"`
}

// SnapshotVMRequest is the body of RouteSnapshotVM.
type SnapshotVMRequest struct {
	// Name is the snapshot's name (a DNS label not starting with "boot-"); "": named after
	// the VM and the time.
	Name string `json:"name,omitempty"`
}

// ForkVMRequest is the body of RouteForkVM.
type ForkVMRequest struct {
	// Count is how many clones; 0 means len(Names), or 1 when there are no names.
	Count int `json:"count,omitempty"`
	// Names are the clones' names, Count of them; none: generated names.
	Names []string `json:"names,omitempty"`
}
