package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// A QEMU snapshot is a migration stream saved while the vCPUs are stopped ("state"). A
// machine started with Config.ShareMemory has its RAM in a memfd: the stream leaves the RAM
// out (x-ignore-shared) and the memfd is copied, sparse, to "memory", which restored machines
// map privately, so that clones share the pages none of them wrote. Any other machine (one
// that was itself restored maps its RAM privately, one started without ShareMemory has it
// anonymous) has RAM that x-ignore-shared cannot leave out: it is migrated into a template
// QEMU whose RAM is the snapshot's memory file (template.go), so that its snapshot has the
// same shape. Only a machine recorded by an older banger, whose record lacks what a template
// needs, has its RAM in the stream, and each machine restored from that loads a private copy.
// A restored QEMU starts with -incoming defer and loads the stream through a file descriptor
// passed over QMP; it comes up paused and Restore continues it.
const (
	stateFile  = "state"
	memoryFile = "memory"
)

// afterPrepare, when set (by tests), is called by Snapshot between the copy of a restored
// machine's memory file and the stop of its vCPUs: what the guest writes then must be saved.
var afterPrepare atomic.Pointer[func()]

// saveBound bounds a snapshot's migration and memory copy.
const saveBound = time.Minute

// shape is what a machine was started with that a snapshot of it must record: kept in the
// Record's Extra, so that a machine re-attached after a daemon restart can be saved too.
type shape struct {
	VCPU      int        `json:"vcpu"`
	MemoryMiB int        `json:"memory_mib"`
	Disks     int        `json:"disks"`
	NIC       bool       `json:"nic"`
	Accel     host.Accel `json:"accel"`
	// SharedRAM says that the guest's RAM is a memfd (Config.ShareMemory).
	SharedRAM bool `json:"shared_ram,omitempty"`
	// MappedRAM is, for a restored machine, the memory file its RAM maps privately
	// (mapped.go). Records of an older banger lack it.
	MappedRAM string `json:"mapped_ram,omitempty"`
	// MappedRAMDev and MappedRAMInode identify that file when the machine started: its
	// mapping is found by them once the file was moved or removed (a boot snapshot
	// invalidated while VMs restored from it run). Records of an older banger lack them.
	MappedRAMDev   uint64 `json:"mapped_ram_dev,omitempty"`
	MappedRAMInode uint64 `json:"mapped_ram_inode,omitempty"`
	// DiskReadOnly says, for each disk, whether it is read-only (the guest sees that): a
	// template (template.go) needs it. Records of an older banger lack it.
	DiskReadOnly []bool `json:"disk_read_only,omitempty"`
}

func newShape(cfg vmm.Config, sharedRAM bool, mappedRAM string) json.RawMessage {
	sh := shape{VCPU: cfg.VCPU, MemoryMiB: cfg.MemoryMiB, Disks: len(cfg.Disks), NIC: cfg.NIC != nil, Accel: cfg.Accel, SharedRAM: sharedRAM, MappedRAM: mappedRAM}
	var st unix.Stat_t
	if mappedRAM != "" && unix.Stat(mappedRAM, &st) == nil {
		sh.MappedRAMDev, sh.MappedRAMInode = uint64(st.Dev), st.Ino
	}
	for _, d := range cfg.Disks {
		sh.DiskReadOnly = append(sh.DiskReadOnly, d.ReadOnly)
	}
	b, _ := json.Marshal(sh)
	return b
}

// snapshotExtra is a QEMU snapshot's own data (vmm.Snapshot.Extra).
type snapshotExtra struct {
	Accel host.Accel `json:"accel"` // TCG and KVM machines have different CPU models
	// StoppedAt is when the machine's vCPUs stopped for the snapshot, and TimerOffset where
	// the stream's timer section keeps the guest's clocks: with both, a TCG restore soon
	// after catches the guest's clock up (clock.go). Absent for streams that carry guest RAM
	// and for a machine stopped by someone else.
	StoppedAt   time.Time `json:"stopped_at,omitzero"`
	TimerOffset int64     `json:"timer_offset,omitempty"`
}

