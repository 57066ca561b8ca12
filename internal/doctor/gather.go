package doctor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/ext4"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/roothelper"
	"github.com/banger-dev/banger/internal/sshkeys"
	"github.com/banger-dev/banger/internal/userns"
	"github.com/banger-dev/banger/internal/version"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
	"github.com/banger-dev/banger/internal/vmm/qemu"
)

// Env is where Gather looks. Every field but Layout has a default for the real host.
type Env struct {
	// Root is the filesystem root that /proc, /sys, /dev, /etc and /lib are read under
	// ("/" by default); tests point it at a fake tree.
	Root   string
	Layout paths.Layout
	UID    int
	// LookPath finds a host tool (default ext4.LookTool: PATH, then the sbin directories).
	LookPath func(name string) (string, error)
	// Output runs a program and returns its stdout and stderr together (default: exec with
	// a timeout).
	Output func(ctx context.Context, name string, args ...string) (string, error)
	// Net reads the network facts that live in the kernel rather than in files (default:
	// read-only netlink and nftables queries, in the configured network namespace).
	Net func(cfg config.Config, l paths.Layout) NetFacts
	// Daemon asks the daemon who it is without starting it (default: GET /v1/version with a
	// short timeout).
	Daemon func(ctx context.Context, socket string) Daemon
	// Firecracker probes the Firecracker binary and jailer as the daemon's driver would
	// (default: the real driver, configured from cfg); the vmm.Probe is what vmm.Choose
	// decides on.
	Firecracker func(ctx context.Context, cfg config.Config) (Firecracker, Jailer, vmm.Probe)
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// Helper asks banger's root helper on socket hello for netw, as an unprivileged daemon
	// would dial it, and returns the helper's build and whether it starts Firecracker jails
	// (default: roothelper.Dial, Client.Hello and Client.JailsReady). Gather calls it only
	// when UID is not 0.
	Helper func(socket string, netw roothelper.Network) (version string, jails bool, err error)
	// UserGroups reads the user's name and the gids the user and group databases give the
	// user (primary included); GroupID the gid of a group name (default: package os/user).
	UserGroups func(uid int) (name string, gids []int, err error)
	GroupID    func(name string) (int, error)
	// ProcessGroups is this process's gid and supplementary gids (default: getgid, getgroups).
	ProcessGroups func() ([]int, error)
}

// NetFacts are the facts Env.Net reads.
type NetFacts struct {
	BridgeExists bool
	BridgeType   string
	BridgeErr    error
	// BridgeReadErr is why the bridge could not be looked at in its namespace (entering a
	// namespace takes CAP_SYS_ADMIN: not root).
	BridgeReadErr  error
	NFTables       NFTables
	ResolvedActive bool
	Routed         bool
}

func (e *Env) defaults() {
	if e.Root == "" {
		e.Root = "/"
	}
	if e.LookPath == nil {
		e.LookPath = ext4.LookTool
	}
	if e.Output == nil {
		e.Output = output
	}
	if e.Net == nil {
		e.Net = realNet
	}
	if e.Daemon == nil {
		e.Daemon = askDaemon
	}
	if e.Firecracker == nil {
		e.Firecracker = probeFirecracker
	}
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.Helper == nil {
		e.Helper = askHelper
	}
	if e.UserGroups == nil {
		e.UserGroups = userGroups
	}
	if e.GroupID == nil {
		e.GroupID = groupID
	}
	if e.ProcessGroups == nil {
		e.ProcessGroups = processGroups
	}
}

// output runs a program with a timeout and returns what it printed on stdout and stderr.
func output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *Env) path(p string) string { return filepath.Join(e.Root, p) }

