// Package config owns banger's user configuration: the file <config dir>/config.toml, its
// defaults and validation, and the resolution of a VM's size (vCPUs, memory, disk) from
// command-line flags, the configuration and host heuristics, with the provenance of each value.
package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/paths"
)

// VMM selects the virtual machine monitor.
type VMM string

// Accepted VMM values.
const (
	VMMAuto        VMM = "auto"        // pick the best one available on the host
	VMMFirecracker VMM = "firecracker" // always use Firecracker
	VMMQEMU        VMM = "qemu"        // always use QEMU
)

// Built-in defaults.
const (
	DefaultImageName   = "debian-bookworm"
	DefaultKernel      = "debian-6.1"
	DefaultBootTimeout = 3 * time.Minute
	// DefaultWarmSpares and MaxWarmSpares bound warm_spares.
	DefaultWarmSpares = 1
	MaxWarmSpares     = 8
	// DefaultConsoleLogSize, MinConsoleLogSize and MaxConsoleLogSize bound console_log_size.
	DefaultConsoleLogSize = 4 * bytesize.MiB
	MinConsoleLogSize     = 64 * bytesize.KiB
	MaxConsoleLogSize     = 1 * bytesize.GiB
	DefaultSSHKeyName     = "id_ed25519" // inside paths.Layout.SSHDir()
	DefaultJailerDir      = "jailer"     // inside the state dir: the default jailer_chroot_base
	DefaultBridgeName     = "banger0"
	DefaultBridgeCIDR     = "172.16.0.0/24"
	DefaultDNSPort        = 53530
	// DefaultHelperSocket is where banger's root helper listens (its systemd socket unit).
	DefaultHelperSocket = "/run/banger/helper.sock"
)

// Config is the effective configuration: built-in defaults overlaid with config.toml.
// The field comments name each TOML key, its type and its default.
type Config struct {
	// Path is the file the configuration was read from, or would have been read from had it
	// existed. Errors about configured values name it.
	Path string

	// DefaultImageName is the image a new VM boots when none is given.
	// Key default_image_name, string. Default "debian-bookworm".
	DefaultImageName string

	// DefaultKernel is the kernel a new VM boots when none is given.
	// Key default_kernel, string. Default "debian-6.1".
	DefaultKernel string

	// SSHKeyPath is the private key banger uses to reach its VMs; the public key is the same
	// path plus ".pub". Key ssh_key_path, string path; a leading "~/" means $HOME and the
	// result must be absolute ("~user/" is not supported).
	// Default <state dir>/ssh/id_ed25519.
	SSHKeyPath string

	// FirecrackerBin is the Firecracker binary. Key firecracker_bin, string: an absolute path
	// (a leading "~/" is expanded) or a bare command name looked up in $PATH.
	// Default "" (look up "firecracker" in $PATH).
	FirecrackerBin string

	// JailerEnabled says whether Firecracker runs through its jailer (a chroot per VM, an
	// unprivileged uid and gid). Key jailer_enabled, boolean. Default unset (nil): jail when a
	// jailer binary is found, run unjailed otherwise (`banger doctor` warns); true makes a
	// missing jailer an error, false never jails.
	JailerEnabled *bool

	// JailerBin is the Firecracker jailer binary. Key jailer_bin, string: an absolute path
	// (a leading "~/" is expanded) or a bare command name looked up in $PATH. Default ""
	// (look up "jailer" in $PATH, then next to the Firecracker binary).
	JailerBin string

	// JailerChrootBase holds the per-VM jails (<base>/firecracker/<VM id>/root). It must be on
	// the filesystem of the state directory: VM disks and logs are hard-linked into the jails.
	// Key jailer_chroot_base, string absolute path ("~/" expanded).
	// Default <state dir>/jailer.
	JailerChrootBase string

	// JailerUID and JailerGID are the uid and gid jailed Firecracker processes run as.
	// Keys jailer_uid and jailer_gid, integers from 1 to 2147483647 (0, root, would defeat the
	// jailer). Default 0 (unset): each VM runs under its own otherwise unused id from 900000
	// on, so that one compromised VMM cannot reach another VM's process or disk; set them to
	// run every VM under one dedicated account instead.
	JailerUID int
	JailerGID int

	// VMM selects the virtual machine monitor. Key vmm, one of "auto", "firecracker", "qemu".
	// Default "auto": Firecracker when its binary is found at a supported version and KVM
	// runs real guests, QEMU otherwise.
	VMM VMM

	// QEMUBin is the QEMU system emulator binary. Key qemu_bin, string: an absolute path
	// (a leading "~/" is expanded) or a bare command name looked up in $PATH.
	// Default "" (the VMM driver picks the binary for the host architecture).
	QEMUBin string

	// DebianMirror is the Debian archive used to build images, without a trailing slash.
	// Key debian_mirror, string http:// or https:// URL. Default "" (the image builder's own).
	DebianMirror string

	// BootTimeout is how long to wait for a VM's agent to answer after starting it.
	// Key boot_timeout, Go duration string such as "3m" or "90s", > 0. Default 3m.
	BootTimeout time.Duration

	// WarmStart restores new VMs from the boot snapshot of their combination (image version,
	// kernel, agent, VMM, size) when there is one, and makes one after a cold boot when there
	// is not. Key warm_start, boolean. Default true.
	WarmStart bool

	// WarmSpares is how many VMs of the latest warm-started combination the daemon keeps
	// restored ahead of time, identity renewed and idle, so that the next VM of that
	// combination is one of them, handed over with its new name, rather than a restore: a
	// spare costs the memory of an idle restored VM and one address. Spares are never listed,
	// and are deleted when their boot snapshot goes, when the daemon stops and when it starts
	// after a crash. Key warm_spares, integer 0-8 (0 keeps none). Default 1; no effect with
	// warm_start = false.
	WarmSpares int

	// ConsoleLogSize caps each VM's guest console log: console.log is renamed to
	// console.log.1 (replacing it) when it would grow past the cap, so a guest's console
	// takes at most twice this on disk. Key console_log_size, size string from "64K" to "1G".
	// Default 4M.
	ConsoleLogSize int64

	// BridgeName is the host bridge every VM's tap joins. Key bridge_name, string of 1-15
	// characters. Default "banger0".
	BridgeName string

	// BridgeCIDR is the guests' IPv4 subnet; the host side of the bridge is its first address
	// (the guests' gateway and DNS server). Key bridge_cidr, string such as "172.16.0.0/24",
	// a prefix between /16 and /29. Default "172.16.0.0/24".
	BridgeCIDR netip.Prefix

	// NetworkNamespace puts guest networking — bridge, taps, NAT, the DNS server and the VMM
	// processes — in a network namespace instead of the daemon's own: a name under /run/netns
	// or a path. It must exist (`ip netns add NAME`). Key network_namespace, string. Default ""
	// (the daemon's namespace). Tests and CI use it to keep guest traffic off the host.
	NetworkNamespace string

	// DNSUpstreams are the resolvers banger's DNS server forwards non-.vm names to. Key
	// dns_upstreams, array of "ip" or "ip:port" strings. Default: the host's resolvers from
	// /etc/resolv.conf (resolved's own upstreams where resolv.conf names only its stub).
	DNSUpstreams []string

	// DNSPort is the loopback port where the host can query banger's DNS server
	// (127.0.0.1:PORT); guests use port 53 on the bridge. Key dns_port, integer 1-65535.
	// Default 53530.
	DNSPort int

	// HostPortsOpenToGuests are the host's TCP and UDP ports guests may connect to, on any of
	// the host's addresses, besides banger's DNS server (port 53 on the bridge address, always
	// open). Every other connection from a guest to the host is dropped. Key
	// host_ports_open_to_guests, array of integers 1-65535. Default: none.
	HostPortsOpenToGuests []uint16

	// HelperSocket is the unix socket of banger's root helper, which does the host side of
	// guest networking for a daemon that does not run as root. Key helper_socket, absolute
	// path of at most paths.MaxSocketPathLen bytes. Default "/run/banger/helper.sock".
	HelperSocket string

	// VMDefaults size new VMs when no flag says otherwise. Table [vm_defaults].
	VMDefaults VMDefaults

	// FileSync lists host files and directories copied into every new VM when it is created.
	// Array of tables [[file_sync]] with keys host (path on the host; "~/" is $HOME), guest (a
	// path under "~/" or "/root/" in the guest) and mode (optional octal string for the files,
	// default "0600"). A missing host path is warned about and skipped; symlinks inside a
	// synced directory are skipped with a warning, never followed. Default: none.
	FileSync []FileSync
}

