// Package doctor owns `banger doctor`: it reads facts about the host, the configuration and the
// daemon (Gather, which never changes anything and never starts the daemon) and turns them into
// one verdict per check — PASS, WARN or FAIL, what was found, and the exact fix for anything
// that is not a PASS (Check, a pure function of the facts, so that its output can be tested
// against golden files with made-up hosts).
package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
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

// Status is a check's verdict.
type Status string

// Verdicts.
const (
	Pass Status = "PASS" // fine as it is
	Warn Status = "WARN" // works, but slower, less safe or less convenient than it could be
	Fail Status = "FAIL" // something banger needs is missing or broken
)

// Result is one check's verdict.
type Result struct {
	// Check names what was checked; it is stable, for scripts ("kvm", "vm_defaults.vcpu").
	Check  string `json:"check"`
	Status Status `json:"status"`
	// Detail says what was found, in one line.
	Detail string `json:"detail"`
	// Fix is the exact thing to do, set for every WARN and FAIL.
	Fix string `json:"fix,omitempty"`
}

// Facts are everything the checks decide on. Gather reads them from the real host; tests
// write them by hand.
type Facts struct {
	GOARCH        string // runtime.GOARCH of this build
	KernelRelease string // uname -r
	UID           int
	CLI           version.Info // this banger's build

	Layout       paths.Layout
	Config       config.Config // config.Default(Layout) when ConfigErr is set
	ConfigErr    error
	ConfigExists bool // the file at Config.Path exists
	Host         config.HostFacts

	KVM         KVM
	VMM         vmm.Facts // what vmm.Choose decides on
	Firecracker Firecracker
	Jailer      Jailer
	QEMU        QEMU
	// Tools maps a host program (mkfs.ext4, mmdebstrap, debootstrap, ssh, git, depmod) to
	// what was found.
	Tools map[string]Tool
	// DebianKeyring says whether /usr/share/keyrings/debian-archive-keyring.gpg exists
	// (debootstrap needs it to verify the mirror).
	DebianKeyring bool
	// Subordinate is what working without root takes: subordinate ids, newuidmap, newgidmap.
	Subordinate Subordinate
	// Groups are the user's memberships in the groups working without root takes: the root
	// helper's (banger) and /dev/kvm's.
	Groups Groups
	// Helper is banger's root helper as a daemon of this user would reach it.
	Helper Helper

	Tun      Tun
	Bridge   Bridge
	NFTables NFTables
	Disk     Disk
	Daemon   Daemon

	Image  Artifact // the default image
	Kernel Artifact // the kernel the default image boots

	SSHConfig SSHConfig
	DNS       DNS
	Cgroup    Cgroup
	NX        NX
}

// KVM is what /dev/kvm offers.
type KVM struct {
	Exists  bool
	OpenErr error    // why this user cannot open /dev/kvm read-write; nil when it can
	Modules []string // loaded KVM modules: kvm_intel, kvm_amd, kvm_pvm
	CPUVirt bool     // the CPU flags show vmx or svm
	Accel   host.AccelChoice
}

// Firecracker is the Firecracker binary as the driver probes it.
type Firecracker struct {
	Info firecracker.Info
	Err  error // from Driver.Probe: not found, does not run, unsupported version
}

// Jailer is the jailer as the driver sees it.
type Jailer struct {
	Status firecracker.JailerStatus
	Err    error // the configuration requires a jailer that cannot be used
}

// QEMU is the QEMU system emulator.
type QEMU struct {
	Binary  string // resolved path
	Err     error  // not found
	Version string // "7.2.22"
	Microvm bool   // `-machine help` lists microvm
}

// Tool is a host program.
type Tool struct {
	Path    string
	Version string // the version as the tool prints it, e.g. "1.47.0"
	Err     error  // not found
}

// Subordinate is the user's subordinate ids and the tools that map them: without root, image
// builds, OCI pulls and kernel module disks run in a user namespace (package userns).
type Subordinate struct {
	User       string         // the user's name
	UIDs, GIDs []userns.Range // the user's ranges in /etc/subuid and /etc/subgid
	Free       userns.Range   // a range no user has, for the fix
	Err        error          // reading the files failed
	NewUIDMap  Tool           // newuidmap (package uidmap)
	NewGIDMap  Tool
	// The kernel's switches for unprivileged user namespaces, as read ("" when absent):
	// /proc/sys/user/max_user_namespaces, /proc/sys/kernel/unprivileged_userns_clone (Debian's
	// older kernels) and /proc/sys/kernel/apparmor_restrict_unprivileged_userns (Ubuntu 23.10+).
	MaxUserNamespaces, UnprivilegedClone, AppArmorRestrict string
}

// Groups are the groups an unprivileged banger needs, as the user and group databases and this
// process see them.
type Groups struct {
	User string // the user's name
	Err  error  // the user or group database could not be read
	// Process is this process's gid and supplementary gids (what the kernel checks, and what
	// the helper reads with SO_PEERGROUPS).
	Process []int
	// Banger is the group whose members may use the root helper (its configuration's group,
	// default banger); KVM is /dev/kvm's group.
	Banger Group
	KVM    Group
	// KVMExists and KVMMode are /dev/kvm's: whether it is there, and its permissions.
	KVMExists bool
	KVMMode   fs.FileMode
}

// Group is one group and the user's membership.
type Group struct {
	Name   string
	GID    int  // -1 when the group does not exist
	Member bool // the databases list the user in it (as a member, or as its primary group)
	// Needed says whether membership matters: for KVM, /dev/kvm exists and only its owner
	// and group may open it.
	Needed bool
}

// InProcess says whether this process has group g.
func (gs Groups) InProcess(g Group) bool { return g.GID >= 0 && slices.Contains(gs.Process, g.GID) }

// Helper is banger's root helper (package roothelper), asked hello on the socket an
// unprivileged daemon of this user would use, for the network it would ask for.
type Helper struct {
	// Socket is BANGER_HELPER_SOCKET, else the config's helper_socket. As root doctor asks
	// nothing (the daemon does the networking itself) and Err and Version stay empty.
	Socket string
	// Err is why roothelper.Dial or Client.Hello failed (errors.Is: fs.ErrNotExist,
	// syscall.ECONNREFUSED, syscall.EACCES, roothelper.ErrDenied, peercred.ErrUntrusted,
	// failure.Invalid, failure.NotFound); nil when the helper answered.
	Err     error
	Version string // the helper's build, as hello says it
	// Jails says the helper starts Firecracker jails (its [jails] are configured), as hello
	// says: a daemon that is not root runs Firecracker VMs in them.
	Jails bool
	// Systemd says whether systemd is the init system (/run/systemd/system exists); Unit is
	// where banger-helper.socket is installed ("" when it is not); Binary is the installed
	// banger-helper ("" when none was found).
	Systemd bool
	Unit    string
	Binary  string
	// Config is the helper's configuration file (roothelper.DefaultConfigPath).
	Config string
}

// Tun is /dev/net/tun.
type Tun struct {
	Exists   bool
	CharDev  bool
	StatErr  error
	Required bool // always true today: every VM gets a tap
}

// Bridge is the kernel's bridge support and banger's bridge.
type Bridge struct {
	Name string
	// Module is how the kernel has bridging: "loaded", "builtin", "loadable" or "" (none found).
	Module string
	// Exists says whether a link of that name exists (in the network namespace, if one is
	// configured); Type is its kind ("bridge" when it is one).
	Exists bool
	Type   string
	Err    error // the namespace could not be opened
	// ReadErr is why the bridge could not be looked at in the namespace (entering one takes
	// CAP_SYS_ADMIN, which an ordinary user lacks).
	ReadErr error
}