func (e *Env) read(p string) string {
	b, err := os.ReadFile(e.path(p))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (e *Env) exists(p string) bool {
	_, err := os.Stat(e.path(p))
	return err == nil
}

// Gather reads every fact the checks need. It changes nothing on the host and never starts
// the daemon; the only programs it runs are the tools' own --version (and QEMU's machine
// list), and its only network traffic is to the daemon's unix socket, read-only netlink
// queries and, when not root, one hello to banger's root helper (which changes nothing;
// where systemd activates the helper on its socket, that connection may start it, as the
// daemon's first request would).
func Gather(ctx context.Context, env Env) Facts {
	env.defaults()
	l := env.Layout
	f := Facts{
		GOARCH:        runtime.GOARCH,
		KernelRelease: env.read("/proc/sys/kernel/osrelease"),
		UID:           env.UID,
		CLI:           version.Get(),
		Layout:        l,
	}
	f.Config, f.ConfigErr = config.Load(l)
	if f.ConfigErr != nil {
		f.Config = config.Default(l)
	}
	if _, err := os.Stat(f.Config.Path); err == nil {
		f.ConfigExists = true
	}
	// The daemon lets BANGER_NETWORK_NAMESPACE override network_namespace (tests and CI).
	if ns := env.Getenv("BANGER_NETWORK_NAMESPACE"); ns != "" {
		f.Config.NetworkNamespace = ns
	}
	cfg := f.Config
	if hf, err := host.Root(env.Root).ReadFacts(); err == nil {
		f.Host = config.HostFacts{CPUs: hf.CPUs, MemoryBytes: hf.MemoryBytes}
	}

	f.KVM = gatherKVM(&env)
	f.VMM.Accel = f.KVM.Accel
	var fcProbe vmm.Probe
	f.Firecracker, f.Jailer, fcProbe = env.Firecracker(ctx, cfg)
	f.QEMU = gatherQEMU(ctx, &env, cfg)
	// The daemon's drivers, in its order of preference.
	f.VMM.Drivers = []vmm.Probe{fcProbe, f.QEMU.probe(cfg)}
	f.Tools = gatherTools(ctx, &env)
	f.DebianKeyring = env.exists("/usr/share/keyrings/debian-archive-keyring.gpg")
	f.Subordinate = gatherSubordinate(&env)
	helperCfg := helperConfig(&env)
	f.Groups = gatherGroups(&env, helperCfg.Group)
	f.Helper = gatherHelper(&env, cfg)
	// Without root the daemon's Firecracker driver asks the helper for jails; the probe above
	// had no helper to ask.
	if env.UID != 0 && f.Helper.Err == nil && f.Helper.Jails && errors.Is(fcProbe.Err, firecracker.ErrNeedsRoot) {
		fcProbe.Err = nil
		f.VMM.Drivers[0] = fcProbe
	}

	st, err := os.Stat(env.path("/dev/net/tun"))
	f.Tun = Tun{Exists: err == nil, StatErr: err, Required: true}
	if err == nil {
		f.Tun.CharDev = st.Mode()&os.ModeCharDevice != 0
	}

	nf := env.Net(cfg, l)
	f.Bridge = Bridge{Name: cfg.BridgeName, Module: bridgeModule(&env, f.KernelRelease),
		Exists: nf.BridgeExists, Type: nf.BridgeType, Err: nf.BridgeErr, ReadErr: nf.BridgeReadErr}
	f.NFTables = nf.NFTables

	f.Disk = gatherDisk(l.StateDir)
	f.Daemon = env.Daemon(ctx, l.Socket)
	if !f.Daemon.Running && f.Daemon.Err == nil && f.Daemon.SocketErr == nil {
		f.Daemon.Binary, f.Daemon.BinaryErr = client.DaemonBinary()
		if f.Daemon.BinaryErr == nil {
			f.Daemon.Agent, f.Daemon.AgentErr = paths.Agent(f.Daemon.Binary, env.Getenv)
		}
	}

	f.Image, f.Kernel = gatherArtifacts(l, cfg)

	userConfig := filepath.Join(l.Home, ".ssh", "config")
	f.SSHConfig = SSHConfig{UserConfig: userConfig, Include: filepath.Join(l.ConfigDir, "ssh_config"), Installed: sshkeys.Installed(userConfig)}

	f.DNS = DNS{NetNS: cfg.NetworkNamespace, ResolvedActive: nf.ResolvedActive, Routed: nf.Routed,
		Nameservers: nameservers(env.read("/etc/resolv.conf")), HostIP: cfg.BridgeCIDR.Addr().Next()}
	f.DNS.Forwarder, f.DNS.ForwarderPort = findForwarder(&env)

	f.Cgroup = gatherCgroup(&env)
	f.NX = NX{Param: env.read("/sys/module/kvm/parameters/nx_huge_pages"), ITLB: env.read("/sys/devices/system/cpu/vulnerabilities/itlb_multihit")}
	return f
}

func gatherKVM(env *Env) KVM {
	k := KVM{Accel: host.Root(env.Root).DetectAccel()}
	dev := env.path("/dev/kvm")
	if _, err := os.Stat(dev); err == nil {
		k.Exists = true
		if fd, err := os.OpenFile(dev, os.O_RDWR, 0); err != nil {
			k.OpenErr = err
		} else {
			fd.Close()
		}
	}
	for _, m := range []string{"kvm_intel", "kvm_amd", "kvm_pvm"} {
		if env.exists("/sys/module/" + m) {
			k.Modules = append(k.Modules, m)
		}
	}
	for _, line := range strings.Split(env.read("/proc/cpuinfo"), "\n") {
		key, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(key) == "flags" {
			for _, fl := range strings.Fields(v) {
				if fl == "vmx" || fl == "svm" {
					k.CPUVirt = true
				}
			}
			break
		}
	}
	return k
}

// probeFirecracker asks the Firecracker driver, configured as the daemon configures it, about
// its binary and jailer.
func probeFirecracker(ctx context.Context, cfg config.Config) (Firecracker, Jailer, vmm.Probe) {
	d := &firecracker.Driver{Settings: func() firecracker.Settings { return firecracker.SettingsFrom(cfg) }}
	var fc Firecracker
	fc.Info, fc.Err = d.Inspect(ctx)
	var j Jailer
	j.Status, j.Err = d.JailerStatus(ctx)
	return fc, j, d.Probe(ctx)
}

// probe is what the QEMU driver's Probe says about the binary doctor found (or did not).
func (q QEMU) probe(cfg config.Config) vmm.Probe {
	name := qemu.SettingsFrom(cfg).Binary
	if name == "" {
		name = qemu.DefaultBinary
	}
	return qemu.ProbeResult(name, q.Binary, q.Err)
}

var (
	qemuVersionRE = regexp.MustCompile(`version (\d+\.\d+(?:\.\d+)?)`)
	dottedRE      = regexp.MustCompile(`\b\d+(?:\.\d+)+`)
	numberRE      = regexp.MustCompile(`\b\d+\b`)
)

func gatherQEMU(ctx context.Context, env *Env, cfg config.Config) QEMU {
	name := cfg.QEMUBin
	if name == "" {
		name = qemu.DefaultBinary
	}
	var q QEMU
	q.Binary, q.Err = env.LookPath(name)
	if q.Err != nil {
		q.Err = fmt.Errorf("%s not found", name)
		return q
	}
	out, _ := env.Output(ctx, q.Binary, "--version")
	if m := qemuVersionRE.FindStringSubmatch(out); m != nil {
		q.Version = m[1]
	}
	machines, _ := env.Output(ctx, q.Binary, "-machine", "help")
	for _, line := range strings.Split(machines, "\n") {
		if fs := strings.Fields(line); len(fs) > 0 && fs[0] == "microvm" {
			q.Microvm = true
		}
	}
	return q
}

// toolVersions are the tools doctor looks for and how each tells its version.
var toolVersions = []struct {
	name string
	args []string
	// parse picks the version out of the output's first line.
	parse func(first string) string
}{
	{"mkfs.ext4", []string{"-V"}, firstNumber},                              // mke2fs 1.47.0 (5-Feb-2023)
	{"mmdebstrap", []string{"--version"}, firstNumber},                      // mmdebstrap 1.3.5
	{"debootstrap", []string{"--version"}, firstNumber},                     // debootstrap 1.0.128+nmu2+deb12u2
	{"ssh", []string{"-V"}, func(s string) string { return firstField(s) }}, // OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL …
	{"git", []string{"--version"}, firstNumber},                             // git version 2.39.5
	{"depmod", []string{"--version"}, firstNumber},                          // kmod version 30
}

// firstNumber picks the first dotted version ("mke2fs 1.47.0" → "1.47.0"), else the first
// whole number ("kmod version 30" → "30").
func firstNumber(s string) string {
	if v := dottedRE.FindString(s); v != "" {
		return v
	}
	return numberRE.FindString(s)
}

func firstField(s string) string {
	s, _, _ = strings.Cut(s, ",")
	if fs := strings.Fields(s); len(fs) > 0 {
		return fs[0]
	}
	return ""
}

func gatherTools(ctx context.Context, env *Env) map[string]Tool {
	tools := map[string]Tool{}
	for _, tv := range toolVersions {
		var t Tool
		t.Path, t.Err = env.LookPath(tv.name)
		if t.Err == nil {
			out, _ := env.Output(ctx, t.Path, tv.args...)
			first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
			t.Version = tv.parse(first)
		}
		tools[tv.name] = t
	}
	return tools
}

// gatherSubordinate reads the user's subordinate ids and looks for newuidmap and newgidmap.
func gatherSubordinate(env *Env) Subordinate {
	s := Subordinate{User: userns.UserName(uint32(env.UID))}
	s.NewUIDMap.Path, s.NewUIDMap.Err = env.LookPath("newuidmap")
	s.NewGIDMap.Path, s.NewGIDMap.Err = env.LookPath("newgidmap")
	s.MaxUserNamespaces = env.read("/proc/sys/user/max_user_namespaces")
	s.UnprivilegedClone = env.read("/proc/sys/kernel/unprivileged_userns_clone")
	s.AppArmorRestrict = env.read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
	uids, uerr := userns.ReadSubIDFile(env.path(userns.SubUIDFile))
	gids, gerr := userns.ReadSubIDFile(env.path(userns.SubGIDFile))
	if s.Err = errors.Join(uerr, gerr); s.Err != nil {
		return s
	}
	s.UIDs = userns.Owned(uids, s.User, uint32(env.UID))
	s.GIDs = userns.Owned(gids, s.User, uint32(env.UID))
	s.Free = userns.FreeRange(uids, gids)
	return s
}

// bridgeModule says how the kernel has bridging: loaded, built in, or installed as a module.
func bridgeModule(env *Env, release string) string {
	if env.exists("/sys/module/bridge") {
		return "loaded"
	}
	dir := "/lib/modules/" + release
	if strings.Contains(env.read(dir+"/modules.builtin"), "/bridge.ko") {
		return "builtin"
	}
	if strings.Contains(env.read(dir+"/modules.dep"), "/bridge.ko") {
		return "loadable"
	}
	return ""
}

// realNet reads the bridge, nftables and systemd-resolved state, read-only, in the configured
// network namespace.
func realNet(cfg config.Config, l paths.Layout) NetFacts {
	var nf NetFacts
	n, err := hostnet.Open(hostnet.Config{Bridge: cfg.BridgeName, CIDR: cfg.BridgeCIDR, NetNS: cfg.NetworkNamespace, StateDir: l.StateDir})
	if err != nil {
		nf.BridgeErr = err
		nf.NFTables.Err = err
		return nf
	}
	defer n.Close()
	nf.BridgeReadErr = n.Do(func() error {
		link, err := netlink.LinkByName(cfg.BridgeName)
		if err == nil {
			nf.BridgeExists, nf.BridgeType = true, link.Type()
		}
		conn, err := nftables.New()
		if err != nil {
			nf.NFTables.Err = err
			return nil
		}
		if _, err := conn.ListTables(); err != nil {
			nf.NFTables.Err = err
		}
		return nil
	})
	if nf.NFTables.Err == nil {
		if st, err := n.Filter(); err != nil {
			nf.NFTables.Err = err
		} else {
			nf.NFTables.Filter = st
		}
	}
	nf.NFTables.OpenPorts = cfg.HostPortsOpenToGuests
	nf.ResolvedActive = n.ResolvedActive()
	if nf.ResolvedActive && nf.BridgeExists {
		nf.Routed, _ = n.DomainRouted()
	}
	return nf
}

func gatherDisk(dir string) Disk {
	d := Disk{Path: dir}
	// The state dir may not exist yet: measure the filesystem it will be on.
	for {
		if _, err := os.Stat(d.Path); err == nil || d.Path == "/" || d.Path == "." {
			break
		}
		d.Path = filepath.Dir(d.Path)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.Path, &st); err != nil {
		d.Err = err
		return d
	}
	d.Free = st.Bavail * uint64(st.Bsize)
	d.Total = st.Blocks * uint64(st.Bsize)
	return d
}

// askDaemon asks the daemon on socket who it is, with a short timeout and without starting
// it, and looks at the socket file's mode and owner.
func askDaemon(ctx context.Context, socket string) Daemon {
	d := Daemon{Socket: socket}
	if err := paths.CheckSocketPath(socket); err != nil {
		d.SocketErr = err
		return d
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	v, err := client.New(socket).Version(ctx)
	switch {
	case errors.Is(err, client.ErrNoDaemon):
		return d
	case err != nil:
		d.Err = err
		return d
	}
	d.Running, d.Version = true, v
	st, err := os.Stat(socket)
	if err != nil {
		d.StatErr = err
		return d
	}
	d.SocketMode = st.Mode()
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		d.SocketUID = int(sys.Uid)
	}
	return d
}

// gatherArtifacts finds the default image and the kernel it boots: installed, or what the
// catalogs say about them.
func gatherArtifacts(l paths.Layout, cfg config.Config) (img, kern Artifact) {
	img = Artifact{Name: cfg.DefaultImageName}
	cat, err := catalogfile.Load(l.ConfigDir)
	if err != nil {
		img.CatalogErr = err
	}
	kernelName := ""
	for _, e := range cat.Images {
		if e.Name == img.Name {
			img.Kind, kernelName = e.Kind, e.Kernel
			switch {
			case e.Recipe != "":
				img.Origin = e.Recipe
			case e.OCI != "":
				img.Origin = e.OCI
			case e.Bundle != nil:
				img.Origin = e.Bundle.URL
			}
		}
	}
	if dir, m, ok := installedImage(filepath.Join(l.ImagesDir(), img.Name)); ok {
		img.Installed, img.Dir, img.OlderRecipe = true, dir, m.FromOlderRecipe()
		if m.Kernel != "" {
			kernelName = m.Kernel
		}
	}
	if kernelName == "" {
		kernelName = cfg.DefaultKernel
	}
	kern = Artifact{Name: kernelName, CatalogErr: img.CatalogErr}
	for _, e := range cat.Kernels {
		if e.Name == kern.Name {
			kern.Kind = e.Kind
			switch {
			case e.Debian != nil:
				kern.Origin = e.Debian.Package + " (" + e.Debian.Suite + ")"
			case e.Bundle != nil:
				kern.Origin = e.Bundle.URL
			}
		}
	}
	kdir := filepath.Join(l.KernelsDir(), kern.Name)
	if _, err := os.Stat(filepath.Join(kdir, "vmlinux")); err == nil {
		kern.Installed, kern.Dir = true, kdir
	}
	return img, kern
}

// installedImage looks for an installed version of an image (images/<name>/<version>/
// rootfs.ext4, or the older images/<name>/rootfs.ext4) and returns the newest one's directory
// and its manifest (zero when unreadable).
func installedImage(dir string) (string, image.Manifest, bool) {
	var best string
	var bestTime time.Time
	consider := func(d string) {
		st, err := os.Stat(filepath.Join(d, "rootfs.ext4"))
		if err == nil && (best == "" || st.ModTime().After(bestTime)) {
			best, bestTime = d, st.ModTime()
		}
	}
	consider(dir)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			consider(filepath.Join(dir, e.Name()))
		}
	}
	if best == "" {
		return "", image.Manifest{}, false
	}
	var m image.Manifest
	if b, err := os.ReadFile(filepath.Join(best, image.ManifestFile)); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	return best, m, true
}