// FileSync is one [[file_sync]] entry, validated: Host absolute, Guest absolute under /root.
type FileSync struct {
	Host  string
	Guest string
	Mode  os.FileMode // 0: the default, 0600 for files
}

// VMDefaults are the [vm_defaults] table. A zero field is unset: ResolveVMSpec then falls back
// to a host heuristic. Load rejects explicit zero or invalid values.
type VMDefaults struct {
	// VCPU is the number of virtual CPUs. Key vcpu, integer ≥ 1.
	// Default: host CPUs / 4, between 1 and 4.
	VCPU int

	// MemoryMiB is the guest RAM in MiB. Key memory_mib, integer ≥ 512.
	// Default: host RAM / 8, between 512 MiB and 8 GiB.
	MemoryMiB int

	// DiskBytes is the size of the VM's own writable disk. Key disk_size, a size string such
	// as "8G" or "512M" (binary units, see package bytesize) or an integer number of MiB;
	// at least 1 GiB. Default 8 GiB.
	DiskBytes int64
}

// Floors: the smallest VM banger will create.
const (
	MinVCPU      = 1
	MinMemoryMiB = 512
	MinDiskBytes = 1 * bytesize.GiB
)

// Default returns the built-in configuration for layout l, as if config.toml were empty.
func Default(l paths.Layout) Config {
	return Config{
		Path:             l.ConfigFile(),
		DefaultImageName: DefaultImageName,
		DefaultKernel:    DefaultKernel,
		SSHKeyPath:       filepath.Join(l.SSHDir(), DefaultSSHKeyName),
		JailerChrootBase: filepath.Join(l.StateDir, DefaultJailerDir),
		VMM:              VMMAuto,
		BootTimeout:      DefaultBootTimeout,
		ConsoleLogSize:   DefaultConsoleLogSize,
		WarmStart:        true,
		WarmSpares:       DefaultWarmSpares,
		BridgeName:       DefaultBridgeName,
		BridgeCIDR:       netip.MustParsePrefix(DefaultBridgeCIDR),
		DNSPort:          DefaultDNSPort,
		HelperSocket:     DefaultHelperSocket,
	}
}
