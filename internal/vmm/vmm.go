// Package vmm defines what banger needs from a virtual machine monitor, as a Driver that
// starts and re-attaches Machines plus small optional capability interfaces (Shutdowner,
// Pauser, Snapshotter; Restorer on the Driver) that a Machine implements when its VMM can,
// the Snapshot that describes a saved machine, and the choice of VMM for new VMs (Choose). Drivers live in sub-packages (vmm/qemu, vmm/firecracker); nothing above this
// package knows VMM details.
//
// To add a VMM: implement Driver and Machine in a new sub-package, keep its process detached
// (Spawn), persist everything needed to find it again in Record, run vmmtest.Conformance
// against it, and add it to the daemon's list of drivers (in order of preference).
package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"

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
	// ShareMemory keeps the guest's RAM in shared memory where the VMM needs that for cheap
	// clones (QEMU: a memfd), so that a snapshot of the machine saves the RAM as a file that
	// every machine restored from it maps copy-on-write: N clones hold only the pages each
	// wrote, not N copies. Without it (and for a machine restored from a snapshot, whose RAM
	// is a private mapping) QEMU's snapshot gets there through a template QEMU that receives
	// the guest's RAM over a socket: slower to save, the same to restore. Its cost under QEMU:
	// the guest's RAM gets no transparent huge pages. Drivers whose snapshots always save RAM
	// as a file ignore it.
	ShareMemory bool

	Kernel  string // ELF vmlinux
	Initrd  string // initramfs
	Cmdline string // guest kernel arguments; the driver adds its console settings

	// Disks are attached in order: the guest sees them as vda, vdb, …
	Disks []Disk

	// NIC connects the guest to a tap device on the host; nil means no network device.
	NIC *NIC
	// NetNS is the network namespace (a path such as /run/netns/x) where the tap lives; "" is
	// the caller's own. A driver that opens the tap by name (NIC.Tap) runs its VMM process
	// there; one that is handed the tap's queue (NIC.File) needs no namespace.
	NetNS string
}

// NIC is a virtio-net device backed by a host tap.
type NIC struct {
	Tap string // host tap device name
	MAC string // guest MAC address, e.g. 02:12:34:56:78:9a
	// File, when set, is an open queue of the tap (/dev/net/tun attached to it with
	// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR): a driver whose VMM takes its tap by file descriptor
	// (QEMU) passes it to the VMM process instead of having the VMM open the tap by name, so
	// that the VMM needs neither access to /dev/net/tun nor the tap's namespace. The caller
	// owns it and closes it once Start or Restore returned, whatever they returned; the driver
	// never closes it, and keeps no copy of it in the caller's process. Drivers that open their
	// tap by name (Firecracker) ignore it and use Tap in Config.NetNS.
	File *os.File
}

// TapByName is a Driver whose VMM opens its tap by name (NIC.Tap, in Config.NetNS) and never
// takes NIC.File (Firecracker). A tap admits one queue at a time (banger's taps are not
// multi-queue: a second attach fails with EBUSY), so the caller closes its queue before
// Start or Restore of such a driver and passes no File.
type TapByName interface {
	Driver
	OpensTapByName()
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

// Probe is what a driver found out about running VMs on this host (Driver.Probe); Choose
// decides between drivers on their probes.
type Probe struct {
	Driver string // the driver's name (Driver.Name)
	Title  string // how users call the VMM in messages ("QEMU", "Firecracker")
	// Found describes what the driver would run, for messages ("firecracker 1.14.2 at
	// /usr/local/bin/firecracker"); set when Err is nil.
	Found string
	// Err says why the driver cannot run VMs here and what to do about it (binary missing,
	// unsupported version); nil when it can, as far as the driver itself goes.
	Err error
	// NeedsKVM says that the VMM runs guests only under KVM that runs real guests (it has no
	// software emulation); Choose skips it on hosts without (host.Root.DetectAccel).
	NeedsKVM bool
}

// Driver starts machines with one VMM. A driver reads its settings (binary, jailer, …) afresh
// in Probe and Start, so that edits of config.toml apply without a daemon restart.
//
// The contracts below are checked for every driver by vmmtest.Conformance.
type Driver interface {
	// Name is the driver's config name ("qemu", "firecracker"). It is constant, and it is
	// the Driver field of every Record the driver makes.
	Name() string

	// Probe says whether this driver can run VMs here, with the settings in force now. It
	// runs at most the VMM binary's version query (bounded by ctx), changes nothing on the
	// host, and does not look at KVM (Probe.NeedsKVM says whether the VMM needs it).
	Probe(ctx context.Context) Probe

	// Start launches a VMM for cfg and returns once the process runs and its sockets exist;
	// it does not wait for the guest. The process is detached (own session) so it outlives
	// the daemon. Start returns within the driver's start bound (15 seconds at most) or
	// when ctx is done, whichever is first.
	//
	// If Start fails, nothing it started is left: no process, no socket in cfg.RuntimeDir,
	// no jail. Files in cfg.Dir (the VMM's log, the console log) stay, to say why.
	Start(ctx context.Context, cfg Config) (Machine, error)

	// Attach finds a machine again from its Record after a daemon restart and takes over
	// copying its guest console into the capped console log; it returns within a few seconds
	// (a console that does not answer is given up, not waited for). It returns an error
	// wrapping ErrGone if the recorded process is not running any more or the pid now
	// belongs to another process (StartTime differs); then it also removes what the gone
	// process left behind (its sockets, Firecracker's jail), so that ErrGone leaves nothing
	// to clean up. A Record of another driver is an error that does not wrap ErrGone.
	Attach(rec Record) (Machine, error)
}

// Machine is a running VMM process.
type Machine interface {
	// Record describes the machine for persistence; it changes nothing.
	Record() Record

	// DialAgent opens the byte stream to the guest agent (a virtio-serial port or a vsock
	// connection), bounded by ctx. Only one stream may be open at a time. On a machine whose
	// process is gone it returns an error, promptly.
	DialAgent(ctx context.Context) (net.Conn, error)

	// Kill ends the VMM process at once (SIGKILL) and waits until it is gone, for at most
	// ten seconds (then it returns an error saying so). Once the process is gone it removes
	// the machine's sockets (and Firecracker's jail): Kill leaves nothing of the machine
	// but its files in Config.Dir. Kill is idempotent: on a machine that already exited or
	// was killed it cleans up what is left and returns nil.
	Kill() error

	// Done is closed when the VMM process has exited and the guest console it wrote is in
	// the console log (a console that goes on after the exit is cut after a few seconds).
	Done() <-chan struct{}
}

// Shutdowner is a Machine that can ask its guest to shut down through virtual hardware
// (ACPI power button, Ctrl-Alt-Del). Shutdown returns once the VMM accepted the request,
// bounded by ctx; whether and when the guest obeys is the caller's to wait for. On a machine
// whose process is gone it returns an error, promptly.
type Shutdowner interface {
	Shutdown(ctx context.Context) error
}

// Pauser is a Machine whose vCPUs can be paused and resumed. Pause returns once the vCPUs
// stopped, Resume once they run again, both bounded by ctx; pausing a paused machine and
// resuming a running one succeed. On a machine whose process is gone both return an
// error, promptly.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}