func nameservers(resolvConf string) []string {
	var out []string
	for _, line := range strings.Split(resolvConf, "\n") {
		if fs := strings.Fields(line); len(fs) >= 2 && fs[0] == "nameserver" {
			out = append(out, fs[1])
		}
	}
	return out
}

var (
	dnsmasqVM = regexp.MustCompile(`(?m)^\s*server=/vm/127\.0\.0\.1(?:#(\d+))?\s*$`)
	unboundVM = regexp.MustCompile(`(?s)name:\s*"?vm\.?"?\s.*?forward-addr:\s*127\.0\.0\.1(?:@(\d+))?`)
)

// findForwarder looks for a dnsmasq or unbound configuration that forwards the vm domain to
// banger's loopback port (docs/dns-routing.md), and returns the file and the port.
func findForwarder(env *Env) (string, int) {
	try := func(pattern string, re *regexp.Regexp, defPort int) (string, int) {
		files, _ := filepath.Glob(env.path(pattern))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			if m := re.FindSubmatch(b); m != nil {
				port := defPort
				if len(m[1]) > 0 {
					port, _ = strconv.Atoi(string(m[1]))
				}
				rel, _ := filepath.Rel(env.Root, f)
				return "/" + rel, port
			}
		}
		return "", 0
	}
	for _, p := range []string{"/etc/dnsmasq.d/*", "/etc/dnsmasq.conf", "/etc/NetworkManager/dnsmasq.d/*"} {
		if f, port := try(p, dnsmasqVM, 53); f != "" {
			return f, port
		}
	}
	for _, p := range []string{"/etc/unbound/unbound.conf", "/etc/unbound/unbound.conf.d/*"} {
		if f, port := try(p, unboundVM, 53); f != "" {
			return f, port
		}
	}
	return "", 0
}

