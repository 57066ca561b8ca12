package doctor

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/peercred"
	"github.com/banger-dev/banger/internal/roothelper"
	"github.com/banger-dev/banger/internal/userns"
	"github.com/banger-dev/banger/internal/version"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

var testCLI = version.Info{Version: "v1.4.0", Commit: "0123456789abcdef", Date: "2026-01-02T03:04:05Z"}

func testLayout() paths.Layout {
	return paths.Layout{
		Home:      "/home/dev",
		UID:       0,
		ConfigDir: "/home/dev/.config/banger",
		StateDir:  "/home/dev/.local/state/banger",
		CacheDir:  "/home/dev/.cache/banger",
		Socket:    "/run/banger/bangerd.sock",
	}
}

// healthy is a production host as banger wants it: hardware KVM, Firecracker 1.14.2 with its
// jailer, every tool, the daemon running the same build, resolved routing .vm, and the 6.1+
// boot-latency settings made.
func healthy() Facts {
	l := testLayout()
	cfg := config.Default(l)
	kvm := host.AccelChoice{Accel: host.KVM, Reason: "/dev/kvm is usable and backed by kvm_intel (hardware virtualization)"}
	tools := map[string]Tool{
		"mkfs.ext4":   {Path: "/usr/sbin/mkfs.ext4", Version: "1.47.0"},
		"mmdebstrap":  {Path: "/usr/bin/mmdebstrap", Version: "1.3.5"},
		"debootstrap": {Path: "/usr/sbin/debootstrap", Version: "1.0.128"},
		"ssh":         {Path: "/usr/bin/ssh", Version: "OpenSSH_9.2p1"},
		"git":         {Path: "/usr/bin/git", Version: "2.39.5"},
		"depmod":      {Path: "/usr/sbin/depmod", Version: "30"},
	}
	f := Facts{
		GOARCH: "amd64", KernelRelease: "6.1.0-28-amd64", UID: 0, CLI: testCLI,
		Layout: l, Config: cfg, ConfigExists: true,
		Host:        config.HostFacts{CPUs: 16, MemoryBytes: 64 << 30},
		KVM:         KVM{Exists: true, Modules: []string{"kvm_intel"}, CPUVirt: true, Accel: kvm},
		Firecracker: Firecracker{Info: firecracker.Info{Binary: "/usr/local/bin/firecracker", Version: firecracker.Version{Major: 1, Minor: 14, Patch: 2}}},
		Jailer: Jailer{Status: firecracker.JailerStatus{Enabled: true, Binary: "/usr/local/bin/jailer", Version: firecracker.Version{Major: 1, Minor: 14, Patch: 2},
			Reason: "jailer 1.14.2 at /usr/local/bin/jailer: each VM runs in a chroot under /home/dev/.local/state/banger/jailer as an unprivileged uid"}},
		QEMU:          QEMU{Binary: "/usr/bin/qemu-system-x86_64", Version: "7.2.22", Microvm: true},
		Tools:         tools,
		DebianKeyring: true,
		Subordinate: Subordinate{User: "root", NewUIDMap: Tool{Path: "/usr/bin/newuidmap"}, NewGIDMap: Tool{Path: "/usr/bin/newgidmap"},
			Free: userns.Range{Start: 100000, Count: 65536}},
		Tun:      Tun{Exists: true, CharDev: true, Required: true},
		Bridge:   Bridge{Name: "banger0", Module: "loaded", Exists: true, Type: "bridge"},
		NFTables: NFTables{Filter: hostnet.FilterState{Present: true, Guests: 3, NAT: []netip.Addr{netip.MustParseAddr("172.16.0.2"), netip.MustParseAddr("172.16.0.4")}, Uplinks: []string{"eth0"}}},
		Disk:     Disk{Path: l.StateDir, Free: 120 << 30, Total: 500 << 30},
		Daemon: Daemon{Socket: l.Socket, Running: true, SocketMode: 0o600, SocketUID: 0,
			Version: api.Version{Version: testCLI.Version, Commit: testCLI.Commit, Date: testCLI.Date, API: "v1", PID: 4242, StateDir: l.StateDir}},
		Image:     Artifact{Name: "debian-bookworm", Installed: true, Dir: l.StateDir + "/images/debian-bookworm/3f2a9c01", Kind: "recipe", Origin: "debian-bookworm"},
		Kernel:    Artifact{Name: "debian-6.1", Installed: true, Dir: l.StateDir + "/kernels/debian-6.1", Kind: "debian", Origin: "linux-image-cloud-amd64 (bookworm)"},
		SSHConfig: SSHConfig{UserConfig: "/home/dev/.ssh/config", Include: l.ConfigDir + "/ssh_config", Installed: true},
		DNS:       DNS{ResolvedActive: true, Routed: true, Nameservers: []string{"127.0.0.53"}, HostIP: netip.MustParseAddr("172.16.0.1")},
		Cgroup:    Cgroup{V2Root: true, FavorDynmods: true},
		NX:        NX{Param: "never", ITLB: "Not affected"},
	}
	f.VMM.Accel = kvm
	f.VMM.Drivers = vmmDrivers(f, "firecracker 1.14.2 at /usr/local/bin/firecracker", nil)
	return f
}

