// Package vmm defines what banger needs from a virtual machine monitor, as a Driver that
// starts and re-attaches Machines plus small optional capability interfaces (Shutdowner,
// Pauser) that a Machine implements when its VMM can, and the choice of VMM for new VMs
// (Choose). Drivers live in sub-packages (vmm/qemu, vmm/firecracker); nothing above this
// package knows VMM details.
//
// To add a VMM: implement Driver and Machine in a new sub-package, keep its process detached
// (Spawn), persist everything needed to find it again in Record, and register it where the
// daemon chooses drivers.
package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"net"

	"github.com/banger-dev/banger/internal/host"
)

// Config is one VM as the VMM sees it.
type Config struct {
	ID   string // unique, stable id of the VM (used in process and socket names)
	Name string // the VM's name (for logs and process titles)

	// Dir holds the VM's files the driver creates: console log, VMM log.
	Dir string
	// ConsoleLogSize caps the guest console log (console.log, rotated to console.log.1 at
	// the cap); 0 means DefaultConsoleLogSize. The daemon writes it, never the VMM.
	ConsoleLogSize int64
	// RuntimeDir holds the driver's sockets; it is kept short for the 108-byte limit.
	RuntimeDir string

	VCPU      int
	MemoryMiB int
	Accel     host.Accel

	Kernel  string // ELF vmlinux
	Initrd  string // initramfs
	Cmdline string // guest kernel arguments; the driver adds its console settings

	// Disks are attached in order: the guest sees them as vda, vdb, …
	Disks []Disk

	// NIC connects the guest to a tap device on the host; nil means no network device.
	NIC *NIC
	// NetNS is the network namespace (a path such as /run/netns/x) the VMM process runs in,
	// where its tap lives; "" is the caller's own.
	NetNS string
}

// NIC is a virtio-net device backed by a host tap.
type NIC struct {
	Tap string // host tap device name
	MAC string // guest MAC address, e.g. 02:12:34:56:78:9a
}

// Disk is a raw disk image.
type Disk struct {
	Path     string
	ReadOnly bool
}

// Record is what the daemon persists about a running machine so that it can find the
// process again after a restart. Drivers keep their own fields in Extra.
type Record struct {
	Driver    string            `json:"driver"`
	PID       int               `json:"pid"`
	StartTime uint64            `json:"start_time"` // /proc/<pid>/stat field 22: tells a reused pid apart
	Sockets   map[string]string `json:"sockets,omitempty"`
	Console   string            `json:"console,omitempty"` // guest console log
	// ConsoleMax caps each console log file (see ConsoleLog); 0 means the default.
	ConsoleMax int64           `json:"console_max,omitempty"`
	Log        string          `json:"log,omitempty"` // the VMM's own log
	Extra      json.RawMessage `json:"extra,omitempty"`
}

// ErrGone is returned by Attach when the recorded process no longer runs.
var ErrGone = errors.New("VMM process is gone")

// Driver starts machines with one VMM.
type Driver interface {
	// Name is the driver's config name ("qemu", "firecracker").
	Name() string

	// Start launches a VMM for cfg and returns once the process runs and its sockets exist;
	// it does not wait for the guest. The process is detached (own session) so it outlives
	// the daemon. If Start fails, nothing it started is left running.
	Start(ctx context.Context, cfg Config) (Machine, error)

	// Attach finds a machine again from its Record after a daemon restart and takes over
	// copying its guest console into the capped console log. It returns an error wrapping
	// ErrGone if the recorded process is not running any more (or the pid now belongs to
	// another process).
	Attach(rec Record) (Machine, error)
}

// Machine is a running VMM process.
type Machine interface {
	// Record describes the machine for persistence.
	Record() Record

	// DialAgent opens the byte stream to the guest agent (a virtio-serial port or a vsock
	// connection). Only one stream may be open at a time.
	DialAgent(ctx context.Context) (net.Conn, error)

	// Kill ends the VMM process at once and waits until it is gone.
	Kill() error

	// Done is closed when the VMM process has exited and the guest console it wrote is in
	// the console log.
	Done() <-chan struct{}
}

// Shutdowner is a Machine that can ask its guest to shut down through virtual hardware
// (ACPI power button, Ctrl-Alt-Del). It returns once the request is delivered.
type Shutdowner interface {
	Shutdown(ctx context.Context) error
}

// Pauser is a Machine whose vCPUs can be paused and resumed.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}