func gatherCgroup(env *Env) Cgroup {
	var cg Cgroup
	f, err := os.Open(env.path("/proc/mounts"))
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 4 || (fs[2] != "cgroup" && fs[2] != "cgroup2") {
				continue
			}
			if fs[2] == "cgroup2" && fs[1] == "/sys/fs/cgroup" {
				cg.V2Root = true
			}
			for _, o := range strings.Split(fs[3], ",") {
				if o == "favordynmods" {
					cg.FavorDynmods = true
				}
			}
		}
	}
	for _, arg := range strings.Fields(env.read("/proc/cmdline")) {
		if arg == "--" {
			break // the rest is for init
		}
		if k, v, ok := strings.Cut(arg, "="); ok && k == "cgroup_favordynmods" {
			switch strings.ToLower(v) {
			case "true", "1", "y", "yes", "on":
				cg.Cmdline = true
			}
		}
	}
	return cg
}

// helperConfig is the root helper's configuration as far as this user can read it: banger's
// defaults when the file is missing or unreadable (it is root's).
func helperConfig(env *Env) roothelper.Config {
	path := env.path(roothelper.DefaultConfigPath)
	if _, err := os.Stat(path); err != nil {
		return roothelper.DefaultConfig()
	}
	cfg, err := roothelper.LoadConfig(path)
	if err != nil {
		return roothelper.DefaultConfig()
	}
	return cfg
}

