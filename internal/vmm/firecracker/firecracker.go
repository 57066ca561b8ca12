// Package firecracker is the Firecracker driver of package vmm: one `firecracker` process per
// VM (through the jailer when one is available), configured over its HTTP API on a unix
// socket, with the guest agent reached over vsock. Firecracker needs hardware KVM; the choice
// between it and QEMU is made above this package (see Driver.Probe).
package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/fcjail"
	"github.com/banger-dev/banger/internal/vmm"
)

// DefaultBinary is looked up in PATH when no binary is configured.
const DefaultBinary = "firecracker"

// Name is the driver's config and record name.
const Name = "firecracker"

// DefaultBootArgs are the kernel arguments every Firecracker guest gets before the caller's
// own (so that the caller's win where both set one, e.g. panic=): the serial console, reboot
// through the keyboard controller (Firecracker exits when the guest reboots or powers off),
// no PCI probing (Firecracker's devices are virtio-mmio, described by ACPI, which stays on),
// and no probing of i8042 features Firecracker does not emulate (the controller itself stays:
// SendCtrlAltDel goes through it).
const DefaultBootArgs = "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"

// GuestCID is the guest's vsock context id. Firecracker's vsock is a per-VM unix socket on
// the host, so every VM can use the same one.
const GuestCID = 3

// Files in the VM directory and sockets in the runtime directory.
const (
	consoleFile = "console.log"
	logFile     = "firecracker.log"
	metricsFile = "firecracker.metrics"
	apiSocket   = "api.sock"
	vsockSocket = "vsock.sock"
	consoleFIFO = "console.fifo"
)

// socketWait bounds how long Start waits for the API socket.
const socketWait = 10 * time.Second

// Settings are the driver's part of config.toml.
type Settings struct {
	// Binary is the firecracker to run (a path, or a name looked up in PATH); "" means
	// DefaultBinary.
	Binary string
	// Jailer configures the jailer.
	Jailer JailerOptions
}

// SettingsFrom picks the driver's settings out of a config.
func SettingsFrom(c config.Config) Settings {
	return Settings{Binary: c.FirecrackerBin, Jailer: JailerOptions{
		Enabled: c.JailerEnabled, Binary: c.JailerBin, ChrootBase: c.JailerChrootBase,
		UID: c.JailerUID, GID: c.JailerGID,
	}}
}

// Driver starts Firecracker microVMs.
type Driver struct {
	// Binary and Jailer are used when Settings is nil.
	Binary string
	Jailer JailerOptions
	// Settings, when set, supplies the settings afresh for every operation (the daemon
	// re-reads config.toml, so that edits apply without a restart); Binary and Jailer are
	// used otherwise.
	Settings func() Settings
	// EUID is the effective uid the driver runs as (nil: os.Geteuid). As root the driver
	// runs the jailer itself (Settings); otherwise every VM is jailed by Jails.
	EUID func() int
	// Jails starts and runs the jails of a driver that does not run as root (banger's root
	// helper); nil: such a driver cannot run VMs (Probe says ErrNeedsRoot).
	Jails Jails

	mu sync.Mutex // serializes jail id allocation
}

// ErrNeedsRoot is the kind of Probe's error for a driver that does not run as root and has
// no root helper that starts jails.
var ErrNeedsRoot = errors.New("firecracker needs a bangerd that runs as root, or banger's root helper to start its jails")

// Jails is who makes jails for a driver that does not run as root: banger's root helper
// (roothelper.Client), which runs the jailer with the binaries and jail base of its own
// configuration. Every VM then runs jailed, as a uid of its own, its files linked into the jail
// (fcjail.Spec). Contract:
//   - JailsReady returns nil when jails can be started, else an error that says what to do.
//   - StartJail makes the caller's jail spec.ID (replacing a stale one of the caller's; a
//     running one is an error), places the files, gives the tap to the jail's group, and
//     starts Firecracker there serving fcjail.APISocketArg; all or nothing. The caller owns
//     the returned pidfd and keeps its files (and closes them).
//   - DialJail connects to the jail's "api" or "vsock" socket, never through a symlink and
//     only to a socket the jail's uid serves; an error that errors.Is os.ErrNotExist means
//     not served (yet).
//   - KillJail sends SIGKILL to the jail's Firecracker if it runs; it returns without waiting.
//   - RemoveJail kills it if it runs, gives the caller's files and tap back and removes the
//     jail; a missing jail is fine. None of them touches another uid's jail.
//   - JailIDs lists the caller's jails (running or not).
type Jails interface {
	JailsReady() error
	JailIDs() ([]string, error)
	StartJail(spec fcjail.Spec) (fcjail.Started, error)
	DialJail(id, socket string) (net.Conn, error)
	KillJail(id string) error
	RemoveJail(id string) error
}

