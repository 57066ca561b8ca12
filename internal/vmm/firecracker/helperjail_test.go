package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/fcjail"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
	"golang.org/x/sys/unix"
)

// fakeGID is the group fakeJails gives writable files, as the helper gives them the jail's.
const fakeGID = 912399

// fakeJails is Jails as the driver sees banger's root helper, in this process and without a
// jailer: the recorded Firecracker (bin) serves in <base>/<id>/root, taking the paths it is
// given as inside it; the files are linked in as the helper links them, and writable ones given
// to fakeGID (and back on removal, when giveBack is set). It records the calls.
type fakeJails struct {
	bin, base string
	ready     error
	giveBack  bool

	mu     sync.Mutex
	procs  map[string]*exec.Cmd
	shared map[string][]string // per jail, the writable files' links
	calls  []string
	specs  []fcjail.Spec
}

func newFakeJails(t *testing.T, bin string) *fakeJails {
	return &fakeJails{bin: bin, base: shortDir(t, "bfj"), giveBack: true, procs: map[string]*exec.Cmd{}, shared: map[string][]string{}}
}

func (f *fakeJails) call(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeJails) JailsReady() error { return f.ready }

func (f *fakeJails) JailIDs() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.procs {
		ids = append(ids, id)
	}
	return ids, nil
}

func (f *fakeJails) StartJail(spec fcjail.Spec) (fcjail.Started, error) {
	f.call("start " + spec.ID)
	f.mu.Lock()
	f.specs = append(f.specs, spec)
	f.mu.Unlock()
	root := filepath.Join(f.base, spec.ID, "root")
	if err := os.MkdirAll(filepath.Join(root, "run"), 0o700); err != nil {
		return fcjail.Started{}, err
	}
	link := func(fl *os.File, name string, writable bool) error {
		if fl == nil {
			return nil
		}
		dst := filepath.Join(root, name)
		if err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(fl.Fd())), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW); err != nil {
			return err
		}
		if writable {
			f.mu.Lock()
			f.shared[spec.ID] = append(f.shared[spec.ID], dst)
			f.mu.Unlock()
			return os.Chown(dst, -1, fakeGID)
		}
		return nil
	}
	files := []struct {
		f        *os.File
		name     string
		writable bool
	}{{spec.Kernel, fcjail.Kernel, false}, {spec.Initrd, fcjail.Initrd, false}, {spec.Log, fcjail.Log, true}, {spec.Metrics, fcjail.Metrics, true}}
	for i, d := range spec.Disks {
		files = append(files, struct {
			f        *os.File
			name     string
			writable bool
		}{d.File, fcjail.DiskName(i), d.Writable})
	}
	for _, fl := range files {
		if err := link(fl.f, fl.name, fl.writable); err != nil {
			return fcjail.Started{}, err
		}
	}
	pidfd := -1
	cmd := exec.Command(f.bin, "--api-sock", fcjail.APISocketArg, "--level", "Warning")
	cmd.Env = append(os.Environ(), envRecordedRoot+"="+root)
	cmd.Stdout, cmd.Stderr = spec.Console, spec.Console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, PidFD: &pidfd}
	if err := cmd.Start(); err != nil {
		return fcjail.Started{}, err
	}
	st, err := fcjail.StartTime(cmd.Process.Pid)
	go cmd.Wait()
	if err != nil {
		return fcjail.Started{}, err
	}
	f.mu.Lock()
	f.procs[spec.ID] = cmd
	f.mu.Unlock()
	return fcjail.Started{UID: os.Getuid(), GID: fakeGID, PID: cmd.Process.Pid, StartTime: st, Pidfd: os.NewFile(uintptr(pidfd), "pidfd")}, nil
}

func (f *fakeJails) DialJail(id, socket string) (net.Conn, error) {
	f.call("dial " + id + " " + socket)
	return net.Dial("unix", filepath.Join(f.base, id, "root", fcjail.Sockets[socket]))
}

func (f *fakeJails) KillJail(id string) error {
	f.call("kill " + id)
	f.mu.Lock()
	cmd := f.procs[id]
	f.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
	}
	return nil
}