// gatherGroups reads the user's memberships in the root helper's group and in /dev/kvm's.
func gatherGroups(env *Env, helperGroup string) Groups {
	if helperGroup == "" {
		helperGroup = roothelper.DefaultGroup
	}
	var g Groups
	var member []int
	var err error
	g.User, member, err = env.UserGroups(env.UID)
	g.Process, g.Err = env.ProcessGroups()
	g.Err = errors.Join(err, g.Err)
	g.Banger = Group{Name: helperGroup, GID: -1, Needed: true}
	if gid, err := env.GroupID(helperGroup); err == nil {
		g.Banger.GID = gid
		g.Banger.Member = slices.Contains(member, gid)
	}
	g.KVM = Group{Name: "kvm", GID: -1}
	if st, err := os.Stat(env.path("/dev/kvm")); err == nil {
		g.KVMExists, g.KVMMode = true, st.Mode()
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Gid != 0 {
			g.KVM.GID = int(sys.Gid)
			// Membership matters when the group may open it and everyone may not.
			g.KVM.Needed = st.Mode().Perm()&0o060 == 0o060 && st.Mode().Perm()&0o006 != 0o006
			g.KVM.Member = slices.Contains(member, g.KVM.GID)
			if name := groupName(g.KVM.GID); name != "" {
				g.KVM.Name = name
			} else {
				g.KVM.Name = strconv.Itoa(g.KVM.GID)
			}
		}
	}
	return g
}