func (d *Driver) euid() int {
	if d.EUID != nil {
		return d.EUID()
	}
	return os.Geteuid()
}

// settings returns the binary and jailer options in force now.
func (d *Driver) settings() (string, JailerOptions) {
	s := Settings{Binary: d.Binary, Jailer: d.Jailer}
	if d.Settings != nil {
		s = d.Settings()
	}
	if s.Binary == "" {
		s.Binary = DefaultBinary
	}
	return s.Binary, s.Jailer
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return Name }

// OpensTapByName implements vmm.TapByName: Firecracker attaches to its tap by name.
func (d *Driver) OpensTapByName() {}

// Probe implements vmm.Driver: Firecracker can run VMs here when a supported binary is found
// (Inspect) and the driver runs as root or has Jails that are ready (else ErrNeedsRoot, and
// vmm = "auto" picks QEMU); it needs KVM.
func (d *Driver) Probe(ctx context.Context) vmm.Probe {
	p := vmm.Probe{Driver: Name, Title: "Firecracker", NeedsKVM: true}
	info, err := d.Inspect(ctx)
	if err != nil {
		p.Err = err
		return p
	}
	p.Found = fmt.Sprintf("firecracker %s at %s", info.Version, info.Binary)
	if uid := d.euid(); uid != 0 {
		// vmm = "auto" then picks QEMU, which gets its tap as a file from the root helper.
		switch {
		case d.Jails == nil:
			p.Err = fmt.Errorf("%w (this one runs as uid %d, and no root helper was reached): use QEMU (vmm = \"qemu\" or \"auto\"), or let banger's root helper start Firecracker's jails", ErrNeedsRoot, uid)
		default:
			if err := d.Jails.JailsReady(); err != nil {
				p.Err = fmt.Errorf("%w (this one runs as uid %d): %v; or use QEMU (vmm = \"qemu\" or \"auto\")", ErrNeedsRoot, uid, err)
			}
		}
	}
	return p
}

// Info is what Inspect found.
type Info struct {
	Binary  string  // resolved path
	Version Version // from `firecracker --version`
}

// Inspect finds the Firecracker binary and checks its version. It returns an error that says
// what is wrong and what to do when this driver cannot run VMs here; it does not look at
// KVM (see host.Root.DetectAccel for that).
func (d *Driver) Inspect(ctx context.Context) (Info, error) {
	name, _ := d.settings()
	bin, err := exec.LookPath(name)
	if err != nil {
		where := "in $PATH"
		if strings.ContainsRune(name, '/') {
			where = "at " + name
		}
		return Info{}, fmt.Errorf("no firecracker binary %s; get a release (%s) from %s and put it in $PATH or set firecracker_bin", where, SupportedRange, ReleasesURL)
	}
	v, err := BinaryVersion(ctx, bin)
	if err != nil {
		return Info{Binary: bin}, fmt.Errorf("firecracker at %s does not run: %w", bin, err)
	}
	info := Info{Binary: bin, Version: v}
	if err := CheckSupported(v); err != nil {
		return info, fmt.Errorf("%s: %w", bin, err)
	}
	return info, nil
}

// JailerStatus says whether VMs would run jailed, with which jailer, and why; an error means
// the configuration requires a jailer that cannot be used. Running without a jailer is not an
// error: `banger doctor` shows it as a warning.
func (d *Driver) JailerStatus(ctx context.Context) (JailerStatus, error) {
	info, _ := d.Inspect(ctx)
	_, jo := d.settings()
	return jo.status(ctx, info.Binary, info.Version)
}