func (f *fakeJails) RemoveJail(id string) error {
	f.call("remove " + id)
	_ = f.KillJail(id)
	f.mu.Lock()
	shared := f.shared[id]
	delete(f.shared, id)
	delete(f.procs, id)
	f.mu.Unlock()
	if f.giveBack {
		for _, p := range shared {
			_ = os.Chown(p, -1, 0)
		}
	}
	return os.RemoveAll(filepath.Join(f.base, id))
}

func (f *fakeJails) callList() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, ", ")
}

// recordedBinary is the recorded Firecracker of this version as an executable.
func recordedBinary(t *testing.T, version string) string {
	t.Helper()
	recording, err := filepath.Abs(filepath.Join("testdata", "responses-"+version+".json"))
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shortDir(t, "bfcbin"), "firecracker")
	script := fmt.Sprintf("#!/bin/sh\n%s=%s exec %s \"$@\"\n", envRecordedFirecracker, recording, self)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestConformanceThroughTheHelper runs package vmm's contract suite against the driver of a
// daemon that is not root, whose jails the root helper makes (here fakeJails in front of the
// recorded Firecracker): starts, records, attaches, kills and cleans up through Jails only.
func TestConformanceThroughTheHelper(t *testing.T) {
	bin := recordedBinary(t, "1.14.2")
	vmmtest.Conformance(t, func(t *testing.T) vmmtest.Harness {
		config := func(t *testing.T, kernel string) vmm.Config {
			dir := t.TempDir()
			return vmm.Config{
				ID: "conformance", Name: "conformance", Dir: filepath.Join(dir, "vm"), RuntimeDir: shortDir(t, "bfc"),
				VCPU: 1, MemoryMiB: 128, Kernel: kernel,
				Disks: []vmm.Disk{{Path: sparse(t, filepath.Join(dir, "disk.ext4"), 1<<20)}},
			}
		}
		kernel := filepath.Join(t.TempDir(), "vmlinux")
		if err := os.WriteFile(kernel, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return vmmtest.Harness{
			Driver:        &Driver{Binary: bin, EUID: func() int { return 1000 }, Jails: newFakeJails(t, bin)},
			Config:        func(t *testing.T) vmm.Config { return config(t, kernel) },
			FailingConfig: func(t *testing.T) vmm.Config { return config(t, "/nonexistent/vmlinux") },
			Running:       running,
			NoSnapshots:   "snapshots of a jailed Firecracker are not supported yet",
		}
	})
}

// The driver of a daemon that is not root hands the helper its open files (never paths),
// gives Firecracker the in-jail paths, restores its shared files itself when the jail goes
// (even when the helper could not), and never signals the jail's process itself.
func TestHelperJailStartAndKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another group")
	}
	bin := recordedBinary(t, "1.14.2")
	jails := newFakeJails(t, bin)
	jails.giveBack = false // a jail whose links were moved: only the driver restores
	d := &Driver{Binary: bin, EUID: func() int { return 1000 }, Jails: jails}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	disk := sparse(t, filepath.Join(dir, "disk.ext4"), 1<<20)
	if err := os.Chmod(disk, 0o600); err != nil {
		t.Fatal(err)
	}
	ro := sparse(t, filepath.Join(dir, "ro.ext4"), 1<<20)
	cfg := vmm.Config{ID: "helper-1", Name: "h", Dir: filepath.Join(dir, "vm"), RuntimeDir: shortDir(t, "bfh"),
		VCPU: 1, MemoryMiB: 128, Kernel: kernel, Disks: []vmm.Disk{{Path: disk}, {Path: ro, ReadOnly: true}}}
	ctx, cancel := context.WithTimeout(context.Background(), socketWait)
	defer cancel()
	m, err := d.StartMachine(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(jails.specs) != 1 {
		t.Fatalf("%d jail starts", len(jails.specs))
	}
	spec := jails.specs[0]
	if spec.ID != cfg.ID || len(spec.Disks) != 2 || !spec.Disks[0].Writable || spec.Disks[1].Writable || spec.Console == nil || spec.Log == nil || spec.Metrics == nil {
		t.Fatalf("the jail's spec: %+v", spec)
	}
	var st unix.Stat_t
	if err := unix.Stat(disk, &st); err != nil || st.Gid != fakeGID {
		t.Fatalf("the disk while jailed: gid %d, %v", st.Gid, err)
	}
	if ex := m.ex; !ex.Helper || ex.Jail != "" || ex.JailID != cfg.ID || len(ex.Shared) != 3 {
		t.Fatalf("the record's extra: %+v", ex)
	}
	if st, err := m.State(ctx); err != nil || st != StateRunning {
		t.Fatalf("State through the helper's dial: %q, %v", st, err)
	}
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	if calls := jails.callList(); !strings.Contains(calls, "kill helper-1") || !strings.Contains(calls, "remove helper-1") {
		t.Fatalf("calls: %s", calls)
	}
	if err := unix.Stat(disk, &st); err != nil || st.Gid != 0 || st.Mode&0o777 != 0o600 {
		t.Fatalf("the disk after the jail: gid %d mode %o, %v; want the driver to restore 0 and 0600", st.Gid, st.Mode&0o777, err)
	}
}

