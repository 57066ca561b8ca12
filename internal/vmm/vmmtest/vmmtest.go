// Package vmmtest is a stand-in VMM for tests of the layers above package vmm: each
// "machine" is a real detached process (sleep) for pid bookkeeping and a real guest agent
// (package guestagent, running in the test process) serving on the unix socket where QEMU's
// virtio-serial socket would be. No guest boots; commands run on the test host. Booting real
// guests is the end-to-end tests' job.
package vmmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/guestagent"
	"github.com/banger-dev/banger/internal/vmm"
)

// Name is the fake driver's name, in its Records.
const Name = "fake"

// DefaultVersion is the fake VMM's version unless Driver.Version says otherwise.
const DefaultVersion = "vmmtest-1"

// Driver is a vmm.Driver whose behaviour tests can steer.
type Driver struct {
	mu sync.Mutex
	// StartErr makes Start fail with it.
	StartErr error
	// NoAgent makes the guest never answer (a boot that hangs).
	NoAgent bool
	// ExitEarly makes the VMM process exit right after it starts (a crashing VMM).
	ExitEarly bool
	// BootGate, when set, holds the boot: the guest's agent answers only once it is closed
	// (never, if the machine ends first), so that a test can act while a boot is in flight.
	BootGate <-chan struct{}
	// ProbeErr makes Probe say that the driver cannot run here.
	ProbeErr error
	// Version is the fake VMM's version, recorded in snapshots and compared on restore;
	// "" means DefaultVersion. Changing it stands for an upgraded VMM.
	Version string

	machines []*Machine
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return Name }

// Probe implements vmm.Driver: the fake runs anywhere (its guests need no KVM) unless
// ProbeErr says otherwise.
func (d *Driver) Probe(ctx context.Context) vmm.Probe {
	d.mu.Lock()
	defer d.mu.Unlock()
	return vmm.Probe{Driver: Name, Title: "the fake VMM", Found: "the fake VMM (vmmtest)", Err: d.ProbeErr}
}

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.start(cfg, false)
}

// start starts a machine, paused or not; d.mu is held.
func (d *Driver) start(cfg vmm.Config, paused bool) (*Machine, error) {
	if d.StartErr != nil {
		return nil, d.StartErr
	}
	secs := "3600"
	if d.ExitEarly {
		secs = "0.2"
	}
	cmd := exec.Command("sleep", secs)
	if cfg.NIC != nil && cfg.NIC.File != nil {
		// The stand-in VMM holds the tap's queue as QEMU does: the tap has carrier while it runs.
		cmd.ExtraFiles = []*os.File{cfg.NIC.File}
	}
	proc, err := vmm.Spawn(cmd)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(cfg.RuntimeDir, "agent.sock")
	console := filepath.Join(cfg.Dir, "console.log")
	_ = os.WriteFile(console, []byte("[    0.1] fake kernel booting\n[    0.2] fake init says hello\n"), 0o600)
	sh, _ := json.Marshal(shape{VCPU: cfg.VCPU, MemoryMiB: cfg.MemoryMiB, Disks: len(cfg.Disks), NIC: cfg.NIC != nil})
	m := &Machine{proc: proc, version: d.version(), paused: paused, rec: vmm.Record{Driver: d.Name(), PID: proc.PID, StartTime: proc.StartTime,
		Sockets: map[string]string{"agent": sock}, Console: console, Log: filepath.Join(cfg.Dir, "qemu.log"), Extra: sh}}
	if !d.NoAgent {
		if gate := d.BootGate; gate != nil {
			go func() {
				select {
				case <-gate:
					_ = m.listen()
				case <-proc.Done():
				}
			}()
		} else if err := m.listen(); err != nil {
			_ = proc.Kill(time.Second)
			return nil, err
		}
	}
	d.machines = append(d.machines, m)
	return m, nil
}

// Attach implements vmm.Driver; the re-attached machine serves its agent again.
func (d *Driver) Attach(rec vmm.Record) (vmm.Machine, error) {
	if rec.Driver != Name {
		return nil, fmt.Errorf("vmmtest: cannot attach a %q machine", rec.Driver)
	}
	proc, err := vmm.Watch(rec.PID, rec.StartTime)
	if err != nil {
		_ = os.Remove(rec.Sockets["agent"])
		return nil, err
	}
	m := &Machine{proc: proc, rec: rec, version: d.version()}
	if _, err := os.Stat(m.pausedMarker()); err == nil {
		m.paused = true
	}
	_ = os.Remove(rec.Sockets["agent"])
	_ = m.listen()
	d.mu.Lock()
	d.machines = append(d.machines, m)
	d.mu.Unlock()
	return m, nil
}