// Snapshot implements vmm.Snapshotter: it stops the vCPUs, saves the migration stream (and
// the shared RAM) into dir, and continues the vCPUs if they ran. QEMU is left in its
// "postmigrate" state when it was paused; Resume continues it from there.
func (m *machine) Snapshot(ctx context.Context, dir string) (snap vmm.Snapshot, err error) {
	select {
	case <-m.proc.Done():
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: the machine (pid %d) is gone", m.rec.PID)
	default:
	}
	// What a Precopy into dir copied (the memory file) is this Snapshot's to finish.
	mapped := m.takePrecopy(dir)
	if mapped != nil {
		defer mapped.close()
	}
	check := []string{stateFile, memoryFile}
	if mapped != nil {
		check = check[:1]
	}
	if err := vmm.CheckSnapshotDir(dir, check...); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	var sh shape
	if len(m.rec.Extra) == 0 || json.Unmarshal(m.rec.Extra, &sh) != nil {
		return vmm.Snapshot{}, errors.New("qemu: snapshot: the machine was started by a banger that did not record its shape; restart it to snapshot it")
	}
	ctx, cancel := context.WithTimeout(ctx, saveBound)
	defer cancel()
	s, err := dialQMP(ctx, m.rec.Sockets["qmp"])
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	defer s.Close()
	var v qmpVersion
	if err := s.run("query-version", nil, &v); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	st, err := s.status()
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			vmm.RemoveSnapshotFiles(dir, stateFile, memoryFile)
		}
	}()
	// A restored machine's memory file is copied before the vCPUs stop (see mapped.go), by
	// Precopy or here.
	why := "its RAM is neither shared memory nor a memory file it was restored from"
	if mapped == nil && !sh.SharedRAM && sh.MappedRAM != "" {
		p, perr := m.prepareMapped(ctx, dir, sh)
		switch {
		case perr == nil:
			mapped = p
			defer mapped.close()
			if f := afterPrepare.Load(); f != nil {
				(*f)()
			}
		case !errors.Is(perr, errNotMapped):
			return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot into %s: %w", dir, perr)
		default:
			// Through the template, as a machine whose RAM is anonymous.
			why = perr.Error()
		}
	}
	stoppedAt := m.pausedSince()
	if st == "running" {
		if err := s.run("stop", nil, nil); err != nil {
			return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
		}
		stoppedAt = time.Now()
		defer func() {
			if cerr := s.run("cont", nil, nil); cerr != nil {
				err = errors.Join(err, fmt.Errorf("qemu: snapshot: continue the machine: %w", cerr))
			}
		}()
	}

	if mapped != nil {
		err := m.finishMapped(ctx, s, dir, mapped)
		if err == nil {
			m.savedBy = "memory map"
			return m.describe(dir, v, sh, map[string]string{"state": stateFile, "memory": memoryFile}, stoppedAt)
		}
		if !errors.Is(err, errNotMapped) {
			return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot into %s: %w", dir, err)
		}
		// Through the template, as a machine whose RAM is anonymous, over nothing of this try.
		vmm.RemoveSnapshotFiles(dir, stateFile, memoryFile)
		why = err.Error()
	}
	if !sh.SharedRAM && sh.reshapable() {
		m.savedBy = "template"
		m.logger().Info("qemu: saving through a template QEMU, which receives the whole RAM (seconds under emulation)",
			"pid", m.rec.PID, "snapshot", dir, "why", why)
		if err := m.saveThroughTemplate(ctx, s, dir, sh); err != nil {
			return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot into %s: %w", dir, err)
		}
		return m.describe(dir, v, sh, map[string]string{"state": stateFile, "memory": memoryFile}, stoppedAt)
	}
	if !sh.SharedRAM {
		stoppedAt = time.Time{} // the guest's RAM goes into the stream: no clock catch-up
	}
	caps := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": sh.SharedRAM}}}
	if err := s.run("migrate-set-capabilities", caps, nil); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, stateFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	err = s.runWithFile("getfd", map[string]string{"fdname": "snapshot"}, nil, f)
	f.Close()
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	if err := s.run("migrate", map[string]string{"uri": "fd:snapshot"}, nil); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	if err := waitMigration(ctx, s); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot into %s: %w", dir, err)
	}
	files := map[string]string{"state": stateFile}
	if sh.SharedRAM {
		if err := copyRAM(ctx, m.rec.PID, filepath.Join(dir, memoryFile)); err != nil {
			return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
		}
		files["memory"] = memoryFile
	}
	return m.describe(dir, v, sh, files, stoppedAt)
}