// NFTables is the result of a read-only listing of nftables tables.
type NFTables struct {
	Err error // the listing failed (no nf_tables, or no permission)
	// Filter is banger's packet filter as the kernel holds it.
	Filter hostnet.FilterState
	// OpenPorts are the config's host_ports_open_to_guests.
	OpenPorts []uint16
}

// Disk is the free space where the state directory is.
type Disk struct {
	Path        string // the state dir, or its nearest existing parent
	Free, Total uint64
	Err         error
}

// Daemon is what the daemon's socket says, without starting anything.
type Daemon struct {
	Socket     string
	SocketErr  error // the socket path is unusable (too long)
	Running    bool
	Version    api.Version
	Err        error // talking to it failed for another reason than "nothing listens"
	SocketMode fs.FileMode
	SocketUID  int
	StatErr    error
	// Binary and Agent are what would be started: bangerd and the banger-agent it finds.
	Binary    string
	BinaryErr error
	Agent     string
	AgentErr  error
}

// Artifact is the default image or kernel: installed, or how it would be had.
type Artifact struct {
	Name      string
	Installed bool
	Dir       string
	// Kind is the catalog entry's kind ("recipe", "oci", "bundle", "debian"), "" when the
	// catalog has no entry; Origin says where it comes from (a recipe name, a reference, a URL).
	Kind   string
	Origin string
	// CatalogErr is a broken catalog file.
	CatalogErr error
	// OlderRecipe: the installed image was built from an earlier form of its built-in recipe.
	OlderRecipe bool
}

// SSHConfig says whether ~/.ssh/config includes banger's ssh_config.
type SSHConfig struct {
	UserConfig string
	Include    string
	Installed  bool
}

// DNS is how the host resolves .vm names.
type DNS struct {
	NetNS          string
	ResolvedActive bool
	Routed         bool   // resolved sends ~vm to the bridge
	Forwarder      string // a dnsmasq or unbound file that forwards vm to banger
	ForwarderPort  int    // the port it forwards to
	Nameservers    []string
	HostIP         netip.Addr
}

// Cgroup is the cgroup mounts and the kernel command line, for favordynmods.
type Cgroup struct {
	V2Root       bool // cgroup2 is mounted at /sys/fs/cgroup (unified hierarchy)
	FavorDynmods bool // some cgroup mount has favordynmods
	Cmdline      bool // cgroup_favordynmods=true on the kernel command line
}

// NX is KVM's nx_huge_pages parameter and the iTLB multihit vulnerability.
type NX struct {
	Param string // contents of /sys/module/kvm/parameters/nx_huge_pages ("" if absent)
	ITLB  string // contents of /sys/devices/system/cpu/vulnerabilities/itlb_multihit
}

// Check turns facts into verdicts, in the order they are printed.
func Check(f Facts) []Result {
	choice, choiceErr := vmm.Choose(f.Config.VMM, f.Config.Path, f.VMM)
	c := checker{f: f, choice: choice, choiceErr: choiceErr}
	c.arch()
	userAt := len(c.out) // user is decided last, from the checks after it
	c.groups()
	c.helper()
	c.kvm()
	c.vmm()
	c.firecracker()
	c.jailer()
	c.qemu()
	c.tools()
	c.subordinate()
	c.tun()
	c.bridge()
	c.nftables()
	c.disk()
	c.daemon()
	c.config()
	c.vmDefaults()
	c.image()
	c.kernel()
	c.sshConfig()
	c.dns()
	c.favordynmods()
	c.nxHugePages()
	c.user(userAt)
	return c.out
}

// Failed reports whether any result is a FAIL.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

type checker struct {
	f         Facts
	choice    vmm.Choice
	choiceErr error
	out       []Result
	// rootless names the checks that found something working without root lacks.
	rootless []string
}

// root says whether banger runs as root here.
func (c *checker) root() bool { return c.f.UID == 0 }

func (c *checker) add(check string, s Status, detail, fix string) {
	c.out = append(c.out, Result{Check: check, Status: s, Detail: detail, Fix: fix})
}

func (c *checker) pass(check, format string, args ...any) {
	c.add(check, Pass, fmt.Sprintf(format, args...), "")
}

// usesFirecracker says whether new VMs would run under Firecracker.
func (c *checker) usesFirecracker() bool {
	return c.choiceErr == nil && c.choice.Driver == firecracker.Name
}

// helperJails says whether a daemon that is not root can run Firecracker: the root helper
// answered and starts jails.
func (c *checker) helperJails() bool { return c.f.Helper.Err == nil && c.f.Helper.Jails }

// fcWanted says whether the configuration insists on Firecracker.
func (c *checker) fcWanted() bool { return c.f.Config.VMM == config.VMMFirecracker }

func (c *checker) arch() {
	switch c.f.GOARCH {
	case "amd64":
		c.pass("arch", "amd64 (x86-64), Linux %s", dash(c.f.KernelRelease))
	case "arm64":
		c.add("arch", Fail, "arm64: banger supports x86-64 hosts only for now (its default kernel, images and QEMU machine are x86-64)",
			"run banger on an x86-64 Linux host")
	default:
		c.add("arch", Fail, c.f.GOARCH+": banger supports x86-64 Linux hosts only", "run banger on an x86-64 Linux host")
	}
}

// user says who banger runs as. It is decided last and printed second: without root its
// verdict is the worst of the checks working without root takes (groups, helper, newuidmap,
// userns, subids, and the VMM).
func (c *checker) user(at int) {
	var r Result
	if c.root() {
		r = Result{Check: "user", Status: Pass, Detail: "root: the daemon does the host networking itself, one process"}
	} else {
		r = Result{Check: "user", Status: Pass, Detail: fmt.Sprintf("uid %d%s: bangerd runs as you and banger's root helper does the host networking (two processes)", c.f.UID, c.userName())}
		for _, name := range c.rootless {
			for _, o := range c.out {
				if o.Check == name && worse(o.Status, r.Status) {
					r.Status = o.Status
				}
			}
		}
		if len(c.rootless) > 0 {
			r.Detail += "; not ready without root: " + strings.Join(c.rootless, ", ")
			r.Fix = "see the fix of " + strings.Join(c.rootless, ", ") + " below"
			if r.Status == Fail {
				r.Fix += " (or run banger as root: `sudo -i`, then `banger …`)"
			}
		}
	}
	c.out = append(c.out[:at], append([]Result{r}, c.out[at:]...)...)
}

// userName is " (name)" for the user, when known.
func (c *checker) userName() string {
	for _, n := range []string{c.f.Groups.User, c.f.Subordinate.User} {
		if n != "" {
			return " (" + n + ")"
		}
	}
	return ""
}

// who is the user's name for fixes, or $USER.
func (c *checker) who() string {
	if n := strings.TrimSuffix(strings.TrimPrefix(c.userName(), " ("), ")"); n != "" {
		return n
	}
	return "$USER"
}

// notRootless records that check found something banger without root lacks.
func (c *checker) notRootless(check string) {
	if !c.root() && !contains(c.rootless, check) {
		c.rootless = append(c.rootless, check)
	}
}

// worse says whether a is a worse verdict than b.
func worse(a, b Status) bool {
	rank := map[Status]int{Pass: 0, Warn: 1, Fail: 2}
	return rank[a] > rank[b]
}