// Machines returns every machine started or attached so far.
func (d *Driver) Machines() []*Machine {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*Machine(nil), d.machines...)
}

// KillAll ends every machine (for t.Cleanup).
func (d *Driver) KillAll() {
	for _, m := range d.Machines() {
		_ = m.Kill()
	}
}

// Machine is a stand-in running VM.
type Machine struct {
	proc    *vmm.Process
	rec     vmm.Record
	ln      net.Listener
	version string

	mu     sync.Mutex
	paused bool
	guest  *Guest
	// precopied is the directory of the Precopy a Snapshot has yet to take; precopies and
	// pausedPrecopies count Precopy's runs (Precopies).
	precopied                  string
	precopies, pausedPrecopies int
}

// Guest is what renewals changed in a stand-in machine's guest. Its agent runs in the test
// process: it writes files under the machine's directory (guest-root) and changes this
// record, never the host's clock, host name, network or sshd.
type Guest struct {
	mu       sync.Mutex
	hostname string
	link     *agent.ParsedNetwork
	reloads  int
}

// Hostname is the host name the last renewal set ("" for none).
func (g *Guest) Hostname() string { g.mu.Lock(); defer g.mu.Unlock(); return g.hostname }

// Link is the network identity the last renewal set (nil for none).
func (g *Guest) Link() *agent.ParsedNetwork { g.mu.Lock(); defer g.mu.Unlock(); return g.link }

// SetClock implements guestagent.System: the host's clock stays as it is.
func (g *Guest) SetClock(time.Time) error { return nil }

// AddEntropy implements guestagent.System.
func (g *Guest) AddEntropy([]byte) error { return nil }

// SetHostname implements guestagent.System.
func (g *Guest) SetHostname(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hostname = name
	return nil
}

// RenewLink implements guestagent.System.
func (g *Guest) RenewLink(n agent.ParsedNetwork) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.link = &n
	return nil
}

// ReloadSSH implements guestagent.System.
func (g *Guest) ReloadSSH() error { g.mu.Lock(); defer g.mu.Unlock(); g.reloads++; return nil }

// Guest is the machine's guest as renewals changed it.
func (m *Machine) Guest() *Guest { return m.guest }

// GuestRoot is the directory the machine's agent writes the guest's files in.
func (m *Machine) GuestRoot() string { return filepath.Join(filepath.Dir(m.rec.Console), "guest-root") }

// shape is the machine's vCPUs, memory and devices, kept in its Record's Extra.
type shape struct {
	VCPU      int  `json:"vcpu"`
	MemoryMiB int  `json:"memory_mib"`
	Disks     int  `json:"disks"`
	NIC       bool `json:"nic"`
}

func (m *Machine) listen() error {
	if err := os.MkdirAll(filepath.Join(m.GuestRoot(), "etc"), 0o700); err != nil {
		return err
	}
	m.guest = &Guest{}
	ln, err := net.Listen("unix", m.rec.Sockets["agent"])
	if err != nil {
		return err
	}
	m.ln = ln
	go func() {
		// A guest that powers off ends its VMM, as under QEMU with -no-reboot.
		poweroff := func() error { return m.proc.Signal(syscall.SIGKILL) }
		s := &guestagent.Server{Version: "vmmtest", Log: log.New(io.Discard, "", 0), Poweroff: poweroff,
			Root: m.GuestRoot(), Sys: m.guest}
		// One connection at a time, as QEMU's socket chardev and Firecracker's vsock port
		// serve the agent (vmm.Machine.DialAgent): a second connection waits, unanswered,
		// until the first ends.
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = s.ServeConn(context.Background(), c)
			c.Close()
		}
	}()
	return nil
}

// Record implements vmm.Machine.
func (m *Machine) Record() vmm.Record { return m.rec }

// Done implements vmm.Machine.
func (m *Machine) Done() <-chan struct{} { return m.proc.Done() }

// Kill implements vmm.Machine.
func (m *Machine) Kill() error {
	if m.ln != nil {
		m.ln.Close()
	}
	return m.proc.Kill(5 * time.Second)
}

// DialAgent implements vmm.Machine.
func (m *Machine) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", m.rec.Sockets["agent"])
}