// extra is the driver's part of vmm.Record.
type extra struct {
	Version string `json:"version"`
	// Jail is the jail directory (<chroot base>/<exec name>/<id>), removed with the VM;
	// empty when Firecracker runs unjailed.
	Jail    string `json:"jail,omitempty"`
	JailID  string `json:"jail_id,omitempty"`
	UID     int    `json:"uid,omitempty"`
	GID     int    `json:"gid,omitempty"`
	Jailer  string `json:"jailer,omitempty"`
	JailerV string `json:"jailer_version,omitempty"`
	// ConsoleFIFO is the named pipe Firecracker writes the guest console to (its stdout);
	// the daemon copies it into the capped console log.
	ConsoleFIFO string `json:"console_fifo,omitempty"`
	// The machine's shape, which its snapshots record (absent in records of machines
	// started before snapshots: those cannot be saved).
	VCPU      int  `json:"vcpu,omitempty"`
	MemoryMiB int  `json:"memory_mib,omitempty"`
	Disks     int  `json:"disks,omitempty"`
	NIC       bool `json:"nic,omitempty"`
	// Helper: the jail is the root helper's (a bangerd that is not root), JailID names it
	// there, and Shared are the VM's files the helper gave to the jail's group, with what
	// they had before: the driver, their owner, restores them too when the jail goes.
	Helper bool         `json:"helper,omitempty"`
	Shared []sharedFile `json:"shared,omitempty"`
}

// sharedFile is a VM file given to a helper's jail (its group and permission bits before).
type sharedFile struct {
	Path string `json:"path"`
	GID  int    `json:"gid"`
	Mode uint32 `json:"mode"`
}

// StartTimings are the durations of Start's phases.
type StartTimings struct {
	Socket        time.Duration // process start until the API socket exists
	Configure     time.Duration // every configuration call (logger … vsock)
	InstanceStart time.Duration // the InstanceStart call
	Calls         int           // API calls made, InstanceStart included
}

// Machine is a running Firecracker.
type Machine struct {
	proc    *vmm.Process
	rec     vmm.Record
	ex      extra
	timings StartTimings
	done    <-chan struct{} // the process exited and its console output is in the log
	jails   Jails           // the helper's jails, for a machine in one (ex.Helper)

	cleanOnce sync.Once
	cleanErr  error
}

var (
	_ vmm.Driver     = (*Driver)(nil)
	_ vmm.TapByName  = (*Driver)(nil)
	_ vmm.Machine    = (*Machine)(nil)
	_ vmm.Shutdowner = (*Machine)(nil)
	_ vmm.Pauser     = (*Machine)(nil)
)

// BootArgs is the kernel command line a guest gets for the caller's cmdline.
func BootArgs(cmdline string) string {
	return strings.TrimSpace(DefaultBootArgs + " " + cmdline)
}

// plan is everything Start sends to Firecracker, in order.
type plan struct {
	Logger   Logger
	Metrics  Metrics
	Machine  MachineConfig
	Boot     BootSource
	Drives   []Drive
	Networks []NetworkInterface
	Vsock    Vsock
}

// paths maps host files to the paths Firecracker is given: the same ones unjailed, in-jail
// ones when jailed.
type paths struct {
	kernel, initrd string
	disks          []string
	log, metrics   string
	vsock          string
}

// buildPlan turns a VM config and the paths Firecracker sees into the API requests.
func buildPlan(cfg vmm.Config, p paths) plan {
	pl := plan{
		Logger:  Logger{LogPath: p.log, Level: "Info", ShowLevel: true},
		Metrics: Metrics{MetricsPath: p.metrics},
		Machine: MachineConfig{VCPUCount: cfg.VCPU, MemSizeMiB: cfg.MemoryMiB},
		Boot:    BootSource{KernelImagePath: p.kernel, InitrdPath: p.initrd, BootArgs: BootArgs(cfg.Cmdline)},
		Vsock:   Vsock{GuestCID: GuestCID, UDSPath: p.vsock},
	}
	for i, d := range cfg.Disks {
		pl.Drives = append(pl.Drives, Drive{
			DriveID:      fmt.Sprintf("disk%d", i),
			PathOnHost:   p.disks[i],
			IsRootDevice: false, // the initramfs assembles the root; the guest sees vda, vdb, … in this order
			IsReadOnly:   d.ReadOnly,
		})
	}
	if cfg.NIC != nil {
		pl.Networks = append(pl.Networks, NetworkInterface{IfaceID: "eth0", HostDevName: cfg.NIC.Tap, GuestMAC: cfg.NIC.MAC})
	}
	return pl
}