// groups checks that the user, and this process, are in the root helper's group and in
// /dev/kvm's (whether /dev/kvm can be opened is the kvm check's).
func (c *checker) groups() {
	if c.root() {
		c.pass("groups", "not needed as root (root may use the root helper and /dev/kvm)")
		return
	}
	g := c.f.Groups
	if g.Banger.Name == "" {
		g.Banger.Name = roothelper.DefaultGroup
	}
	who := c.who()
	if g.Err != nil {
		c.add("groups", Fail, "cannot read the user's groups: "+oneLine(g.Err.Error()), "check the user and group databases: `id "+who+"`, `getent group "+g.Banger.Name+"`")
		c.notRootless("groups")
		return
	}
	type entry struct {
		g    Group
		what string
	}
	entries := []entry{{g.Banger, "the root helper's socket"}}
	if g.KVM.Needed {
		entries = append(entries, entry{g.KVM, "/dev/kvm; the kvm check says whether it opens"})
	}
	var missing, notMember, notProcess, fine []string
	status := Pass
	bad := func(e entry) {
		s := Warn
		if e.g.Name == g.Banger.Name {
			s = Fail
		}
		if worse(s, status) {
			status = s
		}
	}
	for _, e := range entries {
		switch {
		case e.g.GID < 0:
			missing = append(missing, e.g.Name)
			bad(e)
		case !e.g.Member:
			notMember = append(notMember, e.g.Name)
			bad(e)
		case !g.InProcess(e.g):
			notProcess = append(notProcess, e.g.Name)
			bad(e)
		default:
			fine = append(fine, fmt.Sprintf("%s (%s)", e.g.Name, e.what))
		}
	}
	if status == Pass {
		detail := fmt.Sprintf("%s is in %s, and so is this process", who, strings.Join(fine, " and "))
		switch {
		case g.KVM.Needed:
		case !g.KVMExists:
			detail += "; there is no /dev/kvm (see kvm)"
		case g.KVMMode.Perm()&0o006 == 0o006:
			detail += fmt.Sprintf("; /dev/kvm is open to everyone (mode %04o), no group needed", g.KVMMode.Perm())
		default:
			detail += fmt.Sprintf("; /dev/kvm is root's alone (mode %04o), so no group opens it (see kvm)", g.KVMMode.Perm())
		}
		c.pass("groups", "%s", detail)
		return
	}
	var details, fixes []string
	if len(missing) > 0 {
		details = append(details, "no group "+strings.Join(missing, ", ")+" on this host")
		fixes = append(fixes, "`make install` (it creates the groups banger and kvm), or `sudo groupadd --system "+strings.Join(missing, "`, `sudo groupadd --system ")+"`")
		notMember = append(notMember, missing...)
	}
	if len(notMember) > len(missing) {
		details = append(details, who+" is not in "+strings.Join(notMember[:len(notMember)-len(missing)], " or "))
	}
	if len(notMember) > 0 {
		fixes = append(fixes, fmt.Sprintf("`sudo usermod -aG %s %s`, then log in again (or, in one shell, %s)", strings.Join(notMember, ","), who, newgrp(notMember)))
	}
	if len(notProcess) > 0 {
		details = append(details, fmt.Sprintf("%s is in %s, but this process is not (a login from before the user was added)", who, strings.Join(notProcess, " and ")))
		fixes = append(fixes, fmt.Sprintf("log in again (or, in one shell, %s)", newgrp(notProcess)))
	}
	detail := strings.Join(details, "; ")
	if contains(missing, g.Banger.Name) || contains(notMember, g.Banger.Name) || contains(notProcess, g.Banger.Name) {
		detail += ": without group " + g.Banger.Name + " the root helper refuses the daemon, and VMs get no network"
	}
	if k := g.KVM.Name; g.KVM.Needed && (contains(missing, k) || contains(notMember, k) || contains(notProcess, k)) {
		detail += "; without group " + k + " the daemon cannot open /dev/kvm, and guests run under software emulation (see kvm)"
	}
	c.add("groups", status, detail, strings.Join(fixes, "; then "))
	c.notRootless("groups")
}

// newgrp is how one shell gets groups: newgrp starts a shell with the group added, so one per
// group, each in the shell the previous one started.
func newgrp(groups []string) string {
	cmds := make([]string, len(groups))
	for i, g := range groups {
		cmds[i] = "`newgrp " + g + "`"
	}
	if len(cmds) == 1 {
		return cmds[0]
	}
	return strings.Join(cmds, ", then ") + " in the shell it starts"
}

// helper checks that banger's root helper answers on the socket an unprivileged daemon uses,
// serves its network and is of this build.
func (c *checker) helper() {
	h := c.f.Helper
	if c.root() {
		c.pass("helper", "not needed as root: the daemon makes the bridge, taps and packet filter itself")
		return
	}
	netDesc := fmt.Sprintf("bridge %s (%s)", c.f.Config.BridgeName, c.f.Config.BridgeCIDR)
	if ns := c.f.Config.NetworkNamespace; ns != "" {
		netDesc += " in network namespace " + ns
	}
	group := c.f.Groups.Banger.Name
	if group == "" {
		group = "banger"
	}
	start := c.helperStart()
	restart := "`sudo systemctl restart banger-helper.service`"
	if !h.Systemd {
		restart = "restart banger-helper (as root)"
	}
	defer func() {
		if c.out[len(c.out)-1].Status != Pass {
			c.notRootless("helper")
		}
	}()
	err := h.Err
	switch {
	case err == nil && h.Version != c.f.CLI.String():
		c.add("helper", Warn, fmt.Sprintf("banger-helper on %s answers for %s, but is build %s; this banger is %s", h.Socket, netDesc, dash(h.Version), c.f.CLI),
			"install the helper of this build: `make install`, then "+restart)
	case err == nil:
		c.pass("helper", "banger-helper on %s answers for %s, same build as this CLI", h.Socket, netDesc)
	case errors.Is(err, roothelper.ErrDenied):
		c.add("helper", Fail, fmt.Sprintf("banger-helper on %s refuses this process: it is not in group %s (%s)", h.Socket, group, oneLine(err.Error())), c.joinGroup(group))
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		c.add("helper", Fail, fmt.Sprintf("cannot connect to %s: permission denied (the socket is root's and group %s's, mode 0660)", h.Socket, group), c.joinGroup(group))
	case errors.Is(err, fs.ErrNotExist):
		c.add("helper", Fail, fmt.Sprintf("no socket %s: banger's root helper is not running, and without root the daemon cannot make the bridge, taps or packet filter", h.Socket), start)
	case errors.Is(err, syscall.ECONNREFUSED):
		if h.Systemd && h.Unit != "" {
			start = "`sudo systemctl enable banger-helper.socket && sudo systemctl restart banger-helper.socket`"
		}
		c.add("helper", Fail, fmt.Sprintf("nothing listens on %s (a helper that stopped left its socket behind)", h.Socket), start)
	case errors.Is(err, peercred.ErrUntrusted):
		c.add("helper", Fail, oneLine(err.Error())+": the daemon talks only to a root helper",
			fmt.Sprintf("find what serves %s (`sudo ss -xlp | grep %s`) and stop it; then %s", h.Socket, h.Socket, start))
	case errors.Is(err, failure.NotFound):
		ns := c.f.Config.NetworkNamespace
		c.add("helper", Fail, fmt.Sprintf("banger-helper on %s: %s", h.Socket, oneLine(err.Error())), fmt.Sprintf("`sudo ip netns add %s`, or unset network_namespace in %s", filepath.Base(ns), c.f.Config.Path))
	case errors.Is(err, failure.Invalid):
		fix := fmt.Sprintf("as root, add to %s: [[network]] bridge = %q cidr = %q (each on its own line; [[network]] entries replace the default banger0 one, so keep that one listed if others use it), then %s; or set bridge_name and bridge_cidr in %s to a network the helper serves",
			h.Config, c.f.Config.BridgeName, c.f.Config.BridgeCIDR.String(), restart, c.f.Config.Path)
		if ns := c.f.Config.NetworkNamespace; ns != "" {
			fix += fmt.Sprintf("; network namespace %s must be a name under /run/netns starting with the helper's namespace_prefix (default banger)", ns)
		}
		c.add("helper", Fail, fmt.Sprintf("banger-helper on %s does not serve %s: %s", h.Socket, netDesc, oneLine(err.Error())), fix)
	default:
		c.add("helper", Fail, fmt.Sprintf("banger-helper on %s: %s", h.Socket, oneLine(err.Error())),
			"install the helper of this build and restart it: `make install`, then "+restart+"; if that does not help, read its log ("+c.helperLog()+")")
	}
}

