// Package vmmtest is a stand-in VMM for tests of the layers above package vmm: each
// "machine" is a real detached process (sleep) for pid bookkeeping and a real guest agent
// (package guestagent, running in the test process) serving on the unix socket where QEMU's
// virtio-serial socket would be. No guest boots; commands run on the test host. Booting real
// guests is the end-to-end tests' job.
package vmmtest

import (
	"context"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/guestagent"
	"github.com/banger-dev/banger/internal/vmm"
)

// Driver is a vmm.Driver whose behaviour tests can steer. It names itself "qemu" because the
// services ask for their QEMU driver.
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

	machines []*Machine
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "qemu" }

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.StartErr != nil {
		return nil, d.StartErr
	}
	secs := "3600"
	if d.ExitEarly {
		secs = "0.2"
	}
	proc, err := vmm.Spawn(exec.Command("sleep", secs))
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(cfg.RuntimeDir, "agent.sock")
	console := filepath.Join(cfg.Dir, "console.log")
	_ = os.WriteFile(console, []byte("[    0.1] fake kernel booting\n[    0.2] fake init says hello\n"), 0o600)
	m := &Machine{proc: proc, rec: vmm.Record{Driver: d.Name(), PID: proc.PID, StartTime: proc.StartTime,
		Sockets: map[string]string{"agent": sock}, Console: console, Log: filepath.Join(cfg.Dir, "qemu.log")}}
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
	proc, err := vmm.Watch(rec.PID, rec.StartTime)
	if err != nil {
		return nil, err
	}
	m := &Machine{proc: proc, rec: rec}
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
	proc *vmm.Process
	rec  vmm.Record
	ln   net.Listener
}

func (m *Machine) listen() error {
	ln, err := net.Listen("unix", m.rec.Sockets["agent"])
	if err != nil {
		return err
	}
	m.ln = ln
	go func() {
		// A guest that powers off ends its VMM, as under QEMU with -no-reboot.
		poweroff := func() error { return m.proc.Signal(syscall.SIGKILL) }
		s := &guestagent.Server{Version: "vmmtest", Log: log.New(io.Discard, "", 0), Poweroff: poweroff}
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = s.ServeConn(context.Background(), c) }()
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