// apply sends the plan; InstanceStart is separate.
func (pl plan) apply(ctx context.Context, c *Client) (int, error) {
	calls := 0
	step := func(err error) error {
		calls++
		return err
	}
	if err := step(c.PutLogger(ctx, pl.Logger)); err != nil {
		return calls, err
	}
	if err := step(c.PutMetrics(ctx, pl.Metrics)); err != nil {
		return calls, err
	}
	if err := step(c.PutMachineConfig(ctx, pl.Machine)); err != nil {
		return calls, err
	}
	if err := step(c.PutBootSource(ctx, pl.Boot)); err != nil {
		return calls, err
	}
	for _, d := range pl.Drives {
		if err := step(c.PutDrive(ctx, d)); err != nil {
			return calls, err
		}
	}
	for _, n := range pl.Networks {
		if err := step(c.PutNetworkInterface(ctx, n)); err != nil {
			return calls, err
		}
	}
	return calls, step(c.PutVsock(ctx, pl.Vsock))
}

// prepareFile makes an empty log or metrics file for Firecracker to open (it does not create
// them, and writes from offset 0 without truncating, so an old file is moved aside first).
func prepareFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		if err := os.Rename(path, path+".old"); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	m, err := d.StartMachine(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// StartMachine is Start returning the concrete machine (its timings are for tests and
// benchmarks).
func (d *Driver) StartMachine(ctx context.Context, cfg vmm.Config) (*Machine, error) {
	return d.start(ctx, cfg, nil)
}

// start starts Firecracker for cfg and boots it, or, with snap, loads the snapshot into it.
func (d *Driver) start(ctx context.Context, cfg vmm.Config, snap *vmm.Snapshot) (*Machine, error) {
	info, err := d.Inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	if d.euid() != 0 {
		return d.startInHelperJail(ctx, cfg, snap, info)
	}
	_, jo := d.settings()
	js, err := jo.status(ctx, info.Binary, info.Version)
	if err != nil {
		return nil, err
	}
	if len(cfg.Disks) == 0 {
		return nil, errors.New("firecracker: no disks given")
	}

	sockets := map[string]string{
		"api":   filepath.Join(cfg.RuntimeDir, apiSocket),
		"vsock": filepath.Join(cfg.RuntimeDir, vsockSocket),
	}
	if err := vmm.ClearSockets("firecracker", sockets); err != nil {
		return nil, err
	}
	out, err := prepareOutputs(cfg)
	if err != nil {
		return nil, err
	}
	pumping := false
	defer func() {
		if !pumping {
			out.discard()
		}
	}()
	console := out.fifo.Writer

	ex := extra{Version: info.Version.String(), ConsoleFIFO: out.fifoPath,
		VCPU: cfg.VCPU, MemoryMiB: cfg.MemoryMiB, Disks: len(cfg.Disks), NIC: cfg.NIC != nil}
	// Until PUT /logger, Firecracker logs to stdout, which is the guest console: keep it to
	// warnings so that the console holds the guest's output only.
	levelArgs := []string{"--level", "Warning"}
	var p paths
	var cmd *exec.Cmd
	var j jail
	if js.Enabled && snap != nil {
		return nil, errors.New("firecracker: restoring snapshots into a jailed Firecracker is not supported yet; disable the jailer to restore")
	}
	if js.Enabled {
		if j, err = newJail(jo.ChrootBase, info.Binary, cfg.ID); err != nil {
			return nil, err
		}
		d.mu.Lock()
		j.UID, j.GID = jo.UID, jo.GID
		if j.UID == 0 || j.GID == 0 {
			id, err := pickJailID(jo.ChrootBase)
			if err != nil {
				d.mu.Unlock()
				return nil, err
			}
			if j.UID == 0 {
				j.UID = id
			}
			if j.GID == 0 {
				j.GID = id
			}
		}
		err = j.create()
		d.mu.Unlock()
		if err != nil {
			return nil, err
		}
		ex.Jail, ex.JailID, ex.UID, ex.GID = j.Dir, cfg.ID, j.UID, j.GID
		ex.Jailer, ex.JailerV = js.Binary, js.Version.String()
		undo := func() {
			_ = removeJail(j.Dir, cfg.ID)
			for _, s := range sockets {
				_ = os.Remove(s)
			}
		}
		if p, err = placeInJail(&j, cfg, out.log, out.metrics); err != nil {
			undo()
			return nil, err
		}
		// The sockets live in the jail, in directories the jail's uid owns: banger reaches
		// them with dialJailSocket (never through a path or a symlink that uid could redirect),
		// and nothing of them is in the runtime directory.
		sockets = nil
		p.vsock = "/" + jailSockets["vsock"]
		cmd = exec.Command(js.Binary, jailerArgs(j, cfg.ID, info.Binary, jo.ChrootBase,
			append([]string{"--api-sock", "/" + jailSockets["api"]}, levelArgs...))...)
	} else {
		p = paths{kernel: cfg.Kernel, initrd: cfg.Initrd, log: out.log, metrics: out.metrics, vsock: sockets["vsock"]}
		for _, disk := range cfg.Disks {
			p.disks = append(p.disks, disk.Path)
		}
		cmd = exec.Command(info.Binary, append([]string{"--api-sock", sockets["api"], "--id", cfg.ID}, levelArgs...)...)
	}
	// The jailer and Firecracker write their errors to stderr: next to the guest console,
	// where a failed start is reported from.
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.Dir = cfg.Dir
	began := time.Now()
	proc, err := vmm.SpawnIn(cfg.NetNS, cmd)
	console.Close() // Firecracker has its own copy; the pipe ends when it exits
	if err != nil {
		if ex.Jail != "" {
			_ = removeJail(ex.Jail, cfg.ID)
		}
		for _, s := range sockets {
			_ = os.Remove(s)
		}
		return nil, fmt.Errorf("firecracker: start %s: %w", cmd.Path, err)
	}
	rec := vmm.Record{
		Driver:     Name,
		PID:        proc.PID,
		StartTime:  proc.StartTime,
		Sockets:    sockets,
		Console:    filepath.Join(cfg.Dir, consoleFile),
		ConsoleMax: vmm.ConsoleLogCap(cfg.ConsoleLogSize),
		Log:        out.log,
	}
	pumped, err := out.fifo.Pump(rec.Console, rec.ConsoleMax, fmt.Sprintf("banger: firecracker (pid %d) starts the guest", rec.PID))
	if err != nil {
		_ = proc.Kill(10 * time.Second)
		if ex.Jail != "" {
			_ = removeJail(ex.Jail, cfg.ID)
		}
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	pumping = true
	m := newMachine(proc, rec, ex, pumped, nil)
	configure := m.configure
	if snap != nil {
		configure = func(ctx context.Context, began time.Time, pl plan) error { return m.load(ctx, began, pl, *snap) }
	}
	if err := configure(ctx, began, buildPlan(cfg, p)); err != nil {
		_ = m.Kill()
		return nil, err
	}
	return m, nil
}

// placeInJail links (or copies) the VM's files into the jail and returns the in-jail paths.
// outputs are what a starting Firecracker writes besides its disks: its log and metrics
// files and the pipe of its console.
type outputs struct {
	log, metrics, fifoPath string
	fifo                   *vmm.ConsoleFIFO
}

// prepareOutputs makes cfg's directories, the log and metrics files (empty) in cfg.Dir and
// the console pipe in cfg.RuntimeDir. The guest console is Firecracker's stdout: a pipe the
// daemon copies into the capped console log, never a file Firecracker writes without bound.
// A start that does not hand the pipe to its console pump discards it.
func prepareOutputs(cfg vmm.Config) (*outputs, error) {
	for _, dir := range []string{cfg.Dir, cfg.RuntimeDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("firecracker: %w", err)
		}
	}
	o := &outputs{
		log:      filepath.Join(cfg.Dir, logFile),
		metrics:  filepath.Join(cfg.Dir, metricsFile),
		fifoPath: filepath.Join(cfg.RuntimeDir, consoleFIFO),
	}
	for _, f := range []string{o.log, o.metrics} {
		if err := prepareFile(f); err != nil {
			return nil, fmt.Errorf("firecracker: %w", err)
		}
	}
	var err error
	if o.fifo, err = vmm.NewConsoleFIFO(o.fifoPath); err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	return o, nil
}

// discard closes and removes the console pipe.
func (o *outputs) discard() {
	o.fifo.Close()
	os.Remove(o.fifoPath)
}

func placeInJail(j *jail, cfg vmm.Config, logPath, metricsPath string) (paths, error) {
	var p paths
	var err error
	if p.kernel, err = j.place(cfg.Kernel, "kernel", false); err != nil {
		return p, err
	}
	if cfg.Initrd != "" {
		if p.initrd, err = j.place(cfg.Initrd, "initrd", false); err != nil {
			return p, err
		}
	}
	for i, disk := range cfg.Disks {
		jp, err := j.place(disk.Path, fmt.Sprintf("disk%d", i), !disk.ReadOnly)
		if err != nil {
			return p, err
		}
		p.disks = append(p.disks, jp)
	}
	if p.log, err = j.place(logPath, logFile, true); err != nil {
		return p, err
	}
	if p.metrics, err = j.place(metricsPath, metricsFile, true); err != nil {
		return p, err
	}
	return p, nil
}

// consoleDrain bounds how long Done waits, after Firecracker exited, for the console's last
// bytes to reach the log.
const consoleDrain = 5 * time.Second

// newMachine wraps a running process; pumped (nil: no console copy) is closed when its
// console is copied to the end.
func newMachine(proc *vmm.Process, rec vmm.Record, ex extra, pumped <-chan struct{}, jails Jails) *Machine {
	if b, err := json.Marshal(ex); err == nil {
		rec.Extra = b
	}
	m := &Machine{proc: proc, rec: rec, ex: ex, done: proc.Done(), jails: jails}
	if pumped != nil {
		done := make(chan struct{})
		go func() {
			<-proc.Done()
			select {
			case <-pumped:
			case <-time.After(consoleDrain):
			}
			close(done)
		}()
		m.done = done
	}
	// Whoever ends the process (Kill, the guest powering off, a crash), its jail and sockets
	// go with it: nothing in them outlives the process.
	go func() {
		<-proc.Done()
		_ = m.cleanup()
	}()
	return m
}

// configure waits for the API socket and sends the plan, then InstanceStart.
func (m *Machine) configure(ctx context.Context, began time.Time, pl plan) error {
	if err := m.waitAPI(ctx, began); err != nil {
		return err
	}
	c := m.client()
	defer c.Close()
	wrap := m.wrapStartError

	t := time.Now()
	// The logger first, so that everything after it is in the log file.
	n, err := pl.apply(ctx, c)
	m.timings.Calls = n
	if err != nil {
		return wrap(err)
	}
	if err := m.checkVersion(ctx, c); err != nil {
		return err
	}
	m.timings.Configure = time.Since(t)

	t = time.Now()
	err = c.Action(ctx, ActionInstanceStart)
	m.timings.Calls++
	m.timings.InstanceStart = time.Since(t)
	if err != nil {
		return wrap(err)
	}
	return nil
}

// wrapStartError replaces the error of a request that failed because Firecracker exited by
// what Firecracker said when it exited.
func (m *Machine) wrapStartError(err error) error {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		select {
		case <-m.proc.Done():
			return m.exitedDuringStart()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

// checkVersion asks the API for its version (authoritative: the binary may have been
// replaced since Inspect ran), checks that it is supported and records it.
func (m *Machine) checkVersion(ctx context.Context, c *Client) error {
	vs, err := c.Version(ctx)
	m.timings.Calls++
	if err != nil {
		return m.wrapStartError(err)
	}
	v, err := ParseVersion(vs)
	if err == nil {
		err = CheckSupported(v)
	}
	if err != nil {
		return fmt.Errorf("firecracker: %w", err)
	}
	if m.ex.Version != v.String() {
		m.ex.Version = v.String()
		if b, err := json.Marshal(m.ex); err == nil {
			m.rec.Extra = b
		}
	}
	return nil
}

// waitAPI waits until Firecracker serves its API socket.
func (m *Machine) waitAPI(ctx context.Context, began time.Time) error {
	// The socket must exist and answer: Firecracker binds it before it listens.
	sctx, cancel := context.WithDeadline(ctx, began.Add(socketWait))
	err := vmm.UntilListening(sctx, m.proc.Done(), func() error {
		if !m.apiSocketExists() {
			return syscall.ENOENT
		}
		conn, err := m.dialSocket(sctx, "api")
		if err == nil {
			conn.Close()
		}
		return err
	})
	cancel()
	switch {
	case errors.Is(err, vmm.ErrExited):
		return m.exitedDuringStart()
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil && sctx.Err() != nil:
		return fmt.Errorf("firecracker did not serve its API socket within %s (%v); see %s", socketWait, err, m.rec.Console)
	case err != nil:
		return fmt.Errorf("firecracker: API socket: %w", err)
	}
	m.timings.Socket = time.Since(began)
	return nil
}

func (m *Machine) exitedDuringStart() error {
	<-m.done // Firecracker's last words reach the console log
	return fmt.Errorf("firecracker exited during start: %s", vmm.LogTail(m.rec.Console, 5))
}

// Attach implements vmm.Driver. When the recorded process is gone, the jail and sockets it
// left (a crash while the daemon was down) are removed before ErrGone is returned.
func (d *Driver) Attach(rec vmm.Record) (vmm.Machine, error) {
	if rec.Driver != Name {
		return nil, fmt.Errorf("firecracker: cannot attach a %q machine", rec.Driver)
	}
	var ex extra
	if len(rec.Extra) > 0 {
		if err := json.Unmarshal(rec.Extra, &ex); err != nil {
			return nil, fmt.Errorf("firecracker: bad record: %w", err)
		}
	}
	proc, err := vmm.Watch(rec.PID, rec.StartTime)
	if err != nil {
		stale := &Machine{rec: rec, ex: ex, jails: d.Jails}
		_ = stale.cleanup()
		return nil, err
	}
	// Take the console over again (a VM started by an earlier daemon); what the guest wrote
	// while no daemon read it is lost.
	var pumped <-chan struct{}
	if ex.ConsoleFIFO != "" {
		pumped, _ = vmm.ReopenConsoleFIFO(ex.ConsoleFIFO, rec.Console, rec.ConsoleMax, "banger: a restarted daemon reads the console again (output in between is lost)")
	}
	return newMachine(proc, rec, ex, pumped, d.Jails), nil
}

// Record implements vmm.Machine.
func (m *Machine) Record() vmm.Record { return m.rec }

// Done implements vmm.Machine.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Timings returns how long Start's phases took.
func (m *Machine) Timings() StartTimings { return m.timings }

// Version is the Firecracker version the machine runs.
func (m *Machine) Version() string { return m.ex.Version }

// Jail returns the jail directory and the uid and gid Firecracker runs as; dir is "" when it
// runs unjailed.
func (m *Machine) Jail() (dir string, uid, gid int) { return m.ex.Jail, m.ex.UID, m.ex.GID }

// Kill implements vmm.Machine: SIGKILL, wait, then remove the jail and the sockets.
func (m *Machine) Kill() error {
	if m.ex.Helper {
		return m.killInHelperJail()
	}
	err := m.proc.Kill(10 * time.Second)
	if err != nil {
		return err
	}
	return m.cleanup()
}

// cleanup removes what the process leaves behind: its jail (hard links and copies of the VM's
// files, device nodes, the copied binary, sockets) and the sockets or symlinks in the runtime
// directory. It runs once; the VM's own files (disk, logs, console) stay.
func (m *Machine) cleanup() error {
	m.cleanOnce.Do(func() {
		var errs []error
		if m.ex.Jail != "" {
			errs = append(errs, removeJail(m.ex.Jail, m.ex.JailID))
		}
		if m.ex.Helper {
			errs = append(errs, m.removeHelperJail())
		}
		if m.ex.ConsoleFIFO != "" {
			_ = os.Remove(m.ex.ConsoleFIFO)
		}
		for _, s := range m.rec.Sockets {
			if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			// Firecracker's listeners for guest-initiated vsock connections: <uds>_<port>.
			if extra, _ := filepath.Glob(s + "_*"); len(extra) > 0 {
				for _, e := range extra {
					_ = os.Remove(e)
				}
			}
		}
		m.cleanErr = errors.Join(errs...)
	})
	return m.cleanErr
}

func removeJail(dir, id string) error {
	if !validJailDir(dir, id) {
		return fmt.Errorf("firecracker: refusing to remove %q: not a jail directory of VM %q", dir, id)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("firecracker: remove jail: %w", err)
	}
	return nil
}

// DialAgent implements vmm.Machine: a vsock connection to the agent's port.
func (m *Machine) DialAgent(ctx context.Context) (net.Conn, error) {
	conn, err := m.dialSocket(ctx, "vsock")
	if err != nil {
		return nil, fmt.Errorf("vsock: %w", err)
	}
	return vsockOver(ctx, conn, agent.VsockPort)
}

// dialSocket connects to Firecracker's "api" or "vsock" socket: in the jail through
// dialJailSocket (no symlink followed, a socket owned and served by the jail's uid only), or
// at its path in the runtime directory when Firecracker runs unjailed, as root.
func (m *Machine) dialSocket(ctx context.Context, name string) (net.Conn, error) {
	if m.ex.Helper {
		if m.jails == nil {
			return nil, errNoJails
		}
		return m.jails.DialJail(m.ex.JailID, name)
	}
	if m.ex.Jail != "" {
		return dialJailSocket(ctx, filepath.Join(m.ex.Jail, "root"), jailSockets[name], m.ex.UID)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", m.rec.Sockets[name])
}

// apiSocketExists reports whether Firecracker has created its API socket yet (it is checked
// when dialed).
func (m *Machine) apiSocketExists() bool {
	if m.ex.Helper {
		return true // the helper looks; its dial says "not there yet"
	}
	if m.ex.Jail != "" {
		_, err := os.Lstat(filepath.Join(m.ex.Jail, "root", jailSockets["api"]))
		return err == nil
	}
	_, err := os.Stat(m.rec.Sockets["api"])
	return err == nil
}

// DialAgent connects to banger-agent in a Firecracker guest through the VM's vsock unix
// socket; the agent handshake (agent.Connect) runs on the returned connection.
func DialAgent(ctx context.Context, vsockUDS string) (net.Conn, error) {
	return DialVsock(ctx, vsockUDS, agent.VsockPort)
}

func (m *Machine) client() *Client {
	name := m.rec.Sockets["api"]
	if m.ex.Helper {
		name = "the API socket of jail " + m.ex.JailID + " (through banger's root helper)"
	}
	if m.ex.Jail != "" {
		name = filepath.Join(m.ex.Jail, "root", jailSockets["api"])
	}
	return newDialClient(name, func(ctx context.Context) (net.Conn, error) { return m.dialSocket(ctx, "api") })
}

// Shutdown sends Ctrl-Alt-Del to the guest (systemd then shuts down, and Firecracker exits
// when the guest resets). It returns once Firecracker accepted the request; the caller
// decides how long to wait before asking the agent to power off, and then kills.
func (m *Machine) Shutdown(ctx context.Context) error {
	c := m.client()
	defer c.Close()
	return c.Action(ctx, ActionSendCtrlAltDel)
}

// Pause stops the vCPUs.
func (m *Machine) Pause(ctx context.Context) error {
	c := m.client()
	defer c.Close()
	return c.PatchVM(ctx, VMPaused)
}

// Resume continues the vCPUs.
func (m *Machine) Resume(ctx context.Context) error {
	c := m.client()
	defer c.Close()
	return c.PatchVM(ctx, VMResumed)
}

// State is Firecracker's view of the machine: "Not started", "Running" or "Paused".
func (m *Machine) State(ctx context.Context) (string, error) {
	c := m.client()
	defer c.Close()
	info, err := c.Describe(ctx)
	return info.State, err
}