// joinGroup is how this process gets the root helper's group: joining it, or, when the
// user database already lists the user in it, a new login.
func (c *checker) joinGroup(group string) string {
	if g := c.f.Groups; g.Banger.Member && g.Banger.Name == group {
		return fmt.Sprintf("log in again, or `newgrp %s` (one shell): %s is in group %s but this process is not (see groups)", group, c.who(), group)
	}
	return fmt.Sprintf("`sudo usermod -aG %s %s`, then log in again (or `newgrp %s`); see groups", group, c.who(), group)
}

// helperStart is how to get the root helper running on its socket.
func (c *checker) helperStart() string {
	h := c.f.Helper
	var fix string
	switch {
	case h.Systemd && h.Unit != "":
		fix = "`sudo systemctl enable --now banger-helper.socket` (" + h.Unit + ")"
	case h.Systemd:
		fix = "`make install` (it installs banger-helper.socket), then `sudo systemctl enable --now banger-helper.socket`"
	default:
		bin := h.Binary
		if bin == "" {
			bin = "/usr/local/lib/banger/banger-helper"
			fix = "`make install`, then "
		}
		fix += "start the helper as root (systemd is not the init system here, so nothing starts it for you): `sudo " + bin + " &`, better from your init system; it makes " + roothelper.DefaultSocket + " itself"
		if h.Socket != roothelper.DefaultSocket {
			fix += " (`--socket " + h.Socket + "` for this config's helper_socket)"
		}
		return fix
	}
	if h.Socket != roothelper.DefaultSocket {
		fix += "; the unit listens on " + roothelper.DefaultSocket + ": set helper_socket in " + c.f.Config.Path + " to it"
	}
	return fix
}

// helperLog is where the root helper logs.
func (c *checker) helperLog() string {
	if c.f.Helper.Systemd {
		return "`journalctl -u banger-helper.service`"
	}
	return "its standard error"
}

func (c *checker) kvm() {
	k := c.f.KVM
	if k.Accel.Accel == host.KVM {
		c.pass("kvm", "%s", k.Accel.Reason)
		return
	}
	detail := k.Accel.Reason + "; guests run under QEMU's software emulation (TCG): boots take seconds, not milliseconds"
	var fix string
	switch {
	case !k.Exists && k.CPUVirt:
		fix = "load KVM: `modprobe kvm_intel` (Intel) or `modprobe kvm_amd` (AMD)"
	case !k.Exists:
		fix = "use a host with hardware virtualization (vmx/svm): enable VT-x/AMD-V in the firmware, or nested virtualization in the hypervisor running this machine, then `modprobe kvm_intel` or `modprobe kvm_amd`"
	case k.OpenErr != nil && c.f.Groups.KVM.Member && !c.f.Groups.InProcess(c.f.Groups.KVM):
		fix = "log in again, or `newgrp " + c.f.Groups.KVM.Name + "` (one shell): " + c.who() + " is in group " + c.f.Groups.KVM.Name + " but this process is not (see groups)"
	case k.OpenErr != nil && !c.root() && c.f.Groups.KVM.GID < 0:
		fix = "give /dev/kvm to group kvm, as udev's rule does at boot: `sudo chgrp kvm /dev/kvm && sudo chmod 0660 /dev/kvm`, then `sudo usermod -aG kvm " + c.who() + "` and log in again"
	case k.OpenErr != nil:
		fix = "give this user /dev/kvm: `sudo usermod -aG kvm " + c.who() + "` and log in again (see groups), or run banger as root"
	case contains(k.Modules, "kvm_pvm"):
		fix = "nothing to do on this host: PVM runs only kernels built as PVM guests; for KVM speed use a host with hardware virtualization (vmx/svm)"
	default:
		fix = "use a host with hardware virtualization (vmx/svm), or enable nested virtualization in the hypervisor running this machine"
	}
	c.add("kvm", Warn, detail, fix)
}

func (c *checker) vmm() {
	if !c.root() && (c.fcWanted() || c.usesFirecracker()) && !c.helperJails() {
		why := "vmm = \"firecracker\""
		if !c.fcWanted() {
			why = "vmm = \"auto\" picks Firecracker here"
		}
		c.add("vmm", Fail, why+", but without root Firecracker runs only in jails banger's root helper starts, and it starts none (no [jails] in its configuration, or no helper answered; see helper); QEMU runs VMs as an ordinary user",
			fmt.Sprintf("name the jailer and firecracker in [jails] of %s and restart the helper (`sudo systemctl restart banger-helper`), or set vmm = \"qemu\" in %s, or run banger as root", c.f.Helper.Config, c.f.Config.Path))
		c.notRootless("vmm")
		return
	}
	if c.choiceErr != nil {
		fix := fmt.Sprintf("fix what is named above, or set vmm = \"auto\" in %s to fall back to QEMU", c.f.Config.Path)
		if c.f.Config.VMM == config.VMMAuto {
			fix = "install a VMM that can run here (see the firecracker and qemu checks)"
		}
		c.add("vmm", Fail, oneLine(c.choiceErr.Error()), fix)
		return
	}
	c.pass("vmm", "%s (%s): %s", c.choice.Driver, c.choice.Accel, c.choice.Reason)
}

// fcInstall is how to get a supported Firecracker.
var fcInstall = fmt.Sprintf("download firecracker-vX.Y.Z-x86_64.tgz (%s) from %s, check it against SHA256SUMS, and install release-vX.Y.Z-x86_64/firecracker-vX.Y.Z-x86_64 as /usr/local/bin/firecracker (or set firecracker_bin)",
	firecracker.SupportedRange, firecracker.ReleasesURL)

func (c *checker) firecracker() {
	fc := c.f.Firecracker
	kvm := c.f.KVM.Accel.Accel == host.KVM
	if !c.root() && !c.fcWanted() && !c.helperJails() {
		found := "not installed"
		switch {
		case fc.Info.Binary != "" && fc.Err != nil:
			found = oneLine(fc.Err.Error())
		case fc.Info.Binary != "":
			found = fmt.Sprintf("%s at %s", fc.Info.Version, fc.Info.Binary)
		}
		c.pass("firecracker", "%s; without root Firecracker runs only in jails of banger's root helper, which starts none here ([jails] in %s); QEMU runs VMs (see vmm)", found, c.f.Helper.Config)
		return
	}
	if fc.Err == nil {
		c.pass("firecracker", "%s at %s (supported: %s)", fc.Info.Version, fc.Info.Binary, firecracker.SupportedRange)
		return
	}
	status := Warn
	if c.fcWanted() {
		status = Fail
	}
	if fc.Info.Binary == "" { // not found
		if !kvm && !c.fcWanted() {
			c.pass("firecracker", "not installed; it would need hardware KVM, which this host lacks (see kvm)")
			return
		}
		detail := "not found: VMs run under QEMU, which boots slower"
		if c.fcWanted() {
			detail = "not found, but vmm = \"firecracker\""
		}
		c.add("firecracker", status, detail, fcInstall)
		return
	}
	c.add("firecracker", status, oneLine(fc.Err.Error()), fcInstall)
}