// vmmDrivers are the probes vmm.Choose decides on, as Gather makes them: Firecracker's (found
// or fcErr), then QEMU's from f.QEMU.
func vmmDrivers(f Facts, fcFound string, fcErr error) []vmm.Probe {
	fc := vmm.Probe{Driver: firecracker.Name, Title: "Firecracker", NeedsKVM: true, Found: fcFound, Err: fcErr}
	return []vmm.Probe{fc, f.QEMU.probe(f.Config)}
}

// pvm is a host like the ones this project is developed on: /dev/kvm backed by PVM (so only
// TCG), no Firecracker, nothing pulled yet, the daemon down.
func pvm() Facts {
	f := healthy()
	f.KernelRelease = "6.18.44-fc-v769"
	f.Host = config.HostFacts{CPUs: 2, MemoryBytes: 24 << 30}
	tcg := host.AccelChoice{Accel: host.TCG, Reason: "/dev/kvm is provided by PVM (nested paravirtual KVM), which cannot run stock guest kernels"}
	f.KVM = KVM{Exists: true, Modules: []string{"kvm_pvm"}, Accel: tcg}
	f.VMM.Accel = tcg
	notFound := errors.New("no firecracker binary in $PATH; get a release (1.8 or newer within 1.x) from https://github.com/firecracker-microvm/firecracker/releases and put it in $PATH or set firecracker_bin")
	f.Firecracker = Firecracker{Err: notFound}
	f.VMM.Drivers = vmmDrivers(f, "", notFound)
	f.Jailer = Jailer{Status: firecracker.JailerStatus{Reason: "no jailer found"}}
	f.Bridge = Bridge{Name: "banger0", Module: "loaded"}
	f.NFTables = NFTables{}
	f.Daemon = Daemon{Socket: "/run/banger/bangerd.sock", Binary: "/usr/local/bin/bangerd", Agent: "/usr/local/lib/banger/banger-agent"}
	f.Image.Installed, f.Image.Dir = false, ""
	f.Kernel.Installed, f.Kernel.Dir = false, ""
	f.SSHConfig.Installed = false
	f.DNS = DNS{Nameservers: []string{"10.255.255.53"}, HostIP: netip.MustParseAddr("172.16.0.1")}
	f.Cgroup = Cgroup{}
	f.NX = NX{Param: "N", ITLB: "Not affected"}
	f.ConfigExists = false
	return f
}