// userGroups reads the user's name and every gid the databases give the user.
func userGroups(uid int) (string, []int, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return "", nil, err
	}
	ids, err := u.GroupIds()
	if err != nil {
		return u.Username, nil, fmt.Errorf("groups of %s: %w", u.Username, err)
	}
	var gids []int
	for _, id := range append(ids, u.Gid) {
		if n, err := strconv.Atoi(id); err == nil {
			gids = append(gids, n)
		}
	}
	return u.Username, gids, nil
}

func groupID(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}

func groupName(gid int) string {
	g, err := user.LookupGroupId(strconv.Itoa(gid))
	if err != nil {
		return ""
	}
	return g.Name
}

func processGroups() ([]int, error) {
	gs, err := os.Getgroups()
	if err != nil {
		return nil, fmt.Errorf("this process's groups: %w", err)
	}
	return append(gs, os.Getgid()), nil
}

// helperUnitDirs are where systemd looks for banger-helper.socket (make install puts it in
// PREFIX/lib/systemd/system).
var helperUnitDirs = []string{"/etc/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"}

// helperBinaries are where make install puts banger-helper (PREFIX/lib/banger).
var helperBinaries = []string{"/usr/local/lib/banger/banger-helper", "/usr/lib/banger/banger-helper"}

// gatherHelper asks banger's root helper hello on the socket the daemon would use, for the
// network the daemon would ask for, and looks for its unit and binary. As root it asks
// nothing: a root daemon does the networking itself.
func gatherHelper(env *Env, cfg config.Config) Helper {
	h := Helper{Socket: cfg.HelperSocket, Config: roothelper.DefaultConfigPath, Systemd: env.exists("/run/systemd/system")}
	if v := env.Getenv("BANGER_HELPER_SOCKET"); v != "" && filepath.IsAbs(v) {
		h.Socket = v // as the daemon does
	}
	for _, d := range helperUnitDirs {
		if p := filepath.Join(d, "banger-helper.socket"); env.exists(p) {
			h.Unit = p
			break
		}
	}
	for _, p := range helperBinaries {
		if env.exists(p) {
			h.Binary = p
			break
		}
	}
	if env.UID == 0 {
		return h
	}
	// The helper takes namespaces by name: a path is accepted when it is /run/netns/<name>,
	// as the daemon's dialHelper does.
	ns := cfg.NetworkNamespace
	if strings.Contains(ns, "/") {
		if filepath.Dir(ns) != "/run/netns" {
			h.Err = failure.New(failure.Invalid, "network namespace %s: the root helper works in namespaces under /run/netns only; name one (`ip netns add NAME`)", ns)
			return h
		}
		ns = filepath.Base(ns)
	}
	h.Version, h.Jails, h.Err = env.Helper(h.Socket, roothelper.Network{Bridge: cfg.BridgeName, CIDR: cfg.BridgeCIDR.String(), Namespace: ns})
	return h
}

// askHelper dials the root helper as the daemon does and asks it hello, and whether it
// starts jails.
func askHelper(socket string, netw roothelper.Network) (string, bool, error) {
	c, err := roothelper.Dial(socket, netw, nil)
	if err != nil {
		return "", false, err
	}
	defer c.Close()
	v, _, err := c.Hello()
	if err != nil {
		return v, false, err
	}
	return v, c.JailsReady() == nil, nil
}
