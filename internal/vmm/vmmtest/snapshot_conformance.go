package vmmtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// snapshot checks vmm.Snapshotter and vmm.Restorer: a snapshot of a running machine leaves it
// running and usable; two machines restored from one snapshot at once run side by side, each
// with its own process and sockets, and Kill leaves nothing of either; a restored machine's
// snapshot has the shape of a started one's (sameShape); Restore refuses another
// driver's snapshot, another VMM version's and another machine shape's with
// vmm.ErrIncompatibleSnapshot, and a restore that fails leaves nothing; a snapshot of a killed
// machine fails promptly. A machine that is a vmm.Precopier is checked by precopy.
func snapshot(t *testing.T, h Harness, m vmm.Machine) {
	s, ok := m.(vmm.Snapshotter)
	if !ok {
		t.Skipf("%T does not implement vmm.Snapshotter", m)
	}
	if h.NoSnapshots != "" {
		t.Skip(h.NoSnapshots)
	}
	r, ok := h.Driver.(vmm.Restorer)
	if !ok {
		t.Fatalf("%T implements vmm.Snapshotter but its driver %T does not implement vmm.Restorer", m, h.Driver)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	running := func(m vmm.Machine, what string) {
		t.Helper()
		if h.Running != nil && !h.Running(t, m) {
			t.Errorf("%s does not run", what)
		}
	}

	dir := t.TempDir()
	begin := time.Now()
	snap, err := s.Snapshot(ctx, dir)
	if err != nil {
		t.Fatalf("Snapshot of a running machine: %v", err)
	}
	t.Logf("Snapshot took %s", time.Since(begin))
	if snap.Driver != h.Driver.Name() || snap.VMMVersion == "" || snap.Dir != dir {
		t.Errorf("Snapshot() = %+v; want Driver %q, a VMMVersion and Dir %s", snap, h.Driver.Name(), dir)
	}
	read, err := vmm.ReadSnapshot(dir)
	if err != nil {
		t.Fatalf("ReadSnapshot of what Snapshot wrote: %v", err)
	}
	if read.Driver != snap.Driver || read.VMMVersion != snap.VMMVersion || len(read.Files) != len(snap.Files) {
		t.Errorf("ReadSnapshot = %+v; want what Snapshot returned, %+v", read, snap)
	}
	for role := range snap.Files {
		fi, err := os.Stat(snap.Path(role))
		if err != nil {
			t.Errorf("snapshot file %s: %v", role, err)
			continue
		}
		t.Logf("snapshot file %s: %d bytes (%d allocated)", role, fi.Size(), allocated(fi))
	}
	running(m, "the machine after Snapshot")
	if _, err := s.Snapshot(ctx, dir); err == nil {
		t.Error("a second Snapshot into the directory of the first succeeded; want an error")
	}
	if again, err := vmm.ReadSnapshot(dir); err != nil || again.VMMVersion != read.VMMVersion {
		t.Errorf("the first snapshot after a second Snapshot into its directory failed: %+v, %v; want it intact", again, err)
	}
	// A paused machine stays paused, and can be saved again.
	if p, ok := m.(vmm.Pauser); ok {
		if err := p.Pause(ctx); err != nil {
			t.Errorf("Pause after Snapshot: %v", err)
		}
		if _, err := s.Snapshot(ctx, t.TempDir()); err != nil {
			t.Errorf("Snapshot of a paused machine: %v", err)
		}
		if h.Running != nil && h.Running(t, m) {
			t.Error("a paused machine runs after Snapshot; want it left paused")
		}
		if err := p.Resume(ctx); err != nil {
			t.Errorf("Resume after Snapshot: %v", err)
		}
		running(m, "the machine resumed after a Snapshot while paused")
	}

	before := children(t)
	restore := func(cfg vmm.Config, snap vmm.Snapshot) (vmm.Machine, error) {
		t.Helper()
		rctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		begin := time.Now()
		c, err := r.Restore(rctx, cfg, snap)
		if rctx.Err() != nil {
			t.Errorf("Restore returned (%v) only after %s; its contract bounds it to the start bound", err, bound)
		}
		if err == nil {
			t.Logf("Restore took %s", time.Since(begin))
			t.Cleanup(func() { _ = c.Kill() })
		}
		return c, err
	}

	// Two clones at once, each with its own identity.
	var clones []vmm.Machine
	var cfgs []vmm.Config
	for i := 0; i < 2; i++ {
		cfg := h.Config(t)
		c, err := restore(cfg, read)
		if err != nil {
			t.Fatalf("Restore of clone %d: %v", i, err)
		}
		clones = append(clones, c)
		cfgs = append(cfgs, cfg)
	}
	seen := map[string]bool{}
	for i, c := range clones {
		rec := c.Record()
		if rec.Driver != h.Driver.Name() {
			t.Errorf("clone %d: Record().Driver = %q; want %q", i, rec.Driver, h.Driver.Name())
		}
		if st, err := vmm.StartTime(rec.PID); err != nil || st != rec.StartTime {
			t.Errorf("clone %d: pid %d start time = %d, %v; want a running process with Record().StartTime %d", i, rec.PID, st, err, rec.StartTime)
		}
		if rec.PID == m.Record().PID || (i > 0 && rec.PID == clones[0].Record().PID) {
			t.Errorf("clone %d runs in pid %d, a process of another machine", i, rec.PID)
		}
		for name, sock := range rec.Sockets {
			if seen[sock] {
				t.Errorf("clone %d: socket %s (%s) is another machine's", i, name, sock)
			}
			seen[sock] = true
			if _, err := os.Lstat(sock); err != nil {
				t.Errorf("clone %d: socket %s: %v", i, name, err)
			}
			if rel, err := filepath.Rel(cfgs[i].RuntimeDir, sock); err != nil || !filepath.IsLocal(rel) {
				t.Errorf("clone %d: socket %s (%s) is not in its runtime directory %s", i, name, sock, cfgs[i].RuntimeDir)
			}
		}
		running(c, "a restored machine")
	}
	// A restored machine can be saved and restored in turn (a fork of a clone).
	if cs, ok := clones[0].(vmm.Snapshotter); !ok {
		t.Errorf("restored machine %T does not implement vmm.Snapshotter", clones[0])
	} else if snap2, err := cs.Snapshot(ctx, t.TempDir()); err != nil {
		t.Errorf("Snapshot of a restored machine: %v", err)
	} else {
		running(clones[0], "a restored machine after its Snapshot")
		sameShape(t, read, snap2)
		if c, err := restore(h.Config(t), snap2); err != nil {
			t.Errorf("Restore of a restored machine's snapshot: %v", err)
		} else {
			running(c, "a machine restored from a restored machine's snapshot")
			kill(t, c, "Kill of a machine restored from a restored machine's snapshot")
		}
	}
	// vmm.Precopier, on a restored machine (where the QEMU driver has its memory file to copy
	// ahead) and on the started one.
	for what, c := range map[string]vmm.Machine{"a restored machine": clones[1], "a started machine": m} {
		if p, ok := c.(vmm.Precopier); ok {
			precopy(t, ctx, what, c, p, read, func(snap vmm.Snapshot) {
				if c, err := restore(h.Config(t), snap); err != nil {
					t.Errorf("Restore of a snapshot of %s made after a Precopy: %v", what, err)
				} else {
					running(c, "a machine restored from a snapshot made after a Precopy")
					kill(t, c, "Kill of a machine restored from a snapshot made after a Precopy")
				}
			})
			running(c, what+" after its Precopy and Snapshot")
		}
	}
	for i, c := range clones {
		rec := c.Record()
		kill(t, c, "Kill of a restored machine")
		if st, err := vmm.StartTime(rec.PID); err == nil && st == rec.StartTime {
			t.Errorf("clone %d: pid %d still runs after Kill returned", i, rec.PID)
		}
		noSockets(t, cfgs[i].RuntimeDir, "after Kill of a restored machine")
	}
	running(m, "the snapshotted machine after its clones were killed")

	// Refusals, before anything starts.
	for name, edit := range map[string]func(*vmm.Snapshot, *vmm.Config){
		"another driver's":      func(s *vmm.Snapshot, _ *vmm.Config) { s.Driver = "not-" + s.Driver },
		"another VMM version's": func(s *vmm.Snapshot, _ *vmm.Config) { s.VMMVersion += "-tampered" },
		"another vCPU count's":  func(_ *vmm.Snapshot, c *vmm.Config) { c.VCPU++ },
		"another memory size's": func(_ *vmm.Snapshot, c *vmm.Config) { c.MemoryMiB += 2 },
	} {
		cfg := h.Config(t)
		bad := read
		bad.Files = map[string]string{}
		for k, v := range read.Files {
			bad.Files[k] = v
		}
		edit(&bad, &cfg)
		c, err := restore(cfg, bad)
		if err == nil {
			_ = c.Kill()
			t.Errorf("Restore of %s snapshot succeeded; want an error wrapping vmm.ErrIncompatibleSnapshot", name)
		} else if !errors.Is(err, vmm.ErrIncompatibleSnapshot) {
			t.Errorf("Restore of %s snapshot = %v; want an error wrapping vmm.ErrIncompatibleSnapshot", name, err)
		} else {
			t.Logf("Restore of %s snapshot refused: %v", name, err)
		}
		noSockets(t, cfg.RuntimeDir, "after a refused Restore")
	}

	// A restore that fails once the VMM started: the snapshot's files are garbage.
	broken := read
	broken.Dir = t.TempDir()
	for role, name := range read.Files {
		if err := os.WriteFile(filepath.Join(broken.Dir, name), []byte("not a snapshot\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = role
	}
	cfg := h.Config(t)
	if c, err := restore(cfg, broken); err == nil {
		_ = c.Kill()
		t.Error("Restore from garbage files succeeded; want an error")
	} else {
		t.Logf("Restore from garbage files failed as it should: %v", err)
	}
	for pid := range children(t) {
		if !before[pid] {
			t.Errorf("process %d (%s) started by a Restore still runs", pid, cmdline(pid))
		}
	}
	noSockets(t, cfg.RuntimeDir, "after a failed Restore")

	// A snapshot of a killed machine fails, promptly, and leaves no files.
	kill(t, m, "Kill")
	gone := t.TempDir()
	if _, err := s.Snapshot(ctx, gone); err == nil {
		t.Error("Snapshot after Kill succeeded; want an error")
	} else if ctx.Err() != nil {
		t.Errorf("Snapshot after Kill = %v only once the context was done; want a prompt error", err)
	}
	if left, _ := os.ReadDir(gone); len(left) != 0 {
		t.Errorf("the failed Snapshot left %d files in its directory", len(left))
	}
}

// precopy checks vmm.Precopier on m (what says which machine): a Snapshot into the directory
// of a Precopy is a whole snapshot, of first's shape, that restores (restored checks that); a
// Precopy released without a Snapshot leaves the next Snapshot, into another directory, whole
// too; a Precopy into a directory that holds a snapshot is refused.
func precopy(t *testing.T, ctx context.Context, what string, m vmm.Machine, p vmm.Precopier, first vmm.Snapshot, restored func(vmm.Snapshot)) {
	t.Helper()
	s := m.(vmm.Snapshotter)
	dir := t.TempDir()
	release, err := p.Precopy(ctx, dir)
	if err != nil {
		t.Errorf("Precopy of %s: %v", what, err)
		return
	}
	snap, err := s.Snapshot(ctx, dir)
	release()
	if err != nil {
		t.Errorf("Snapshot of %s into the directory of its Precopy: %v", what, err)
		return
	}
	sameShape(t, first, snap)
	restored(snap)

	other := t.TempDir()
	release, err = p.Precopy(ctx, other)
	if err != nil {
		t.Errorf("a second Precopy of %s: %v", what, err)
		return
	}
	release()
	if snap, err := s.Snapshot(ctx, t.TempDir()); err != nil {
		t.Errorf("Snapshot of %s after a Precopy released without one: %v", what, err)
	} else {
		restored(snap)
	}
	if release, err := p.Precopy(ctx, dir); err == nil {
		release()
		t.Errorf("Precopy of %s into a directory that holds a snapshot succeeded; want an error", what)
	}
}

// sameShape checks that the snapshot of a restored machine (of) keeps the guest's memory out
// of its state as the snapshot of a started machine (first) does: where first has a memory
// file, so does of, and of's state is not larger than first's beyond its own slack (a state
// that grows by the guest's RAM makes every clone load a private copy of it).
func sameShape(t *testing.T, first, of vmm.Snapshot) {
	t.Helper()
	if first.Path("memory") != "" && of.Path("memory") == "" {
		t.Errorf("the snapshot of a restored machine has files %v, the snapshot of a started one %v; want its memory in a file too", of.Files, first.Files)
	}
	a, aerr := os.Stat(first.Path("state"))
	b, berr := os.Stat(of.Path("state"))
	if aerr != nil || berr != nil {
		return // a driver without a "state" role
	}
	if b.Size() > 2*a.Size()+1<<20 {
		t.Errorf("the state of a restored machine's snapshot is %d bytes, a started machine's %d; want the memory kept out of it", b.Size(), a.Size())
	}
	t.Logf("state of a started machine's snapshot: %d bytes; of a restored machine's: %d bytes, files %v", a.Size(), b.Size(), of.Files)
}