func (c *checker) jailer() {
	j := c.f.Jailer
	if !c.usesFirecracker() {
		found := "no jailer found"
		if j.Status.Binary != "" {
			found = fmt.Sprintf("jailer %s at %s", j.Status.Version, j.Status.Binary)
		}
		c.pass("jailer", "not used: VMs do not run under Firecracker here (%s)", found)
		return
	}
	if !c.root() {
		// The helper runs its own jailer; the daemon's jailer settings do not apply.
		if c.helperJails() {
			c.pass("jailer", "banger's root helper runs the jailer of its configuration (%s): each VM in its own chroot as its own unprivileged uid", c.f.Helper.Config)
		} else {
			c.pass("jailer", "not used: without root the jailer is banger's root helper's, and it starts no jails here (see vmm)")
		}
		return
	}
	fix := "install the jailer of the same Firecracker release: jailer-vX.Y.Z-x86_64 from the release archive as /usr/local/bin/jailer (or set jailer_bin)"
	switch {
	case j.Err != nil:
		c.add("jailer", Fail, oneLine(j.Err.Error()), fix+"; or set jailer_enabled = false in "+c.f.Config.Path)
	case !j.Status.Enabled && c.f.Config.JailerEnabled != nil && !*c.f.Config.JailerEnabled:
		c.add("jailer", Warn, j.Status.Reason, "remove jailer_enabled = false from "+c.f.Config.Path+" so that each VM runs in a chroot as its own unprivileged uid")
	case !j.Status.Enabled:
		c.add("jailer", Warn, j.Status.Reason, fix)
	case j.Status.Warning != "":
		c.add("jailer", Warn, j.Status.Warning, fix)
	default:
		c.pass("jailer", "%s", j.Status.Reason)
	}
}

func (c *checker) qemu() {
	q := c.f.QEMU
	// QEMU is needed when it runs the VMs, and wanted as the fallback otherwise.
	status := Warn
	why := "; there is no fallback when Firecracker cannot run"
	if c.choiceErr != nil || c.choice.Driver != firecracker.Name {
		status, why = Fail, "; VMs run under QEMU here"
	}
	fix := "apt-get install qemu-system-x86 (or set qemu_bin)"
	switch {
	case q.Err != nil:
		c.add("qemu", status, oneLine(q.Err.Error())+why, fix)
	case !q.Microvm:
		c.add("qemu", status, fmt.Sprintf("%s %s has no microvm machine type%s", q.Binary, dash(q.Version), why), "install QEMU 7.2 or newer: "+fix)
	case versionLess(q.Version, "7.2"):
		c.add("qemu", Warn, fmt.Sprintf("%s at %s; banger is tested with 7.2 and newer", q.Version, q.Binary), "install QEMU 7.2 or newer: "+fix)
	default:
		c.pass("qemu", "%s at %s, microvm machine available", q.Version, q.Binary)
	}
}

func (c *checker) tools() {
	t := c.f.Tools
	// mkfs.ext4 -d (copy a tree into the new filesystem) exists from e2fsprogs 1.43.
	if m := t["mkfs.ext4"]; m.Err != nil {
		c.add("mkfs.ext4", Fail, "not found: images and module disks are made with mkfs.ext4 -d", "apt-get install e2fsprogs")
	} else if versionLess(m.Version, "1.43") {
		c.add("mkfs.ext4", Fail, fmt.Sprintf("%s at %s has no -d (needs e2fsprogs 1.43 or newer)", m.Version, m.Path), "install e2fsprogs 1.43 or newer (Debian 12 has 1.47)")
	} else {
		c.pass("mkfs.ext4", "e2fsprogs %s at %s (-d supported)", m.Version, m.Path)
	}

	// A bootstrapper builds recipe images (the default image is one).
	mm, db := t["mmdebstrap"], t["debootstrap"]
	needed := !c.f.Image.Installed && c.f.Image.Kind == "recipe"
	status := Warn
	if needed {
		status = Fail
	}
	switch {
	case mm.Err == nil:
		c.pass("bootstrap", "mmdebstrap %s at %s", mm.Version, mm.Path)
	case db.Err == nil && !c.f.DebianKeyring:
		c.add("bootstrap", status, fmt.Sprintf("debootstrap %s at %s, but no /usr/share/keyrings/debian-archive-keyring.gpg to verify the mirror with", db.Version, db.Path),
			"apt-get install debian-archive-keyring (or mmdebstrap)")
	case db.Err == nil:
		c.pass("bootstrap", "debootstrap %s at %s (mmdebstrap is faster: apt-get install mmdebstrap)", db.Version, db.Path)
	default:
		what := "neither mmdebstrap nor debootstrap found: images cannot be built from recipes"
		if needed {
			what += fmt.Sprintf(", and the default image %s is one that is not built yet", c.f.Image.Name)
		}
		c.add("bootstrap", status, what, "apt-get install mmdebstrap")
	}

	if s := t["ssh"]; s.Err != nil {
		c.add("ssh", Warn, "not found: `banger vm ssh`, `banger vm run` without a command and `ssh NAME.vm` need it (`banger vm exec` does not)", "apt-get install openssh-client")
	} else {
		c.pass("ssh", "%s at %s", s.Version, s.Path)
	}
	if g := t["git"]; g.Err != nil {
		c.add("git", Warn, "not found: `banger vm run` in a repository ships its files with git", "apt-get install git")
	} else {
		c.pass("git", "git %s at %s", g.Version, g.Path)
	}
	if d := t["depmod"]; d.Err != nil {
		s := Warn
		if !c.f.Kernel.Installed {
			s = Fail
		}
		c.add("depmod", s, "not found: kernel pulls and imports index modules with depmod", "apt-get install kmod")
	} else {
		c.pass("depmod", "kmod %s at %s", d.Version, d.Path)
	}
}

