package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/fcjail"
	"github.com/banger-dev/banger/internal/vmm"
)

// errNoJails is the error of a machine in a helper's jail when the driver has no Jails (a
// daemon that cannot reach the helper any more).
var errNoJails = errors.New("firecracker: the VM runs in a jail of banger's root helper, and this daemon has no connection to the helper")

// killWait bounds how long Kill waits for a Firecracker the helper killed to be gone.
const killWait = 10 * time.Second

// startInHelperJail is start for a driver that does not run as root: the root helper (Jails)
// makes the jail, links the VM's files into it and runs the jailer; the daemon hands it open
// files, never paths, and reaches the sockets through it.
func (d *Driver) startInHelperJail(ctx context.Context, cfg vmm.Config, snap *vmm.Snapshot, info Info) (*Machine, error) {
	if d.Jails == nil {
		return nil, fmt.Errorf("%w (this one runs as uid %d)", ErrNeedsRoot, d.euid())
	}
	if snap != nil {
		return nil, errors.New("firecracker: restoring snapshots into a jailed Firecracker is not supported yet, and a bangerd that is not root always jails it; use QEMU for snapshots")
	}
	if err := fcjail.CheckID(cfg.ID); err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	if len(cfg.Disks) == 0 || len(cfg.Disks) > fcjail.MaxDisks {
		return nil, fmt.Errorf("firecracker: %d disks given; want 1 to %d", len(cfg.Disks), fcjail.MaxDisks)
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

	// Open what goes into the jail; the writable ones are shared with the jail's group, and
	// their group and mode are recorded to be restored (by the helper, and here).
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	ex := extra{Version: info.Version.String(), ConsoleFIFO: out.fifoPath, Helper: true, JailID: cfg.ID,
		VCPU: cfg.VCPU, MemoryMiB: cfg.MemoryMiB, Disks: len(cfg.Disks), NIC: cfg.NIC != nil}
	open := func(path string, writable bool) (*os.File, error) {
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return nil, fmt.Errorf("firecracker: %w", err)
		}
		opened = append(opened, f)
		if writable {
			fi, err := f.Stat()
			if err != nil {
				return nil, fmt.Errorf("firecracker: %w", err)
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok {
				return nil, fmt.Errorf("firecracker: stat %s", path)
			}
			ex.Shared = append(ex.Shared, sharedFile{Path: path, GID: int(st.Gid), Mode: uint32(st.Mode) & 0o7777})
		}
		return f, nil
	}
	spec := fcjail.Spec{ID: cfg.ID, Console: out.fifo.Writer}
	if spec.Kernel, err = open(cfg.Kernel, false); err != nil {
		return nil, err
	}
	p := paths{kernel: "/" + fcjail.Kernel, log: "/" + fcjail.Log, metrics: "/" + fcjail.Metrics, vsock: "/" + fcjail.Sockets["vsock"]}
	if cfg.Initrd != "" {
		if spec.Initrd, err = open(cfg.Initrd, false); err != nil {
			return nil, err
		}
		p.initrd = "/" + fcjail.Initrd
	}
	for i, disk := range cfg.Disks {
		f, err := open(disk.Path, !disk.ReadOnly)
		if err != nil {
			return nil, err
		}
		spec.Disks = append(spec.Disks, fcjail.Disk{File: f, Writable: !disk.ReadOnly})
		p.disks = append(p.disks, "/"+fcjail.DiskName(i))
	}
	if spec.Log, err = open(out.log, true); err != nil {
		return nil, err
	}
	if spec.Metrics, err = open(out.metrics, true); err != nil {
		return nil, err
	}
	if cfg.NIC != nil {
		spec.Tap = cfg.NIC.Tap
	}

	began := time.Now()
	started, err := d.Jails.StartJail(spec)
	out.fifo.Writer.Close() // Firecracker has its own copy; the pipe ends when it exits
	if err != nil {
		restoreShared(ex.Shared, -1)
		return nil, fmt.Errorf("firecracker: start in a jail of banger's root helper: %w", err)
	}
	ex.UID, ex.GID = started.UID, started.GID
	proc, err := vmm.WatchPidfd(started.Pidfd, started.PID, started.StartTime)
	if err != nil {
		_ = d.Jails.RemoveJail(cfg.ID)
		restoreShared(ex.Shared, ex.GID)
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	rec := vmm.Record{
		Driver:     Name,
		PID:        started.PID,
		StartTime:  started.StartTime,
		Console:    filepath.Join(cfg.Dir, consoleFile),
		ConsoleMax: vmm.ConsoleLogCap(cfg.ConsoleLogSize),
		Log:        out.log,
	}
	pumped, err := out.fifo.Pump(rec.Console, rec.ConsoleMax, fmt.Sprintf("banger: firecracker (pid %d, jailed by banger's root helper as uid %d) starts the guest", rec.PID, ex.UID))
	if err != nil {
		_ = d.Jails.RemoveJail(cfg.ID)
		restoreShared(ex.Shared, ex.GID)
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	pumping = true
	m := newMachine(proc, rec, ex, pumped, d.Jails)
	if err := m.configure(ctx, began, buildPlan(cfg, p)); err != nil {
		_ = m.Kill()
		return nil, err
	}
	return m, nil
}

// killInHelperJail is Kill for a machine in a helper's jail: the helper sends SIGKILL (the
// daemon may not signal the jail's uid), the machine waits for the exit, then the jail goes.
func (m *Machine) killInHelperJail() error {
	if m.jails == nil {
		return errNoJails
	}
	if err := m.jails.KillJail(m.ex.JailID); err != nil {
		return fmt.Errorf("firecracker: kill: %w", err)
	}
	select {
	case <-m.proc.Done():
	case <-time.After(killWait):
		return fmt.Errorf("firecracker: pid %d is still there %s after banger's root helper killed it", m.rec.PID, killWait)
	}
	return m.cleanup()
}

// removeHelperJail has the helper remove the machine's jail, then restores the VM's shared
// files itself (their owner may: the helper gives back only what it finds where it put it).
func (m *Machine) removeHelperJail() error {
	var err error
	if m.jails == nil {
		err = errNoJails
	} else if err = m.jails.RemoveJail(m.ex.JailID); err != nil {
		err = fmt.Errorf("firecracker: remove jail %s: %w", m.ex.JailID, err)
	}
	restoreShared(m.ex.Shared, m.ex.GID)
	return err
}

// SweepOrphans removes the helper's jails of this daemon that no running VM owns (live holds
// the VM ids of the machines the daemon adopted): what a daemon killed between a jail's start
// and its record leaves running. Without Jails (a root daemon) it does nothing.
func (d *Driver) SweepOrphans(live map[string]bool) error {
	if d.Jails == nil || d.euid() == 0 {
		return nil
	}
	ids, err := d.Jails.JailIDs()
	if err != nil {
		return fmt.Errorf("firecracker: list the helper's jails: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if !live[id] {
			errs = append(errs, d.Jails.RemoveJail(id))
		}
	}
	return errors.Join(errs...)
}

// restoreShared gives the VM's files their group and mode back where the jail's group gid
// still has them (-1: whatever group they have). Only files of this uid are changed; a path
// that is a symlink now is left alone.
func restoreShared(files []sharedFile, gid int) {
	for _, sf := range files {
		fd, err := unix.Open(sf.Path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && int(st.Uid) == os.Geteuid() &&
			(gid < 0 || int(st.Gid) == gid || int(st.Gid) == sf.GID) {
			proc := "/proc/self/fd/" + strconv.Itoa(fd)
			_ = unix.Fchownat(unix.AT_FDCWD, proc, -1, sf.GID, 0)
			_ = unix.Fchmodat(unix.AT_FDCWD, proc, sf.Mode, 0)
		}
		unix.Close(fd)
	}
}