// unprivileged is an ordinary user's host where everything is in place: uid 1000 in the
// groups banger and kvm (and this login has them), banger's root helper of the same build
// answering, subordinate ids and newuidmap, hardware KVM with QEMU (Firecracker does not run
// without root yet), the daemon running as the user.
func unprivileged() Facts {
	f := healthy()
	f.UID = 1000
	f.Layout.UID = 1000
	f.Layout.Socket = "/run/user/1000/banger/bangerd.sock"
	notFound := errors.New("no firecracker binary in $PATH; get a release (1.8 or newer within 1.x) from https://github.com/firecracker-microvm/firecracker/releases and put it in $PATH or set firecracker_bin")
	f.Firecracker = Firecracker{Err: notFound}
	f.VMM.Drivers = vmmDrivers(f, "", notFound)
	f.Jailer = Jailer{Status: firecracker.JailerStatus{Reason: "no jailer found"}}
	f.Subordinate.User = "dev"
	f.Subordinate.UIDs = []userns.Range{{Start: 100000, Count: 65536}}
	f.Subordinate.GIDs = []userns.Range{{Start: 100000, Count: 65536}}
	f.Subordinate.Free = userns.Range{Start: 165536, Count: 65536}
	f.Groups = Groups{User: "dev", Process: []int{1000, 993, 994},
		Banger: Group{Name: "banger", GID: 993, Member: true, Needed: true},
		KVM:    Group{Name: "kvm", GID: 994, Member: true, Needed: true}, KVMExists: true, KVMMode: os.ModeDevice | os.ModeCharDevice | 0o660}
	f.Helper = Helper{Socket: config.DefaultHelperSocket, Version: testCLI.String(), Systemd: true,
		Unit: "/usr/local/lib/systemd/system/banger-helper.socket", Binary: "/usr/local/lib/banger/banger-helper", Config: "/etc/banger/helper.toml"}
	f.NFTables = NFTables{Err: errors.New("netlink receive: operation not permitted")}
	f.Daemon.Socket = f.Layout.Socket
	f.Daemon.SocketUID = 1000
	return f
}

// dialErr is the error roothelper's client returns when connect(2) fails with errno.
func dialErr(errno syscall.Errno) error {
	op := &net.OpError{Op: "dial", Net: "unix", Addr: &net.UnixAddr{Name: config.DefaultHelperSocket, Net: "unix"}, Err: os.NewSyscallError("connect", errno)}
	return fmt.Errorf("banger's root helper at %s: %w (is banger-helper.socket running? `systemctl status banger-helper.socket`)", config.DefaultHelperSocket, op)
}