// subordinate checks newuidmap, newgidmap and the user's subordinate ids, which building and
// pulling images without root needs.
func (c *checker) subordinate() {
	s := c.f.Subordinate
	root := c.f.UID == 0
	var missing []string
	for _, t := range []struct {
		name string
		tool Tool
	}{{"newuidmap", s.NewUIDMap}, {"newgidmap", s.NewGIDMap}} {
		if t.tool.Err != nil || t.tool.Path == "" {
			missing = append(missing, t.name)
		}
	}
	switch {
	case len(missing) == 0 && root:
		c.pass("newuidmap", "%s and %s; not needed as root (they map a user's subordinate ids into the user namespace of builds without root)", s.NewUIDMap.Path, s.NewGIDMap.Path)
	case len(missing) == 0:
		c.pass("newuidmap", "%s and %s (they map a user's subordinate ids into the user namespace of builds without root)", s.NewUIDMap.Path, s.NewGIDMap.Path)
	case root:
		c.pass("newuidmap", "%s not installed; not needed as root (building images without root needs them: apt-get install uidmap)", strings.Join(missing, " and "))
	default:
		c.add("newuidmap", Fail, strings.Join(missing, " and ")+" not found: without root, image builds, OCI pulls and kernel module disks run in a user namespace they map",
			"sudo apt-get install uidmap")
		c.notRootless("newuidmap")
	}

	switch {
	case s.MaxUserNamespaces == "0":
		c.userns(root, "user namespaces are disabled (user.max_user_namespaces = 0)",
			"echo user.max_user_namespaces=65536 > /etc/sysctl.d/90-banger-userns.conf && sysctl --system")
	case s.UnprivilegedClone == "0":
		c.userns(root, "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)",
			"echo kernel.unprivileged_userns_clone=1 > /etc/sysctl.d/90-banger-userns.conf && sysctl --system")
	case s.AppArmorRestrict == "1":
		c.userns(root, "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1): processes in them get no capabilities",
			`printf 'abi <abi/4.0>,\ninclude <tunables/global>\nprofile bangerd /usr/local/bin/bangerd flags=(unconfined) {\n  userns,\n}\n' > /etc/apparmor.d/bangerd && apparmor_parser -r /etc/apparmor.d/bangerd`)
	case root:
		c.pass("userns", "unprivileged user namespaces are available; not needed as root")
	default:
		c.pass("userns", "unprivileged user namespaces are available")
	}

	enough := func(rs []userns.Range) bool {
		for _, r := range rs {
			if r.Count >= userns.MinIDs {
				return true
			}
		}
		return false
	}
	user := s.User
	if user == "" {
		user = "$USER"
	}
	fix := "as root: " + userns.FixCommand(user, s.Free) + " (a range no other user has in " + userns.SubUIDFile + " and " + userns.SubGIDFile + ")"
	switch {
	case s.Err != nil:
		status := Fail
		if root {
			status = Warn
		}
		c.add("subids", status, oneLine(s.Err.Error()), "make "+userns.SubUIDFile+" and "+userns.SubGIDFile+" readable (mode 0644), as useradd leaves them")
		c.notRootless("subids")
	case enough(s.UIDs) && enough(s.GIDs) && root:
		c.pass("subids", "%s has uids %v and gids %v; not needed as root (images keep their owners when built without root)", user, s.UIDs, s.GIDs)
	case enough(s.UIDs) && enough(s.GIDs):
		c.pass("subids", "%s has uids %v and gids %v (images keep their owners when built without root)", user, s.UIDs, s.GIDs)
	case root:
		c.pass("subids", "not needed as root")
	default:
		c.add("subids", Fail, fmt.Sprintf("%s has no range of %d subordinate uids and gids (uids %v, gids %v): without root, images are built and pulled in a user namespace mapping them, so that files keep their owners",
			user, userns.MinIDs, s.UIDs, s.GIDs), fix)
		c.notRootless("subids")
	}
}

// userns reports unprivileged user namespaces unavailable: a FAIL without root.
func (c *checker) userns(root bool, detail, fix string) {
	if root {
		c.pass("userns", "%s; not needed as root", detail)
		return
	}
	c.add("userns", Fail, detail+"; without root, images are built and pulled in a user namespace", "as root: "+fix)
	c.notRootless("userns")
}

func (c *checker) tun() {
	t := c.f.Tun
	switch {
	case t.Exists && t.CharDev:
		c.pass("tun", "/dev/net/tun is there (every VM gets a tap device)")
	case t.Exists:
		c.add("tun", Fail, "/dev/net/tun exists but is not a character device", "recreate it: `rm /dev/net/tun && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun`")
	default:
		c.add("tun", Fail, "/dev/net/tun is missing: VMs cannot get tap devices", "`modprobe tun` (a kernel with CONFIG_TUN), or `mkdir -p /dev/net && mknod /dev/net/tun c 10 200` where tun is built in")
	}
}

func (c *checker) bridge() {
	b := c.f.Bridge
	where := ""
	if c.f.DNS.NetNS != "" {
		where = " in network namespace " + c.f.DNS.NetNS
	}
	switch {
	case b.Err != nil:
		c.add("bridge", Fail, oneLine(b.Err.Error()), fmt.Sprintf("create the namespace (`ip netns add %s`) or unset network_namespace in %s", c.f.DNS.NetNS, c.f.Config.Path))
	case b.ReadErr != nil && !c.root():
		c.pass("bridge", "not readable as uid %d%s (%s): banger's root helper makes %s there with the first VM; `sudo banger doctor` looks at it", c.f.UID, where, oneLine(b.ReadErr.Error()), b.Name)
	case b.ReadErr != nil:
		c.add("bridge", Fail, fmt.Sprintf("cannot look at %s%s: %s", b.Name, where, oneLine(b.ReadErr.Error())), fmt.Sprintf("check the namespace (`ip netns exec %s ip link`), or unset network_namespace in %s", c.f.DNS.NetNS, c.f.Config.Path))
	case b.Exists && b.Type != "bridge":
		c.add("bridge", Fail, fmt.Sprintf("%s exists%s but is a %s, not a bridge", b.Name, where, dash(b.Type)),
			fmt.Sprintf("set bridge_name in %s to a name no other link uses", c.f.Config.Path))
	case b.Exists:
		c.pass("bridge", "%s exists%s (kernel bridging %s)", b.Name, where, dash(b.Module))
	case b.Module != "":
		maker := "bangerd creates"
		if !c.root() {
			maker = "banger's root helper creates"
		}
		c.pass("bridge", "kernel bridging %s; %s %s%s with the first VM", b.Module, maker, b.Name, where)
	default:
		c.add("bridge", Fail, "the kernel has no bridge support (no bridge module loaded, built in or installed)", "`modprobe bridge` (a kernel with CONFIG_BRIDGE)")
	}
}

func (c *checker) nftables() {
	n := c.f.NFTables
	if n.Err != nil {
		if c.f.UID != 0 {
			c.pass("nftables", "not readable as uid %d (%s): banger's root helper keeps the packet filter; `sudo banger doctor` describes it", c.f.UID, oneLine(n.Err.Error()))
			return
		}
		c.add("nftables", Fail, "listing nftables tables failed: "+oneLine(n.Err.Error())+"; VMs do not start without their packet filter",
			"`modprobe nf_tables nft_chain_nat nft_masq nft_ct` (a kernel with CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET, CONFIG_NF_TABLES_BRIDGE, CONFIG_NFT_CT, CONFIG_NFT_NAT and CONFIG_NFT_MASQ)")
		return
	}
	f := n.Filter
	if f.Legacy {
		c.add("nftables", Warn, "table ip banger of an older banger is loaded: it masquerades guests without filtering their traffic",
			"`banger daemon stop`; the next banger command starts the daemon, which replaces it with the packet filter")
		return
	}
	if !f.Present {
		c.pass("nftables", "nf_tables answers (read-only listing); no packet filter yet (banger adds it when a VM starts)")
		return
	}
	host := "DNS (53)"
	if len(n.OpenPorts) > 0 {
		ps := make([]string, len(n.OpenPorts))
		for i, p := range n.OpenPorts {
			ps[i] = fmt.Sprint(p)
		}
		host += " and port(s) " + strings.Join(ps, ", ")
	}
	detail := fmt.Sprintf("packet filter on: %d guest(s) may send only from their own MAC and IPv4 address; guests reach the host only on %s; %d NAT guest(s)", f.Guests, host, len(f.NAT))
	if len(f.Uplinks) == 0 {
		if len(f.NAT) > 0 {
			c.add("nftables", Warn, detail+", but there is no IPv4 default route, so no guest reaches beyond the host",
				"give the host (or network_namespace) a default route; banger follows it when it appears")
			return
		}
		c.pass("nftables", "%s; no IPv4 default route", detail)
		return
	}
	c.pass("nftables", "%s leave through %s, masqueraded; --no-nat guests reach only the bridge", detail, strings.Join(f.Uplinks, ", "))
}