// A driver that is not root runs Firecracker only with jails that are ready; its probe says
// what to do otherwise.
func TestProbeThroughTheHelper(t *testing.T) {
	good := fakeBinary(t, t.TempDir(), "firecracker", "Firecracker v1.14.2")
	jails := &fakeJails{ready: errors.New("banger's root helper at /run/banger/helper.sock starts no Firecracker jails: name them in [jails]")}
	p := (&Driver{Binary: good, EUID: func() int { return 1000 }, Jails: jails}).Probe(context.Background())
	if !errors.Is(p.Err, ErrNeedsRoot) || !strings.Contains(p.Err.Error(), "[jails]") || !strings.Contains(p.Err.Error(), "QEMU") {
		t.Errorf("Probe with a helper that starts no jails = %v", p.Err)
	}
	jails.ready = nil
	if p := (&Driver{Binary: good, EUID: func() int { return 1000 }, Jails: jails}).Probe(context.Background()); p.Err != nil || p.Found == "" {
		t.Errorf("Probe with a helper that starts jails = %+v", p)
	}
}

// A daemon killed between a jail's start and its record leaves the jail's Firecracker running
// with no VM to own it: the next daemon's reconcile (SweepOrphans) removes the jails no
// adopted VM owns, and only those.
func TestSweepOrphansRemovesUnownedJails(t *testing.T) {
	bin := recordedBinary(t, "1.14.2")
	jails := newFakeJails(t, bin)
	d := &Driver{Binary: bin, EUID: func() int { return 1000 }, Jails: jails}
	ctx, cancel := context.WithTimeout(context.Background(), socketWait)
	defer cancel()
	machines := map[string]*Machine{}
	for _, id := range []string{"kept", "orphan"} {
		dir := t.TempDir()
		kernel := filepath.Join(dir, "vmlinux")
		if err := os.WriteFile(kernel, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := d.StartMachine(ctx, vmm.Config{ID: id, Name: id, Dir: filepath.Join(dir, "vm"), RuntimeDir: shortDir(t, "bfs"),
			VCPU: 1, MemoryMiB: 128, Kernel: kernel, Disks: []vmm.Disk{{Path: sparse(t, filepath.Join(dir, "disk.ext4"), 1<<20)}}})
		if err != nil {
			t.Fatal(err)
		}
		machines[id] = m
	}
	defer machines["kept"].Kill()
	if err := d.SweepOrphans(map[string]bool{"kept": true}); err != nil {
		t.Fatal(err)
	}
	<-machines["orphan"].Done()
	select {
	case <-machines["kept"].Done():
		t.Fatal("the sweep ended the machine of a live VM")
	default:
	}
	if calls := jails.callList(); !strings.Contains(calls, "remove orphan") || strings.Contains(calls, "remove kept") {
		t.Fatalf("calls: %s", calls)
	}
}