func TestGolden(t *testing.T) {
	notFound := errors.New("not found")
	oldFC := errors.New("/opt/fc/firecracker: firecracker 1.7.0 is too old: banger needs 1.8 or newer within 1.x (guests find their devices through ACPI, which Firecracker has from 1.8); get a newer release from https://github.com/firecracker-microvm/firecracker/releases")
	cases := []struct {
		name  string
		facts func() Facts
	}{
		{"healthy-firecracker", healthy},
		{"pvm-tcg-fresh", pvm},
		{"arm64", func() Facts {
			f := healthy()
			f.GOARCH = "arm64"
			return f
		}},
		{"kvm-without-firecracker", func() Facts {
			// Hardware KVM but no Firecracker: QEMU with KVM, with a warning and the way to
			// get Firecracker; the jailer does not matter then.
			f := healthy()
			err := errors.New("no firecracker binary in $PATH; get a release (1.8 or newer within 1.x) from https://github.com/firecracker-microvm/firecracker/releases and put it in $PATH or set firecracker_bin")
			f.Firecracker = Firecracker{Err: err}
			f.VMM.Drivers = vmmDrivers(f, "", err)
			f.Jailer = Jailer{Status: firecracker.JailerStatus{Reason: "no jailer found"}}
			return f
		}},
		{"firecracker-too-old-and-required", func() Facts {
			// vmm = "firecracker" with a 1.7.0 binary: the choice fails, and so does the
			// Firecracker check.
			f := healthy()
			f.Config.VMM = config.VMMFirecracker
			f.Firecracker = Firecracker{Info: firecracker.Info{Binary: "/opt/fc/firecracker", Version: firecracker.Version{Major: 1, Minor: 7}}, Err: oldFC}
			f.VMM.Drivers = vmmDrivers(f, "", oldFC)
			return f
		}},
		{"jailer-other-release", func() Facts {
			f := healthy()
			f.Jailer.Status.Version = firecracker.Version{Major: 1, Minor: 7}
			f.Jailer.Status.Warning = "jailer 1.7.0 and firecracker 1.14.2 differ; Firecracker supports a jailer of the same release only (v1.7.0's jailer was seen to work with firecracker 1.14.2)"
			return f
		}},
		{"jailer-missing", func() Facts {
			f := healthy()
			f.Jailer = Jailer{Status: firecracker.JailerStatus{Reason: "no jailer found (no jailer binary in PATH or next to the firecracker binary): Firecracker runs unjailed, as root; put the release's jailer in PATH or set jailer_bin for a chroot and an unprivileged uid"}}
			return f
		}},
		{"jailer-required-but-missing", func() Facts {
			f := healthy()
			on := true
			f.Config.JailerEnabled = &on
			f.Jailer = Jailer{Status: firecracker.JailerStatus{Reason: "no jailer binary in PATH or next to the firecracker binary"},
				Err: errors.New("firecracker: the jailer is required (jailer_enabled = true or jailer_bin set) but no jailer binary in PATH or next to the firecracker binary; install the jailer from the Firecracker release (https://github.com/firecracker-microvm/firecracker/releases) or set jailer_enabled = false")}
			return f
		}},
		{"broken-host", func() Facts {
			// Not root, nothing installed, no tun, no bridging, nftables refusing, a full disk,
			// a config that does not load.
			f := pvm()
			f.UID = 1000
			f.ConfigErr = errors.New("/home/dev/.config/banger/config.toml:3: vm_defaults.vcpu: want an integer, got a string")
			f.QEMU = QEMU{Err: errors.New("qemu-system-x86_64 not found")}
			f.VMM.Drivers = vmmDrivers(f, "", f.Firecracker.Err)
			for _, name := range []string{"mkfs.ext4", "mmdebstrap", "debootstrap", "ssh", "git", "depmod"} {
				f.Tools[name] = Tool{Err: notFound}
			}
			f.DebianKeyring = false
			f.Subordinate = Subordinate{User: "dev", NewUIDMap: Tool{Err: notFound}, NewGIDMap: Tool{Err: notFound},
				UIDs: []userns.Range{{Start: 100000, Count: 1000}}, Free: userns.Range{Start: 165536, Count: 65536}, AppArmorRestrict: "1"}
			f.Tun = Tun{Required: true}
			f.Bridge = Bridge{Name: "banger0"}
			f.NFTables = NFTables{Err: errors.New("netlink receive: operation not permitted")}
			f.Disk = Disk{Path: "/home/dev", Free: 1 << 30, Total: 20 << 30}
			f.Daemon = Daemon{Socket: "/run/user/1000/banger/bangerd.sock", BinaryErr: errors.New("bangerd not found next to banger or in PATH; reinstall banger (make install)")}
			// make install never ran: no group banger, no helper; /dev/kvm is root's only.
			f.Groups = Groups{User: "dev", Process: []int{1000}, Banger: Group{Name: "banger", GID: -1, Needed: true}, KVM: Group{Name: "kvm", GID: -1}}
			f.Helper = Helper{Socket: config.DefaultHelperSocket, Systemd: true, Config: "/etc/banger/helper.toml", Err: dialErr(syscall.ENOENT)}
			return f
		}},
		{"old-tools-and-qemu", func() Facts {
			f := healthy()
			f.Config.VMM = config.VMMQEMU
			f.QEMU = QEMU{Binary: "/usr/bin/qemu-system-x86_64", Version: "5.2.0", Microvm: true}
			f.Tools["mkfs.ext4"] = Tool{Path: "/sbin/mkfs.ext4", Version: "1.42.9"}
			f.Tools["mmdebstrap"] = Tool{Err: notFound}
			f.DebianKeyring = false
			f.Image.Installed = false
			return f
		}},
		{"daemon-problems", func() Facts {
			f := healthy()
			f.Daemon.SocketMode = 0o666
			return f
		}},
		{"daemon-other-build", func() Facts {
			f := healthy()
			f.Daemon.Version.Commit = "fedcba9876543210"
			return f
		}},
		{"daemon-other-state-dir", func() Facts {
			f := healthy()
			f.Daemon.Version.StateDir = "/srv/banger"
			return f
		}},
		{"vm-defaults-from-config-too-big", func() Facts {
			f := healthy()
			f.Config.VMDefaults = config.VMDefaults{VCPU: 32}
			return f
		}},
		{"vm-defaults-from-config", func() Facts {
			f := healthy()
			f.Config.Path = "/home/dev/.config/banger/config.toml"
			f.Config.VMDefaults = config.VMDefaults{VCPU: 2, MemoryMiB: 4096}
			return f
		}},
		{"unknown-default-image-and-kernel", func() Facts {
			f := healthy()
			f.Image = Artifact{Name: "devbox"}
			f.Kernel = Artifact{Name: "fc-6.1"}
			return f
		}},
		{"oci-default-image-not-pulled", func() Facts {
			f := healthy()
			f.Image = Artifact{Name: "devbox", Kind: "oci", Origin: "registry.example/team/devbox:3"}
			return f
		}},
		{"dns-resolved-not-routed", func() Facts {
			f := healthy()
			f.DNS.Routed = false
			return f
		}},
		{"dns-resolved-before-first-vm", func() Facts {
			f := healthy()
			f.DNS.Routed = false
			f.Bridge.Exists, f.Bridge.Type = false, ""
			return f
		}},
		{"dns-dnsmasq-wrong-port", func() Facts {
			f := healthy()
			f.DNS = DNS{Forwarder: "/etc/dnsmasq.d/banger.conf", ForwarderPort: 5353, HostIP: netip.MustParseAddr("172.16.0.1")}
			return f
		}},
		{"dns-netns", func() Facts {
			f := healthy()
			f.DNS = DNS{NetNS: "banger-ci", HostIP: netip.MustParseAddr("172.16.0.1")}
			return f
		}},
		{"bridge-name-taken", func() Facts {
			f := healthy()
			f.Bridge.Type = "veth"
			return f
		}},
		{"pitfalls-cgroup-v2", func() Facts {
			// A 6.1 host with cgroup v2, favordynmods off, and a CPU not affected by iTLB
			// multihit with the default nx_huge_pages: both Firecracker fixes apply.
			f := healthy()
			f.Cgroup = Cgroup{V2Root: true}
			f.NX = NX{Param: "N", ITLB: "Not affected"}
			return f
		}},
		{"pitfalls-cgroup-v1-affected-cpu", func() Facts {
			// cgroup v1 (no remount possible) and a CPU affected by iTLB multihit: only
			// favordynmods, through the kernel command line.
			f := healthy()
			f.Cgroup = Cgroup{}
			f.NX = NX{Param: "Y", ITLB: "KVM: Mitigation: Split huge pages"}
			return f
		}},
		{"pitfalls-cmdline-and-old-kernel", func() Facts {
			f := healthy()
			f.KernelRelease = "5.10.0-30-amd64"
			f.Cgroup = Cgroup{}
			f.NX = NX{Param: "Y", ITLB: "Not affected"}
			return f
		}},
		{"unprivileged", unprivileged},
		{"unprivileged-helper-missing", func() Facts {
			// make install ran without systemd's units (or not at all): no socket, no unit.
			f := unprivileged()
			f.Helper.Err, f.Helper.Version, f.Helper.Unit = dialErr(syscall.ENOENT), "", ""
			return f
		}},
		{"unprivileged-helper-not-enabled", func() Facts {
			f := unprivileged()
			f.Helper.Err, f.Helper.Version = dialErr(syscall.ENOENT), ""
			return f
		}},
		{"unprivileged-helper-missing-no-systemd", func() Facts {
			f := unprivileged()
			f.Helper.Err, f.Helper.Version, f.Helper.Systemd, f.Helper.Unit = dialErr(syscall.ENOENT), "", false, ""
			return f
		}},
		{"unprivileged-helper-stale-socket", func() Facts {
			f := unprivileged()
			f.Helper.Err, f.Helper.Version = dialErr(syscall.ECONNREFUSED), ""
			return f
		}},
		{"unprivileged-group-not-in-process", func() Facts {
			// usermod -aG banger,kvm dev ran after this login: the databases say yes, this
			// process (and the daemon it starts) has neither, and the helper refuses it.
			f := unprivileged()
			f.Groups.Process = []int{1000}
			f.Helper.Err = fmt.Errorf("banger's root helper, hello: uid 1000 is not in group banger; add the user with `sudo usermod -aG banger USER` and log in again: %w", roothelper.ErrDenied)
			f.Helper.Version = ""
			f.KVM.OpenErr = syscall.EACCES
			f.KVM.Accel = host.AccelChoice{Accel: host.TCG, Reason: "/dev/kvm exists but cannot be opened: permission denied"}
			f.VMM.Accel = f.KVM.Accel
			return f
		}},
		{"unprivileged-not-in-groups", func() Facts {
			f := unprivileged()
			f.Groups.Process = []int{1000}
			f.Groups.Banger.Member, f.Groups.KVM.Member = false, false
			f.Helper.Err, f.Helper.Version = dialErr(syscall.EACCES), ""
			return f
		}},
		{"unprivileged-only-kvm-missing", func() Facts {
			f := unprivileged()
			f.Groups.Process = []int{1000, 993}
			f.Groups.KVM.Member = false
			return f
		}},
		{"unprivileged-no-group", func() Facts {
			// make install never ran: no group banger, no helper.
			f := unprivileged()
			f.Groups.Banger.GID, f.Groups.Banger.Member = -1, false
			f.Groups.Process = []int{1000, 994}
			f.Helper.Err, f.Helper.Version, f.Helper.Unit, f.Helper.Binary = dialErr(syscall.ENOENT), "", "", ""
			return f
		}},
		{"unprivileged-helper-other-network", func() Facts {
			f := unprivileged()
			f.Config.BridgeName = "br-dev"
			f.Helper.Err = fmt.Errorf("hello: %w", failure.New(failure.Invalid, `bridge "br-dev" is not one the helper serves (its configuration /etc/banger/helper.toml lists the bridges)`))
			f.Helper.Version = ""
			return f
		}},
		{"unprivileged-helper-no-namespace", func() Facts {
			f := unprivileged()
			f.Config.NetworkNamespace = "banger-dev"
			f.DNS = DNS{NetNS: "banger-dev", HostIP: netip.MustParseAddr("172.16.0.1")}
			f.Helper.Err = fmt.Errorf("hello: %w", failure.New(failure.NotFound, "network namespace banger-dev does not exist (create it with `ip netns add banger-dev`)"))
			f.Helper.Version = ""
			return f
		}},
		{"unprivileged-helper-other-build", func() Facts {
			f := unprivileged()
			f.Helper.Version = "v1.3.0 (commit fedcba987654, built 2025-11-02T03:04:05Z)"
			return f
		}},
		{"unprivileged-helper-other-protocol", func() Facts {
			// roothelper.Dial refuses a helper of another protocol before hello's build.
			f := unprivileged()
			f.Helper.Err = fmt.Errorf("banger's root helper at %s speaks protocol %d, this banger %d: install the helper of this banger build (make install) and restart it", config.DefaultHelperSocket, 2, roothelper.ProtocolVersion)
			f.Helper.Version = ""
			return f
		}},
		{"unprivileged-helper-not-root", func() Facts {
			f := unprivileged()
			f.Helper.Err = &peercred.UntrustedError{What: "the process serving /run/banger/helper.sock", Problem: "belongs to uid 1001 (eve), not to 0 (root)", UID: 1001, Hint: "banger's root helper runs as root"}
			f.Helper.Version = ""
			return f
		}},
		{"unprivileged-firecracker", func() Facts {
			// vmm = "firecracker" without root: refused until the helper starts the jailer.
			f := unprivileged()
			f.Config.VMM = config.VMMFirecracker
			f.Firecracker = healthy().Firecracker
			f.VMM.Drivers = healthy().VMM.Drivers
			f.Jailer = healthy().Jailer
			return f
		}},
		{"unprivileged-firecracker-helper-jails", func() Facts {
			// vmm = "firecracker" without root, and the root helper starts jails: the
			// driver's probe passed through the helper, and the VMs run in its jails.
			f := unprivileged()
			f.Config.VMM = config.VMMFirecracker
			f.Firecracker = healthy().Firecracker
			f.VMM.Drivers = healthy().VMM.Drivers
			f.Jailer = healthy().Jailer
			f.Helper.Jails = true
			return f
		}},
		{"unprivileged-firecracker-auto", func() Facts {
			// vmm = "auto" with a usable Firecracker: the daemon would pick it, and fail.
			f := unprivileged()
			f.Firecracker = healthy().Firecracker
			f.VMM.Drivers = healthy().VMM.Drivers
			f.Jailer = healthy().Jailer
			return f
		}},
		{"unprivileged-netns", func() Facts {
			// The CI's setup: guests in a network namespace, which an ordinary user cannot
			// enter to look at the bridge or the filter.
			f := unprivileged()
			f.Config.NetworkNamespace = "banger-ci"
			f.DNS = DNS{NetNS: "banger-ci", HostIP: netip.MustParseAddr("172.16.0.1")}
			f.Bridge = Bridge{Name: "banger0", Module: "loaded", ReadErr: errors.New("enter network namespace /run/netns/banger-ci: operation not permitted")}
			f.NFTables = NFTables{Err: errors.New("enter network namespace /run/netns/banger-ci: operation not permitted")}
			return f
		}},
		{"unprivileged-kvm-root-only", func() Facts {
			// No udev: /dev/kvm stayed root:root 0600, so no group helps until it is given
			// to kvm; and no VM has run yet (no bridge).
			f := unprivileged()
			f.Groups.KVM, f.Groups.KVMMode = Group{Name: "kvm", GID: -1}, os.ModeDevice|os.ModeCharDevice|0o600
			f.KVM.OpenErr = syscall.EACCES
			f.KVM.Accel = host.AccelChoice{Accel: host.TCG, Reason: "/dev/kvm is not usable by this user (open /dev/kvm: permission denied); add the user to the kvm group"}
			f.VMM.Accel = f.KVM.Accel
			f.Bridge.Exists, f.Bridge.Type = false, ""
			f.DNS.Routed = false
			return f
		}},
		{"unprivileged-no-subids", func() Facts {
			f := unprivileged()
			f.Subordinate.UIDs, f.Subordinate.GIDs = nil, nil
			return f
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := Check(tc.facts())
			var buf bytes.Buffer
			if err := WriteText(&buf, rs, false); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", tc.name+".golden"), buf.Bytes())
			for _, r := range rs {
				if r.Status != Pass && r.Fix == "" {
					t.Errorf("%s is %s without a fix: %q", r.Check, r.Status, r.Detail)
				}
				if r.Status == Pass && r.Fix != "" {
					t.Errorf("%s passes but has a fix: %q", r.Check, r.Fix)
				}
				if strings.Contains(r.Detail, "\n") || strings.Contains(r.Fix, "\n") {
					t.Errorf("%s: detail or fix spans lines: %q / %q", r.Check, r.Detail, r.Fix)
				}
			}
		})
	}
}

