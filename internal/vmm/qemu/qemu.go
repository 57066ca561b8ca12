// Package qemu is the QEMU driver of package vmm: qemu-system-x86_64 with the microvm
// machine type and virtio-mmio devices, under KVM where the host has hardware
// virtualization and under TCG (software emulation) elsewhere. The guest agent is reached
// over a virtio-serial port whose host end is a unix socket; QMP serves shutdown and pause.
// The guest's serial console is a unix socket too: the daemon reads it into a capped
// vmm.ConsoleLog, so that QEMU never writes an unbounded file. Snapshots are migration
// streams (see snapshot.go).
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// DefaultBinary is looked up in PATH when no binary is configured.
const DefaultBinary = "qemu-system-x86_64"

// Name is the driver's config and record name.
const Name = "qemu"

// Settings are the driver's part of config.toml.
type Settings struct {
	// Binary is the qemu-system-x86_64 to run (a path, or a name looked up in PATH); ""
	// means DefaultBinary.
	Binary string
}

// SettingsFrom picks the driver's settings out of a config.
func SettingsFrom(c config.Config) Settings { return Settings{Binary: c.QEMUBin} }

// Driver starts QEMU microVMs.
type Driver struct {
	// Binary is used when Settings is nil.
	Binary string
	// Settings, when set, supplies the settings afresh for every Probe and Start (the daemon
	// re-reads config.toml, so that edits apply without a restart); Binary is used otherwise.
	Settings func() Settings
	// TSCkHz is passed to TCG guests as tsc_early_khz (0: not passed).
	TSCkHz int
	// ScratchTap, when set, gives a template (the snapshot of a restored machine, see
	// template.go) its NIC: an open queue (IFF_VNET_HDR, as the machine's own) of a tap that
	// carries no traffic — no guest is admitted on it and the template's vCPUs never run —
	// and release, which removes that tap. Unset, the template makes a tap of its own in a
	// network namespace of its own, which needs root (CAP_SYS_ADMIN). A daemon that is not
	// root gets its taps from banger's root helper, and so sets this.
	ScratchTap func() (tap *os.File, release func(), err error)
	// Log, when set, is told what the driver chose that an operator may want to know: a
	// snapshot saved the slow way (through a template QEMU), and why. Nil discards it.
	Log *slog.Logger

	versionMu sync.Mutex // guards the cached version of the binary (Restore compares it)
	versionOf versionKey
	version   string
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return Name }

// binary is the configured binary (not looked up yet).
func (d *Driver) binary() string {
	s := Settings{Binary: d.Binary}
	if d.Settings != nil {
		s = d.Settings()
	}
	if s.Binary != "" {
		return s.Binary
	}
	return DefaultBinary
}

// Probe implements vmm.Driver: QEMU can run VMs here when its binary is found; it runs
// guests under KVM or, without, under software emulation.
func (d *Driver) Probe(ctx context.Context) vmm.Probe {
	name := d.binary()
	bin, err := exec.LookPath(name)
	return ProbeResult(name, bin, err)
}

// ProbeResult is the probe for the configured binary name, found at bin or not found (err).
// `banger doctor`, which looks binaries up its own way, makes its probe with it too.
func ProbeResult(name, bin string, err error) vmm.Probe {
	p := vmm.Probe{Driver: Name, Title: "QEMU"}
	if err != nil {
		p.Err = errNotFound(name)
		return p
	}
	p.Found = "qemu at " + bin
	return p
}

func errNotFound(name string) error {
	return fmt.Errorf("%s not found; install it (Debian: apt-get install qemu-system-x86) or set qemu_bin in config.toml", name)
}

// Socket names in the runtime dir.
const (
	agentSocket   = "agent.sock"
	qmpSocket     = "qmp.sock"
	consoleSocket = "console.sock"
)

// socketWait bounds how long Start waits for QEMU to create its sockets and build the machine.
const socketWait = 15 * time.Second

// optValue escapes a value (a path) for QEMU's comma-separated options, where a comma in a
// value is written twice.
func optValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// nicFD is the file descriptor number the tap's queue (vmm.NIC.File) has in QEMU: the first
// of exec.Cmd.ExtraFiles.
const nicFD = 3

// Args returns QEMU's command line for cfg (without the binary). It is exported for the
// benchmark harness, which boots the same machine without banger: there QEMU writes the
// console to console.log itself. With cfg.NIC.File, QEMU takes the tap as file descriptor 3:
// the caller passes the file as the first of exec.Cmd.ExtraFiles; without, QEMU opens the tap
// by name (cfg.NIC.Tap) in the namespace it runs in. Start instead puts the console on a socket that QEMU waits
// on (wait=on): the guest runs only once the daemon reads it.
func (d *Driver) Args(cfg vmm.Config) []string {
	return d.args(cfg, []string{"-chardev", "file,id=console,path=" + optValue(filepath.Join(cfg.Dir, "console.log")) + ",append=on"})
}