// describe writes the description of the snapshot in dir, made by QEMU version v of a machine
// of shape sh, with files. stoppedAt, when the vCPUs stopped (zero: unknown, or a stream that
// carries guest RAM), is recorded with the stream's timer section for TCG machines.
func (m *machine) describe(dir string, v qmpVersion, sh shape, files map[string]string, stoppedAt time.Time) (vmm.Snapshot, error) {
	x := snapshotExtra{Accel: sh.Accel}
	if !stoppedAt.IsZero() && sh.Accel == host.TCG {
		if off, err := timerOffsetOf(filepath.Join(dir, stateFile)); err == nil && off > 0 {
			x.StoppedAt, x.TimerOffset = stoppedAt.UTC(), off
		}
	}
	extra, _ := json.Marshal(x)
	snap := vmm.Snapshot{Dir: dir, Driver: Name, VMMVersion: v.String(), VCPU: sh.VCPU, MemoryMiB: sh.MemoryMiB,
		Disks: sh.Disks, NIC: sh.NIC, Files: files, Extra: extra}
	if err := vmm.WriteSnapshot(snap); err != nil {
		return vmm.Snapshot{}, fmt.Errorf("qemu: snapshot: %w", err)
	}
	return snap, nil
}

// waitMigration polls query-migrate until the outgoing migration completed; if it failed or
// ctx ends first, the migration is cancelled.
func waitMigration(ctx context.Context, s *qmpSession) error {
	for {
		var q struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := s.run("query-migrate", nil, &q); err != nil {
			return err
		}
		switch q.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", q.Status, q.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			_ = s.run("migrate_cancel", nil, nil)
			return fmt.Errorf("migration did not complete: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// copyRAM copies the guest RAM memfd of QEMU process pid into a new file at dst, keeping its
// holes (pages the guest never touched) holes. It stops when ctx is done.
func copyRAM(ctx context.Context, pid int, dst string) error {
	src, err := openRAM(pid)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("guest RAM: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("guest RAM: %w", err)
	}
	defer out.Close()
	if err := copySparse(ctx, src, out, fi.Size()); err != nil {
		return fmt.Errorf("guest RAM: copy to %s: %w", dst, err)
	}
	return out.Close()
}

// ramChunk is how much of the guest RAM copyRAM copies between looks at its context.
const ramChunk = 64 << 20

// openRAM opens the guest RAM memfd of QEMU process pid through /proc.
func openRAM(pid int) (*os.File, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("guest RAM: %w", err)
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(target, "/memfd:memory-backend-memfd") {
			return os.Open(filepath.Join(dir, e.Name()))
		}
	}
	return nil, fmt.Errorf("guest RAM: no memfd among the files of QEMU (pid %d)", pid)
}

// qmpVersion is query-version's answer.
type qmpVersion struct {
	QEMU struct {
		Major, Minor, Micro int
	} `json:"qemu"`
	Package string `json:"package"`
}

// String is the version as `qemu -version` prints it: "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)".
func (v qmpVersion) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
	// QEMU 7.2 answers "Debian 1:7.2+dfsg-7", older ones " (Debian …)".
	switch p := strings.TrimSpace(v.Package); {
	case p == "":
	case strings.HasPrefix(p, "("):
		s += " " + p
	default:
		s += " (" + p + ")"
	}
	return s
}

// binaryVersion returns the version of the QEMU binary at bin, as qmpVersion.String does:
// from the driver's cache while the file is the same (path, inode, size and modification time),
// or by running `bin -version`.
func (d *Driver) binaryVersion(ctx context.Context, bin string) (string, error) {
	fi, err := os.Stat(bin)
	if err != nil {
		return "", fmt.Errorf("qemu: %w", err)
	}
	key := versionKey{path: bin, size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		key.ino = st.Ino
	}
	d.versionMu.Lock()
	defer d.versionMu.Unlock()
	if d.versionOf == key && d.version != "" {
		return d.version, nil
	}
	v, err := runVersion(ctx, bin)
	if err != nil {
		return "", err
	}
	d.versionOf, d.version = key, v
	return v, nil
}

// versionKey tells one QEMU binary file from another (an upgrade replaces it).
type versionKey struct {
	path  string
	ino   uint64
	size  int64
	mtime time.Time
}

// runVersion runs `bin -version` and returns its version as qmpVersion.String does.
func runVersion(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-version").Output()
	if err != nil {
		return "", fmt.Errorf("qemu: %s -version: %w", bin, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	_, v, ok := strings.Cut(line, " version ")
	if !ok || strings.TrimSpace(v) == "" {
		return "", fmt.Errorf("qemu: %s -version printed no version: %.100q", bin, line)
	}
	return strings.TrimSpace(v), nil
}

// Restore implements vmm.Restorer.
func (d *Driver) Restore(ctx context.Context, cfg vmm.Config, snap vmm.Snapshot) (vmm.Machine, error) {
	name := d.binary()
	bin, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", errNotFound(name))
	}
	version, err := d.binaryVersion(ctx, bin)
	if err != nil {
		return nil, err
	}
	if err := snap.Compatible(Name, version, cfg); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	var extra snapshotExtra
	if err := json.Unmarshal(snap.Extra, &extra); err != nil {
		return nil, fmt.Errorf("qemu: cannot restore the snapshot in %s: its QEMU data is unreadable (%v): %w", snap.Dir, err, vmm.ErrIncompatibleSnapshot)
	}
	if extra.Accel != cfg.Accel {
		return nil, fmt.Errorf("qemu: cannot restore the snapshot in %s: it was made under %s, the VM runs under %s: %w", snap.Dir, extra.Accel, cfg.Accel, vmm.ErrIncompatibleSnapshot)
	}
	state := snap.Path("state")
	if state == "" {
		return nil, fmt.Errorf("qemu: cannot restore the snapshot in %s: it has no state file: %w", snap.Dir, vmm.ErrIncompatibleSnapshot)
	}
	stream, err := os.Open(state)
	if err != nil {
		return nil, fmt.Errorf("qemu: restore: %w", err)
	}
	defer stream.Close()
	var restoreMem []string
	if mem := snap.Path("memory"); mem != "" {
		restoreMem = []string{mem}
	}
	ctx, cancel := context.WithTimeout(ctx, saveBound)
	defer cancel()
	m, err := d.launch(ctx, cfg, restoreMem, "-incoming", "defer")
	if err != nil {
		return nil, err
	}
	if extra.TimerOffset > 0 && cfg.Accel == host.TCG {
		// Best effort: a stream that cannot be caught up is loaded as it is, and the agent
		// sets the clock.
		if caught, err := catchUpClock(stream, extra.TimerOffset, time.Since(extra.StoppedAt), d.TSCkHz); err == nil && caught != nil {
			defer caught.Close()
			stream = caught
		}
	}
	if err := m.incoming(ctx, stream, restoreMem != nil); err != nil {
		_ = m.Kill()
		return nil, fmt.Errorf("qemu: restore from %s: %w", snap.Dir, err)
	}
	return m, nil
}

// incoming loads the migration stream into a QEMU started with -incoming defer and continues
// the vCPUs.
func (m *machine) incoming(ctx context.Context, stream *os.File, ignoreShared bool) error {
	s, err := dialQMP(ctx, m.rec.Sockets["qmp"])
	if err != nil {
		return err
	}
	defer s.Close()
	// The flag also makes QEMU read the RAM blocks' addresses that a source with it sends.
	caps := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": ignoreShared}}}
	if err := s.run("migrate-set-capabilities", caps, nil); err != nil {
		return err
	}
	// No announcements after the load. QEMU would have the guest announce its address (a
	// gratuitous ARP and IPv6 neighbour advertisements, five rounds over ~0.5 s) as a
	// migrated guest must, since it moved to another host port. A restored guest is not one:
	// a clone still has its snapshot's MAC and address until its renewal, so its announcements
	// would point the bridge at the clone for its source's MAC, and each round wakes the guest
	// (a fresh clone pays for it under emulation). A renewal announces the new address itself;
	// a resumed guest is found through the bridge's flooding until it sends.
	if err := s.run("migrate-set-parameters", map[string]any{"announce-rounds": 0}, nil); err != nil {
		return err
	}
	if err := s.runWithFile("getfd", map[string]string{"fdname": "snapshot"}, nil, stream); err != nil {
		return err
	}
	if err := s.run("migrate-incoming", map[string]string{"uri": "fd:snapshot"}, nil); err != nil {
		return err
	}
	for {
		st, err := s.status()
		if err != nil {
			// QEMU exits when it cannot load the stream.
			select {
			case <-m.proc.Done():
				return fmt.Errorf("qemu could not load the snapshot: %s", vmm.LogTail(m.rec.Log, 5))
			case <-time.After(2 * time.Second):
			}
			return err
		}
		if st != "inmigrate" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("loading the snapshot did not finish: %w", ctx.Err())
		case <-m.proc.Done():
			return fmt.Errorf("qemu could not load the snapshot: %s", vmm.LogTail(m.rec.Log, 5))
		case <-time.After(2 * time.Millisecond):
		}
	}
	return s.run("cont", nil, nil)
}

var (
	_ vmm.Snapshotter = (*machine)(nil)
	_ vmm.Restorer    = (*Driver)(nil)
)