// TestGoldenJSON pins the --json shape.
func TestGoldenJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, Check(pvm())); err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "pvm-tcg-fresh.json"), buf.Bytes())
}

func TestVerdicts(t *testing.T) {
	// The expectations the golden files encode, stated so that a careless -update shows.
	statusOf := func(f Facts, check string) Status {
		for _, r := range Check(f) {
			if r.Check == check {
				return r.Status
			}
		}
		t.Fatalf("no %q check", check)
		return ""
	}
	if rs := Check(healthy()); Failed(rs) || Summarize(rs).Warn != 0 {
		t.Errorf("a healthy host should pass everything, got %+v", Summarize(rs))
	}
	if s := statusOf(pvm(), "kvm"); s != Warn {
		t.Errorf("PVM (TCG only): kvm is %s, want WARN", s)
	}
	if Failed(Check(pvm())) {
		t.Errorf("a fresh PVM host with everything installed should have no FAIL")
	}
	f := healthy()
	f.GOARCH = "arm64"
	if s := statusOf(f, "arch"); s != Fail {
		t.Errorf("arm64: arch is %s, want FAIL", s)
	}
	f = healthy()
	f.Cgroup, f.NX = Cgroup{V2Root: true}, NX{Param: "N", ITLB: "Not affected"}
	if statusOf(f, "favordynmods") != Warn || statusOf(f, "nx_huge_pages") != Warn {
		t.Errorf("6.1 KVM host without the fixes should warn on favordynmods and nx_huge_pages")
	}
	if rs := Check(unprivileged()); Failed(rs) || Summarize(rs).Warn != 0 {
		t.Errorf("an ordinary user with everything in place should pass everything, got %+v", Summarize(rs))
	}
	for name, s := range map[string]Status{"user": Pass, "helper": Pass, "groups": Pass} {
		if got := statusOf(healthy(), name); got != s {
			t.Errorf("root: %s is %s, want %s", name, got, s)
		}
	}
	f = unprivileged()
	f.Helper.Err = dialErr(syscall.ENOENT)
	if statusOf(f, "helper") != Fail || statusOf(f, "user") != Fail {
		t.Errorf("no helper socket: helper and user should fail")
	}
	f = unprivileged()
	f.Groups.Process = []int{1000, 994}
	if statusOf(f, "groups") != Fail || statusOf(f, "user") != Fail {
		t.Errorf("a process without group banger: groups and user should fail")
	}
	f = unprivileged()
	f.Groups.Process = []int{1000, 993}
	if statusOf(f, "groups") != Warn || statusOf(f, "user") != Warn {
		t.Errorf("a process without group kvm only: groups and user should warn")
	}
	f = unprivileged()
	f.Helper.Version = "v0.9.0 (commit 0, built unknown)"
	if statusOf(f, "helper") != Warn {
		t.Errorf("a helper of another build should warn")
	}
	f = unprivileged()
	f.Config.VMM = config.VMMFirecracker
	if statusOf(f, "vmm") != Fail || statusOf(f, "user") != Fail {
		t.Errorf("vmm = firecracker without root should fail")
	}
	f = healthy()
	f.Image.OlderRecipe = true
	if statusOf(f, "image") != Warn {
		t.Errorf("an image built from an older recipe should warn (new VMs miss the recipe's fixes)")
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `go test ./internal/doctor -update` to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update if the change is intended):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestVersionHelpers(t *testing.T) {
	for _, tc := range []struct {
		v, w string
		less bool
	}{
		{"1.42.9", "1.43", true}, {"1.43", "1.43", false}, {"1.47.0", "1.43", false},
		{"7.1.0", "7.2", true}, {"7.2.22", "7.2", false}, {"10.0", "7.2", false}, {"", "7.2", false},
	} {
		if got := versionLess(tc.v, tc.w); got != tc.less {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tc.v, tc.w, got, tc.less)
		}
	}
	for _, tc := range []struct {
		rel  string
		want bool
	}{{"6.1.0-28-amd64", true}, {"6.18.44-fc-v769", true}, {"5.10.0", false}, {"6.0.9", false}, {"7.0", true}, {"", false}} {
		if got := kernelAtLeast(tc.rel, 6, 1); got != tc.want {
			t.Errorf("kernelAtLeast(%q, 6, 1) = %v, want %v", tc.rel, got, tc.want)
		}
	}
	for in, want := range map[string]string{
		"mke2fs 1.47.0 (5-Feb-2023)":        "1.47.0",
		"kmod version 30":                   "30",
		"debootstrap 1.0.128+nmu2+deb12u2":  "1.0.128",
		"git version 2.39.5":                "2.39.5",
		"QEMU emulator version 7.2.22 (De)": "7.2.22",
	} {
		if got := firstNumber(in); got != want {
			t.Errorf("firstNumber(%q) = %q, want %q", in, got, want)
		}
	}
	if got := firstField("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026"); got != "OpenSSH_9.2p1" {
		t.Errorf("firstField(ssh -V) = %q", got)
	}
}