// ramID is the id of the guest RAM's memory backend when banger names one: the id QEMU gives
// microvm's RAM block by default, so that a machine with a named backend and one without
// migrate to each other.
const ramID = "microvm.ram"

// args is QEMU's command line with console as the chardev options of the serial console.
// The guest's RAM is anonymous memory unless cfg.ShareMemory (a memfd) or restoreMem (a
// snapshot's memory file, mapped privately: copy-on-write) says otherwise.
func (d *Driver) args(cfg vmm.Config, console []string, restoreMem ...string) []string {
	accel := []string{"-accel", "kvm", "-cpu", "host"}
	cmdline := cfg.Cmdline + " console=ttyS0"
	if cfg.Accel != host.KVM {
		accel = []string{"-accel", "tcg,thread=multi,tb-size=64", "-cpu", "max"}
		// TCG's TSC follows the host's clock, but on a loaded host the guest's clocksource
		// watchdog sees vCPUs starved and drops the TSC for refined-jiffies, which loses
		// time whenever the guest waits for a CPU (guests — and every clone of one — fell a
		// minute behind in the snapshot tests): tell it the TSC is reliable.
		cmdline += " tsc=reliable"
		if d.TSCkHz > 0 {
			cmdline += " tsc_early_khz=" + strconv.Itoa(d.TSCkHz)
		}
	}
	machineOpts := machineType + ",x-option-roms=off"
	var ram []string
	switch size := strconv.Itoa(cfg.MemoryMiB) + "M"; {
	case len(restoreMem) > 0:
		machineOpts += ",memory-backend=" + ramID
		ram = []string{"-object", "memory-backend-file,id=" + ramID + ",size=" + size + ",mem-path=" + optValue(restoreMem[0]) + ",share=off"}
	case cfg.ShareMemory:
		machineOpts += ",memory-backend=" + ramID
		ram = []string{"-object", "memory-backend-memfd,id=" + ramID + ",size=" + size + ",share=on"}
	}
	args := []string{
		"-name", "banger-" + cfg.Name + ",process=banger-" + cfg.Name,
		"-M", machineOpts,
	}
	args = append(args, ram...)
	args = append(args, accel...)
	args = append(args,
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-smp", strconv.Itoa(cfg.VCPU),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", cfg.Kernel,
		"-append", strings.TrimSpace(cmdline),
	)
	args = append(args, console...)
	args = append(args, "-serial", "chardev:console")
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	for i, disk := range cfg.Disks {
		id := "disk" + strconv.Itoa(i)
		opts := "id=" + id + ",file=" + optValue(disk.Path) + ",format=raw,if=none"
		if disk.ReadOnly {
			opts += ",readonly=on"
		} else {
			opts += ",discard=unmap,detect-zeroes=unmap"
		}
		args = append(args, "-drive", opts, "-device", "virtio-blk-device,drive="+id)
	}
	if cfg.NIC != nil {
		// vhost stays off: vhost-net is not always there (and crashes QEMU 7.2 on some hosts).
		netdev := "tap,id=net0,ifname=" + cfg.NIC.Tap + ",script=no,downscript=no"
		if cfg.NIC.File != nil {
			netdev = "tap,id=net0,fd=" + strconv.Itoa(nicFD)
		}
		args = append(args,
			"-netdev", netdev,
			"-device", "virtio-net-device,netdev=net0,mac="+cfg.NIC.MAC,
		)
	}
	args = append(args,
		"-device", "virtio-rng-device",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+optValue(filepath.Join(cfg.RuntimeDir, agentSocket))+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+agent.PortName,
		"-qmp", "unix:"+optValue(filepath.Join(cfg.RuntimeDir, qmpSocket))+",server=on,wait=off",
	)
	return args
}

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	m, err := d.launch(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// launch starts QEMU for cfg as Start does, with restoreMem (nil, or the snapshot's memory
// file) and extra arguments appended.
func (d *Driver) launch(ctx context.Context, cfg vmm.Config, restoreMem []string, extra ...string) (*machine, error) {
	name := d.binary()
	bin, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", errNotFound(name))
	}
	for _, dir := range []string{cfg.Dir, cfg.RuntimeDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	sockets := map[string]string{
		"agent":   filepath.Join(cfg.RuntimeDir, agentSocket),
		"qmp":     filepath.Join(cfg.RuntimeDir, qmpSocket),
		"console": filepath.Join(cfg.RuntimeDir, consoleSocket),
	}
	if err := vmm.ClearSockets("qemu", sockets); err != nil {
		return nil, err
	}
	logPath := filepath.Join(cfg.Dir, "qemu.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qemu: open log: %w", err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "--- %s starting %s\n", time.Now().UTC().Format(time.RFC3339), bin)

	// wait=on: QEMU waits, before it builds the machine, until the daemon connects to the
	// console (see attachConsole), so that no early boot output is lost. Later connections
	// (a restarted daemon) need no wait.
	cmd := exec.Command(bin, append(d.args(cfg, []string{
		"-chardev", "socket,id=console,path=" + optValue(sockets["console"]) + ",server=on,wait=on",
	}, restoreMem...), extra...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = cfg.Dir
	// QEMU handed its tap's queue needs no namespace: its sockets are files, and the queue
	// works wherever it is. Only a tap opened by name must be looked up in its namespace.
	netns := ""
	if cfg.NIC != nil && cfg.NIC.File == nil {
		netns = cfg.NetNS
	}
	if cfg.NIC != nil && cfg.NIC.File != nil {
		cmd.ExtraFiles = []*os.File{cfg.NIC.File} // nicFD in QEMU
	}
	proc, err := vmm.SpawnIn(netns, cmd)
	if err != nil {
		return nil, fmt.Errorf("qemu: start %s: %w", bin, err)
	}
	m := &machine{
		proc:       proc,
		scratchTap: d.ScratchTap,
		log:        d.Log,
		rec: vmm.Record{
			Driver:     Name,
			PID:        proc.PID,
			StartTime:  proc.StartTime,
			Sockets:    sockets,
			Console:    filepath.Join(cfg.Dir, "console.log"),
			ConsoleMax: vmm.ConsoleLogCap(cfg.ConsoleLogSize),
			Log:        logPath,
			Extra:      newShape(cfg, len(restoreMem) == 0 && cfg.ShareMemory, mappedRAM(restoreMem)),
		},
	}
	m.done = m.proc.Done()
	deadline := time.Now().Add(socketWait)
	if err := m.waitSocket(ctx, m.rec.Sockets["console"], deadline); err != nil {
		_ = m.Kill()
		return nil, err
	}
	actx, cancel := context.WithDeadline(ctx, deadline)
	err = m.attachConsole(actx, fmt.Sprintf("banger: qemu (pid %d) starts the guest", m.rec.PID))
	cancel()
	if err != nil {
		_ = m.Kill()
		return nil, err
	}
	if err := m.waitReady(ctx, deadline); err != nil {
		_ = m.Kill()
		return nil, err
	}
	return m, nil
}

// consoleDrain bounds how long Done waits, after QEMU exited, for the console's last bytes
// to reach the log.
const consoleDrain = 5 * time.Second

// attachConsole connects to QEMU's console socket and copies what the guest writes there into
// the VM's capped console log until QEMU exits; Done then waits for the copy to finish.
func (m *machine) attachConsole(ctx context.Context, header string) error {
	var d net.Dialer
	var conn net.Conn
	err := m.untilListening(ctx, func() (err error) {
		conn, err = d.DialContext(ctx, "unix", m.rec.Sockets["console"])
		return err
	})
	if errors.Is(err, vmm.ErrExited) {
		return m.exitedDuringStart()
	}
	if err != nil {
		return fmt.Errorf("qemu: connect to the guest console: %w", err)
	}
	pumped, err := vmm.PumpConsole(conn, m.rec.Console, m.rec.ConsoleMax, header)
	if err != nil {
		conn.Close()
		return fmt.Errorf("qemu: %w", err)
	}
	exited := m.proc.Done()
	done := make(chan struct{})
	go func() {
		<-exited
		select {
		case <-pumped:
		case <-time.After(consoleDrain):
		}
		close(done)
	}()
	m.done = done
	return nil
}

// Attach implements vmm.Driver.
func (d *Driver) Attach(rec vmm.Record) (vmm.Machine, error) {
	if rec.Driver != Name {
		return nil, fmt.Errorf("qemu: cannot attach a %q machine", rec.Driver)
	}
	proc, err := vmm.Watch(rec.PID, rec.StartTime)
	if err != nil {
		// A QEMU killed while no daemon ran left its sockets.
		removeSockets(rec.Sockets)
		return nil, err
	}
	m := &machine{proc: proc, rec: rec, done: proc.Done(), scratchTap: d.ScratchTap, log: d.Log}
	// Take the console over again (a VM started by an earlier daemon); what the guest wrote
	// while no daemon read it is lost, never buffered without bound. A machine from before
	// the console socket has none: QEMU writes its log itself.
	if rec.Sockets["console"] != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.attachConsole(ctx, "banger: a restarted daemon reads the console again (output in between is lost)")
	}
	return m, nil
}

type machine struct {
	proc *vmm.Process
	rec  vmm.Record
	done <-chan struct{} // the process exited and the console is copied
	// scratchTap is the driver's ScratchTap, for a template's NIC.
	scratchTap func() (*os.File, func(), error)
	// savedBy says how the last Snapshot saved the RAM ("memory map", "template"), for tests.
	savedBy string
	log     *slog.Logger // the driver's Log; nil discards

	mu       sync.Mutex
	pausedAt time.Time // when Pause stopped the vCPUs; zero when they run or it is unknown
	// precopied is what the last Precopy copied ahead of a Snapshot, nil when none waits.
	precopied *mappedSave
}

// pausedSince is when Pause stopped the vCPUs, zero when it did not.
func (m *machine) pausedSince() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pausedAt
}

// mappedRAM is the memory file a machine restored with restoreMem maps, "" for none.
func mappedRAM(restoreMem []string) string {
	if len(restoreMem) == 0 {
		return ""
	}
	return restoreMem[0]
}

// logger is where m reports what it chose (the driver's Log), a discarding one without.
func (m *machine) logger() *slog.Logger {
	if m.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.log
}

func (m *machine) Record() vmm.Record    { return m.rec }
func (m *machine) Done() <-chan struct{} { return m.done }

// Kill implements vmm.Machine: SIGKILL, wait, then remove the sockets (QEMU removes them
// when it exits cleanly, never when killed).
func (m *machine) Kill() error {
	if err := m.proc.Kill(10 * time.Second); err != nil {
		return err
	}
	removeSockets(m.rec.Sockets)
	return nil
}

// removeSockets removes the socket files of a QEMU that is gone.
func removeSockets(sockets map[string]string) {
	for _, s := range sockets {
		_ = os.Remove(s)
	}
}

// waitReady waits until QEMU has created its sockets and built the machine. The sockets alone
// do not show that QEMU started: it creates them before it loads the kernel, and exits if that
// fails. Its QMP monitor answers commands only once the machine is built.
func (m *machine) waitReady(ctx context.Context, deadline time.Time) error {
	for _, s := range m.rec.Sockets {
		if err := m.waitSocket(ctx, s, deadline); err != nil {
			return err
		}
	}
	qctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	err := m.untilListening(qctx, func() error { return qmpExecute(qctx, m.rec.Sockets["qmp"], "query-status") })
	if errors.Is(err, vmm.ErrExited) {
		return m.exitedDuringStart()
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// QMP failing at start mostly means QEMU is exiting: give it a moment to say why.
	select {
	case <-m.proc.Done():
		return m.exitedDuringStart()
	case <-time.After(2 * time.Second):
	}
	return fmt.Errorf("qemu does not answer on its QMP socket: %v; see %s", err, m.rec.Log)
}

// untilListening is vmm.UntilListening for this QEMU process.
func (m *machine) untilListening(ctx context.Context, try func() error) error {
	return vmm.UntilListening(ctx, m.proc.Done(), try)
}

func (m *machine) exitedDuringStart() error {
	return fmt.Errorf("qemu exited during start: %s", vmm.LogTail(m.rec.Log, 5))
}

// waitSocket waits until QEMU has created the socket at path.
func (m *machine) waitSocket(ctx context.Context, path string, deadline time.Time) error {
	sctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	err := m.untilListening(sctx, func() error {
		_, err := os.Stat(path)
		return err
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vmm.ErrExited):
		return m.exitedDuringStart()
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("qemu did not create its sockets within %s (%v); see %s", socketWait, err, m.rec.Log)
}

// DialAgent implements vmm.Machine.
func (m *machine) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", m.rec.Sockets["agent"])
}

// Shutdown presses the ACPI power button.
func (m *machine) Shutdown(ctx context.Context) error {
	return qmpExecute(ctx, m.rec.Sockets["qmp"], "system_powerdown")
}

// Pause stops the vCPUs.
func (m *machine) Pause(ctx context.Context) error {
	if err := qmpExecute(ctx, m.rec.Sockets["qmp"], "stop"); err != nil {
		return err
	}
	m.mu.Lock()
	if m.pausedAt.IsZero() {
		m.pausedAt = time.Now()
	}
	m.mu.Unlock()
	return nil
}

// Resume continues the vCPUs.
func (m *machine) Resume(ctx context.Context) error {
	if err := qmpExecute(ctx, m.rec.Sockets["qmp"], "cont"); err != nil {
		return err
	}
	m.mu.Lock()
	m.pausedAt = time.Time{}
	m.mu.Unlock()
	return nil
}

var (
	_ vmm.Shutdowner = (*machine)(nil)
	_ vmm.Pauser     = (*machine)(nil)
)