// Free space thresholds for the state directory: the default kernel and image take about
// 2 GiB, and every VM's disk grows with what it writes.
const (
	diskFail = 3 << 30
	diskWarn = 10 << 30
)

func (c *checker) disk() {
	d := c.f.Disk
	if d.Err != nil {
		c.add("disk", Warn, "cannot read free space at "+d.Path+": "+oneLine(d.Err.Error()), "check that "+d.Path+" exists and is readable")
		return
	}
	detail := fmt.Sprintf("%s free of %s at %s", gib(d.Free), gib(d.Total), d.Path)
	switch {
	case d.Free < diskFail:
		c.add("disk", Fail, detail+"; the default kernel and image alone need about 2 GiB", "free space on that filesystem, or point XDG_STATE_HOME at a larger one")
	case d.Free < diskWarn:
		c.add("disk", Warn, detail+"; VM disks grow with what they write (8 GiB each by default)", "free space on that filesystem, or point XDG_STATE_HOME at a larger one")
	default:
		c.pass("disk", "%s", detail)
	}
}

func (c *checker) daemon() {
	d := c.f.Daemon
	if d.SocketErr != nil {
		c.add("daemon", Fail, oneLine(d.SocketErr.Error()), "set BANGER_SOCKET to a shorter path")
		return
	}
	if d.Err != nil {
		c.add("daemon", Fail, "socket "+d.Socket+": "+oneLine(d.Err.Error()), "look at the daemon's log, "+c.f.Layout.LogFile()+"; `banger daemon stop` and run any command to start it again")
		return
	}
	if !d.Running {
		switch {
		case d.BinaryErr != nil:
			c.add("daemon", Fail, "not running, and cannot be started: "+oneLine(d.BinaryErr.Error()), "reinstall banger: `make install`")
		case d.AgentErr != nil:
			c.add("daemon", Fail, "not running, and would not start: "+oneLine(d.AgentErr.Error()), "reinstall banger: `make install` (or set "+paths.EnvAgent+")")
		default:
			c.pass("daemon", "not running; the next banger command starts %s (socket %s)", d.Binary, d.Socket)
		}
		return
	}
	v := d.Version
	daemonBuild := version.Info{Version: v.Version, Commit: v.Commit, Date: v.Date}
	switch {
	case d.StatErr != nil:
		c.add("daemon", Fail, fmt.Sprintf("running (pid %d) but its socket %s: %s", v.PID, d.Socket, oneLine(d.StatErr.Error())), "`banger daemon stop`; the next command starts it again")
	case d.SocketMode.Perm() != 0o600 || d.SocketUID != c.f.UID:
		c.add("daemon", Fail, fmt.Sprintf("socket %s has mode %04o owned by uid %d; it must be 0600 and this user's (uid %d): anyone who can connect controls your VMs",
			d.Socket, d.SocketMode.Perm(), d.SocketUID, c.f.UID),
			"`banger daemon stop` (it makes the socket 0600 when it starts), and find what changed the socket")
	case v.StateDir != "" && v.StateDir != c.f.Layout.StateDir:
		c.add("daemon", Fail, fmt.Sprintf("the daemon on %s serves state dir %s, not this CLI's %s", d.Socket, v.StateDir, c.f.Layout.StateDir),
			"set BANGER_SOCKET to a socket of your own for this state directory, or use the environment that daemon was started with")
	case !daemonBuild.Same(c.f.CLI):
		c.add("daemon", Warn, fmt.Sprintf("running (pid %d) build %s; this CLI is %s", v.PID, daemonBuild, c.f.CLI),
			"nothing needed: the next banger command restarts it (VMs keep running); or `banger daemon stop` now")
	default:
		c.pass("daemon", "running (pid %d), same build as this CLI: %s; socket %s (0600)", v.PID, c.f.CLI, d.Socket)
	}
}

func (c *checker) config() {
	if c.f.ConfigErr != nil {
		c.add("config", Fail, oneLine(c.f.ConfigErr.Error())+" (the checks below use the built-in defaults)",
			"fix that line of "+c.f.Config.Path+" (docs/config.md lists every key)")
		return
	}
	c.pass("config", "%s", configSource(c.f))
}

func configSource(f Facts) string {
	if !f.ConfigExists {
		return f.Config.Path + " does not exist: built-in defaults everywhere (docs/config.md lists every key)"
	}
	return f.Config.Path + " loads (built-in defaults where it is silent)"
}

func (c *checker) vmDefaults() {
	spec, err := config.ResolveVMSpec(config.Overrides{}, c.f.Config, c.f.Host)
	if err != nil {
		c.add("vm_defaults", Fail, oneLine(err.Error()), "change [vm_defaults] in "+c.f.Config.Path)
		return
	}
	line := func(r string, source config.Source, reason string) string {
		if reason == "" {
			return r + " (" + string(source) + ")"
		}
		return r + " (" + string(source) + ": " + reason + ")"
	}
	c.pass("vm_defaults.vcpu", "%s", line(fmt.Sprint(spec.VCPU.Value), spec.VCPU.Source, spec.VCPU.Reason))
	c.pass("vm_defaults.memory_mib", "%s", line(fmt.Sprintf("%d MiB", spec.MemoryMiB.Value), spec.MemoryMiB.Source, spec.MemoryMiB.Reason))
	c.pass("vm_defaults.disk_size", "%s", line(bytesize.Format(spec.DiskBytes.Value), spec.DiskBytes.Source, spec.DiskBytes.Reason))
}

func (c *checker) image() {
	a := c.f.Image
	switch {
	case a.CatalogErr != nil:
		c.add("image", Fail, oneLine(a.CatalogErr.Error()), "fix or remove that catalog file")
	case a.Installed && a.OlderRecipe:
		c.add("image", Warn, fmt.Sprintf("%s (%s) was built from an older form of its recipe: banger was upgraded since, and new VMs miss the recipe's changes", a.Name, a.Dir),
			fmt.Sprintf("`banger image build %s` (running VMs keep the version they boot)", a.Name))
	case a.Installed:
		c.pass("image", "%s is installed (%s)", a.Name, a.Dir)
	case a.Kind == "recipe":
		c.pass("image", "%s is not built yet; `banger vm run` builds it from recipe %s on first use (about 80 s; needs mmdebstrap or debootstrap, and without root subordinate ids)", a.Name, a.Origin)
	case a.Kind == "oci":
		c.pass("image", "%s is not pulled yet; `banger vm run` pulls %s on first use", a.Name, a.Origin)
	case a.Kind == "bundle":
		c.pass("image", "%s is not installed yet; `banger vm run` downloads its bundle %s on first use", a.Name, a.Origin)
	default:
		c.add("image", Fail, fmt.Sprintf("default_image_name %q names no installed image and no catalog entry", a.Name),
			fmt.Sprintf("`banger image pull REF --name %s`, or set default_image_name in %s to one of `banger image list --available`", a.Name, c.f.Config.Path))
	}
}

func (c *checker) kernel() {
	a := c.f.Kernel
	switch {
	case a.CatalogErr != nil:
		c.add("kernel", Fail, oneLine(a.CatalogErr.Error()), "fix or remove that catalog file")
	case a.Installed:
		c.pass("kernel", "%s is installed (%s)", a.Name, a.Dir)
	case a.Kind == "debian":
		c.pass("kernel", "%s is not pulled yet; `banger vm run` pulls %s from the Debian archive on first use (or `banger kernel pull %s`)", a.Name, a.Origin, a.Name)
	case a.Kind == "bundle":
		c.pass("kernel", "%s is not installed yet; `banger vm run` downloads its bundle %s on first use", a.Name, a.Origin)
	default:
		c.add("kernel", Fail, fmt.Sprintf("kernel %q (the default image's) is not installed and no catalog entry names it", a.Name),
			fmt.Sprintf("`banger kernel import %s --vmlinux FILE`, or set default_kernel in %s to one of `banger kernel list --available`", a.Name, c.f.Config.Path))
	}
}

func (c *checker) sshConfig() {
	s := c.f.SSHConfig
	if s.Installed {
		c.pass("ssh-config", "%s includes %s: `ssh NAME.vm` works", s.UserConfig, s.Include)
		return
	}
	c.add("ssh-config", Warn, s.UserConfig+" does not include banger's ssh_config: plain `ssh NAME.vm` (and scp, rsync, editors' remote mode) cannot reach VMs; `banger vm ssh NAME` can",
		"banger ssh-config --install")
}

func (c *checker) dns() {
	d := c.f.DNS
	bridge := c.f.Bridge.Name
	switch {
	case d.NetNS != "":
		c.pass("dns", "guest networking is in network namespace %s: the host does not resolve .vm names by design; use `banger vm ssh` or `banger vm forward`", d.NetNS)
	case d.ResolvedActive && d.Routed:
		c.pass("dns", "systemd-resolved sends *.vm to %s on %s", d.HostIP, bridge)
	case d.ResolvedActive && !c.f.Bridge.Exists:
		maker := "bangerd routes"
		if !c.root() {
			maker = "banger's root helper routes"
		}
		c.pass("dns", "systemd-resolved runs; %s ~vm to %s when it creates %s (with the first VM)", maker, d.HostIP, bridge)
	case d.ResolvedActive:
		c.add("dns", Warn, fmt.Sprintf("systemd-resolved runs but does not send *.vm to banger on %s", bridge),
			fmt.Sprintf("resolvectl dns %s %s && resolvectl domain %s '~vm' (bangerd does this whenever it creates the bridge)", bridge, d.HostIP, bridge))
	case d.Forwarder != "" && d.ForwarderPort != c.f.Config.DNSPort:
		c.add("dns", Warn, fmt.Sprintf("%s forwards .vm to port %d, but dns_port is %d", d.Forwarder, d.ForwarderPort, c.f.Config.DNSPort),
			fmt.Sprintf("make it forward to 127.0.0.1#%d (or set dns_port = %d)", c.f.Config.DNSPort, d.ForwarderPort))
	case d.Forwarder != "":
		c.pass("dns", "%s forwards .vm to 127.0.0.1:%d", d.Forwarder, d.ForwarderPort)
	case len(d.Nameservers) > 0 && d.Nameservers[0] == d.HostIP.String():
		c.pass("dns", "/etc/resolv.conf asks banger (%s) first", d.HostIP)
	default:
		c.add("dns", Warn, "nothing sends .vm names to banger's DNS server (no systemd-resolved, no dnsmasq or unbound forward): `ssh NAME.vm` and http://NAME.vm do not resolve on the host",
			fmt.Sprintf("with dnsmasq: echo 'server=/vm/127.0.0.1#%d' > /etc/dnsmasq.d/banger.conf && systemctl restart dnsmasq; other setups: docs/dns-routing.md", c.f.Config.DNSPort))
	}
}

// fcBootDoc is where Firecracker documents the two host settings below.
const fcBootDoc = "Firecracker's docs/prod-host-setup.md, \"Linux 6.1 boot time regressions\""

// pitfallsApply says whether the 6.1+ KVM_CREATE_VM latency pitfalls matter here, and if not,
// why not.
func (c *checker) pitfallsApply() (bool, string) {
	if c.f.GOARCH != "amd64" {
		return false, "not an x86-64 host"
	}
	if !kernelAtLeast(c.f.KernelRelease, 6, 1) {
		return false, "host kernel " + dash(c.f.KernelRelease) + " is older than 6.1"
	}
	if c.f.KVM.Accel.Accel != host.KVM {
		return false, "guests run under TCG here, not KVM"
	}
	return true, ""
}

func (c *checker) favordynmods() {
	cg := c.f.Cgroup
	state := "off"
	if cg.FavorDynmods || cg.Cmdline {
		state = "on"
	}
	if ok, why := c.pitfallsApply(); !ok {
		c.pass("favordynmods", "not relevant: %s (cgroup favordynmods is %s)", why, state)
		return
	}
	if state == "on" {
		c.pass("favordynmods", "cgroup favordynmods is on: creating a VM does not wait on the cgroup lock")
		return
	}
	detail := "cgroup favordynmods is off: on 6.1+ hosts every VM start (KVM_CREATE_VM) can wait tens of milliseconds on the cgroup lock (" + fcBootDoc + ")"
	if cg.V2Root {
		c.add("favordynmods", Warn, detail, "mount -o remount,favordynmods /sys/fs/cgroup (until reboot; to keep it, add cgroup_favordynmods=true to the kernel command line)")
		return
	}
	c.add("favordynmods", Warn, detail+"; cgroup v1 cannot be remounted with it",
		"add cgroup_favordynmods=true to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot")
}

func (c *checker) nxHugePages() {
	nx := c.f.NX
	facts := fmt.Sprintf("kvm.nx_huge_pages=%s, itlb_multihit: %s", dash(nx.Param), dash(nx.ITLB))
	if ok, why := c.pitfallsApply(); !ok {
		c.pass("nx_huge_pages", "not relevant: %s (%s)", why, facts)
		return
	}
	switch {
	case nx.Param == "never":
		c.pass("nx_huge_pages", "%s: no recovery thread per VM", facts)
	case nx.ITLB != "Not affected":
		c.pass("nx_huge_pages", "%s: the CPU is affected by iTLB multihit, so KVM's mitigation stays on (favordynmods is the remedy for boot latency)", facts)
	default:
		c.add("nx_huge_pages", Warn, facts+": the CPU is not affected, yet KVM starts a recovery thread in every VM's cgroup, which costs boot latency on 6.1+ ("+fcBootDoc+")",
			"with no VM running: KVM_VENDOR_MOD=$(lsmod | grep -P '^kvm_(amd|intel)' | awk '{print $1}'); modprobe -r $KVM_VENDOR_MOD kvm && modprobe kvm nx_huge_pages=never && modprobe $KVM_VENDOR_MOD; to keep it: echo 'options kvm nx_huge_pages=never' > /etc/modprobe.d/kvm-nx-huge-pages.conf")
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine folds a multi-line message into one line.
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// gib renders bytes in GiB with one decimal.
func gib(n uint64) string {
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// versionLess compares dotted version numbers ("1.47.0" < "1.43" is false). An unparsable
// version is not less than anything: the check then trusts the tool.
func versionLess(v, w string) bool {
	a, okA := parseDotted(v)
	b, okB := parseDotted(w)
	if !okA || !okB {
		return false
	}
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func parseDotted(s string) ([]int, bool) {
	if s == "" {
		return nil, false
	}
	var out []int
	for _, p := range strings.Split(s, ".") {
		n := 0
		digits := 0
		for _, r := range p {
			if r < '0' || r > '9' {
				break
			}
			n = n*10 + int(r-'0')
			digits++
		}
		if digits == 0 {
			return out, len(out) > 0
		}
		out = append(out, n)
		if digits < len(p) { // "1.0.128+nmu2": stop at the first non-digit
			break
		}
	}
	return out, true
}

// kernelAtLeast reports whether a release such as "6.18.44-fc-v769" is at least major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	v, ok := parseDotted(release)
	if !ok || len(v) < 2 {
		return false
	}
	return v[0] > major || (v[0] == major && v[1] >= minor)
}
