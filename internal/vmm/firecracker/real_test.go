package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// The tests in this file run real Firecracker (and jailer) binaries. They are named
// *Firecracker* or *Jailer* so that `go test -run 'Firecracker|Jailer' ./...` selects them,
// and skip unless the binaries are given:
//
//	BANGER_FIRECRACKER_BIN=/opt/fc/v1.14.2/firecracker \
//	BANGER_JAILER_BIN=/opt/fc/v1.7.0/jailer \
//	BANGER_FIRECRACKER_OLD_BIN=/opt/fc/v1.7.0/firecracker \
//	go test -count=1 -v -run 'Firecracker|Jailer' ./internal/vmm/firecracker/
//
// (or `make firecracker-test FIRECRACKER_BIN=… JAILER_BIN=…`). They need root and /dev/kvm.
// A guest kernel is needed for InstanceStart: a vmlinux pulled by banger is found, or
// BANGER_TEST_VMLINUX names one. Only TestFirecrackerBootToAgent needs KVM that runs real
// guests; the others configure, start, pause, resume and stop a VM whatever its guest does.

const (
	envFirecracker    = "BANGER_FIRECRACKER_BIN"
	envJailer         = "BANGER_JAILER_BIN"
	envOldFirecracker = "BANGER_FIRECRACKER_OLD_BIN"
	envKernel         = "BANGER_TEST_VMLINUX"
)

func realFirecracker(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(envFirecracker)
	if bin == "" {
		t.Skipf("%s is not set; set it to a Firecracker %s binary (releases: %s) to run the tests against real Firecracker", envFirecracker, SupportedRange, ReleasesURL)
	}
	if os.Geteuid() != 0 {
		t.Skip("the real-Firecracker tests need root (/dev/kvm, the jailer, chown)")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm: Firecracker cannot start a VM here")
	}
	return bin
}

func realJailer(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(envJailer)
	if bin == "" {
		t.Skipf("%s is not set; set it to a jailer binary (from a Firecracker release) to run the jailer tests", envJailer)
	}
	return bin
}

// stateDirs are where banger keeps kernels and images: $XDG_STATE_HOME, $HOME and the HOMEs
// under /tmp that the end-to-end tests leave.
func stateDirs() []string {
	var dirs []string
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		dirs = append(dirs, filepath.Join(d, "banger"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, ".local/state/banger"))
	}
	more, _ := filepath.Glob("/tmp/*/.local/state/banger")
	return append(dirs, more...)
}

// testKernel finds a vmlinux and, next to it, the newest initramfs banger built.
func testKernel(t *testing.T) (kernel, initrd string) {
	t.Helper()
	if k := os.Getenv(envKernel); k != "" {
		if _, err := os.Stat(k); err != nil {
			t.Fatalf("%s=%s: %v", envKernel, k, err)
		}
		return k, newest(filepath.Join(filepath.Dir(k), "initrd-*.cpio"))
	}
	for _, d := range stateDirs() {
		if m, _ := filepath.Glob(filepath.Join(d, "kernels/*/vmlinux")); len(m) > 0 {
			return m[0], newest(filepath.Join(filepath.Dir(m[0]), "initrd-*.cpio"))
		}
	}
	t.Skipf("no vmlinux found (looked under %s); run `banger kernel pull debian-6.1` or set %s", strings.Join(stateDirs(), ", "), envKernel)
	return "", ""
}

func newest(pattern string) string {
	m, _ := filepath.Glob(pattern)
	sort.Slice(m, func(i, j int) bool {
		a, _ := os.Stat(m[i])
		b, _ := os.Stat(m[j])
		return a.ModTime().After(b.ModTime())
	})
	if len(m) == 0 {
		return ""
	}
	return m[0]
}

// testImage returns a root image banger built, or "" when there is none.
func testImage() string {
	for _, d := range stateDirs() {
		if m, _ := filepath.Glob(filepath.Join(d, "images/*/rootfs.ext4")); len(m) > 0 {
			return m[0]
		}
	}
	return ""
}

// sparse makes a sparse file of size bytes.
func sparse(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// shortDir is a directory with a short path (t.TempDir() can exceed the socket path limit).
func shortDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// testConfig is a VM with the real kernel, a read-only image (banger's, or an empty file)
// and a fresh writable disk.
func testConfig(t *testing.T, id string) vmm.Config {
	t.Helper()
	kernel, initrd := testKernel(t)
	dir := t.TempDir()
	image := testImage()
	if image == "" {
		image = sparse(t, filepath.Join(dir, "image.ext4"), 64<<20)
		if err := os.Chmod(image, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	disk := sparse(t, filepath.Join(dir, "disk.ext4"), 256<<20)
	if err := os.Chmod(disk, 0o600); err != nil {
		t.Fatal(err)
	}
	return vmm.Config{
		ID: id, Name: "fc-test", Dir: filepath.Join(dir, "vm"), RuntimeDir: filepath.Join(shortDir(t, "bfc"), id),
		VCPU: 1, MemoryMiB: 256, Accel: host.KVM,
		Kernel: kernel, Initrd: initrd, Cmdline: "banger.lower=vda banger.upper=vdb panic=-1",
		Disks: []vmm.Disk{{Path: image, ReadOnly: true}, {Path: disk}},
	}
}

// processesMentioning lists the pids whose command line contains s.
func processesMentioning(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// assertGone checks that nothing of machine m is left: process, sockets, jail.
func assertGone(t *testing.T, m *Machine, id string) {
	t.Helper()
	rec := m.Record()
	if err := syscall.Kill(rec.PID, 0); err == nil {
		if st, err := vmm.StartTime(rec.PID); err == nil && st == rec.StartTime {
			t.Errorf("firecracker pid %d still runs after Kill", rec.PID)
		}
	}
	if p := processesMentioning(id); len(p) > 0 {
		t.Errorf("processes mentioning %s still run: %v", id, p)
	}
	for name, s := range rec.Sockets {
		if _, err := os.Lstat(s); err == nil {
			t.Errorf("%s socket %s is left behind", name, s)
		}
		if m, _ := filepath.Glob(s + "_*"); len(m) > 0 {
			t.Errorf("vsock listener sockets left behind: %v", m)
		}
	}
	if dir, _, _ := m.Jail(); dir != "" {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("jail %s is left behind", dir)
		}
	}
}

func newID(t *testing.T) string {
	return fmt.Sprintf("t%x", time.Now().UnixNano()&0xffffffffff)
}

func TestFirecrackerRealStartPauseResumeStop(t *testing.T) {
	bin := realFirecracker(t)
	off := false
	d := &Driver{Binary: bin, Jailer: JailerOptions{Enabled: &off}}
	id := newID(t)
	cfg := testConfig(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m, err := d.StartMachine(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer m.Kill()
	tm := m.Timings()
	t.Logf("firecracker %s: API socket after %s, %d configuration calls in %s, InstanceStart %s",
		m.Version(), tm.Socket, tm.Calls-1, tm.Configure, tm.InstanceStart)

	state, err := m.State(ctx)
	if err != nil || state != StateRunning {
		t.Fatalf("state after Start = %q, %v; want %q", state, err, StateRunning)
	}
	for _, step := range []struct {
		do   func(context.Context) error
		want string
	}{{m.Pause, StatePaused}, {m.Resume, StateRunning}, {m.Pause, StatePaused}, {m.Resume, StateRunning}} {
		t0 := time.Now()
		if err := step.do(ctx); err != nil {
			t.Fatalf("to %s: %v", step.want, err)
		}
		took := time.Since(t0)
		if state, err := m.State(ctx); err != nil || state != step.want {
			t.Fatalf("state = %q, %v; want %q", state, err, step.want)
		}
		t.Logf("-> %s in %s", step.want, took)
	}

	// The configuration Firecracker holds is what banger sent.
	var full struct {
		Drives     []Drive       `json:"drives"`
		BootSource BootSource    `json:"boot-source"`
		Machine    MachineConfig `json:"machine-config"`
		Vsock      Vsock         `json:"vsock"`
	}
	c := m.client()
	if err := c.do(ctx, "GET", "/vm/config", "vm config", nil, &full); err != nil {
		t.Logf("GET /vm/config: %v (older Firecracker)", err)
	} else {
		if len(full.Drives) != 2 || full.Drives[0].PathOnHost != cfg.Disks[0].Path || !full.Drives[0].IsReadOnly || full.Drives[1].IsReadOnly {
			t.Errorf("drives = %+v; want the image read-only first, the disk writable second", full.Drives)
		}
		if full.BootSource.BootArgs != BootArgs(cfg.Cmdline) || full.Machine.VCPUCount != 1 || full.Machine.MemSizeMiB != 256 {
			t.Errorf("boot source %+v, machine %+v", full.BootSource, full.Machine)
		}
		if full.Vsock.UDSPath != m.Record().Sockets["vsock"] || full.Vsock.GuestCID != GuestCID {
			t.Errorf("vsock = %+v", full.Vsock)
		}
	}
	c.Close()

	// The agent port: nothing listens in this guest, so Firecracker refuses the CONNECT.
	dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = m.DialAgent(dctx)
	dcancel()
	if err == nil {
		t.Errorf("DialAgent succeeded with no agent in the guest")
	} else {
		t.Logf("DialAgent without an agent: %v", err)
	}

	// Graceful stop as far as the VMM goes: Ctrl-Alt-Del is accepted.
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown (SendCtrlAltDel): %v", err)
	}
	t0 := time.Now()
	if err := m.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	t.Logf("Kill took %s", time.Since(t0))
	select {
	case <-m.Done():
	default:
		t.Errorf("Done not closed after Kill")
	}
	assertGone(t, m, id)
	for _, f := range []string{consoleFile, logFile, metricsFile} {
		if _, err := os.Stat(filepath.Join(cfg.Dir, f)); err != nil {
			t.Errorf("VM file %s: %v (it should stay with the VM)", f, err)
		}
	}
	if log, _ := os.ReadFile(filepath.Join(cfg.Dir, logFile)); !strings.Contains(string(log), "InstanceStart") {
		t.Errorf("firecracker.log does not show the API calls:\n%s", log)
	}
	if console, _ := os.ReadFile(filepath.Join(cfg.Dir, consoleFile)); strings.Contains(string(console), "API server") {
		t.Errorf("Firecracker's own log leaked into the guest console:\n%s", console)
	}
}

func TestFirecrackerRealRejectionsAreVerbatim(t *testing.T) {
	bin := realFirecracker(t)
	off := false
	d := &Driver{Binary: bin, Jailer: JailerOptions{Enabled: &off}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		name   string
		modify func(*vmm.Config)
		want   string
	}{
		{"missing kernel", func(c *vmm.Config) { c.Kernel = "/nonexistent/vmlinux" },
			"firecracker rejected boot-source: Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"},
		{"missing disk", func(c *vmm.Config) { c.Disks[1].Path = "/nonexistent/disk.ext4" },
			"firecracker rejected drive disk1: Drive config error: "},
		{"zero vCPUs", func(c *vmm.Config) { c.VCPU = 0 },
			"firecracker rejected machine-config: Machine config error: The number of vCPUs must be greater than 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := newID(t)
			cfg := testConfig(t, id)
			tc.modify(&cfg)
			m, err := d.StartMachine(ctx, cfg)
			if err == nil {
				m.Kill()
				t.Fatalf("Start succeeded; want %q", tc.want)
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Start error = %v (%T); want an APIError starting %q", err, err, tc.want)
			}
			if p := processesMentioning(id); len(p) > 0 {
				t.Errorf("firecracker left running after a failed start: %v", p)
			}
			if entries, _ := os.ReadDir(cfg.RuntimeDir); len(entries) > 0 {
				t.Errorf("runtime dir not empty after a failed start: %v", entries)
			}
		})
	}
}

func TestFirecrackerRealAttach(t *testing.T) {
	bin := realFirecracker(t)
	off := false
	d := &Driver{Binary: bin, Jailer: JailerOptions{Enabled: &off}}
	id := newID(t)
	cfg := testConfig(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := d.StartMachine(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer m.Kill()

	// A daemon restart: a new driver finds the machine from its record alone.
	am, err := (&Driver{}).Attach(m.Record())
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	a := am.(*Machine)
	if err := a.Pause(ctx); err != nil {
		t.Fatalf("Pause through the attached machine: %v", err)
	}
	if st, _ := m.State(ctx); st != StatePaused {
		t.Errorf("state = %q after Pause through Attach", st)
	}
	if err := a.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	assertGone(t, a, id)
	if _, err := (&Driver{}).Attach(m.Record()); !errors.Is(err, vmm.ErrGone) {
		t.Errorf("Attach after Kill = %v; want ErrGone", err)
	}
}

func TestFirecrackerRealOldVersionRefused(t *testing.T) {
	realFirecracker(t)
	old := os.Getenv(envOldFirecracker)
	if old == "" {
		t.Skipf("%s is not set; set it to a Firecracker older than 1.8 (e.g. v1.7.0) to test the refusal", envOldFirecracker)
	}
	_, err := (&Driver{Binary: old}).Inspect(context.Background())
	if err == nil || !strings.Contains(err.Error(), "too old") {
		t.Fatalf("Probe(%s) = %v; want a too-old error", old, err)
	}
	t.Logf("Probe: %v", err)
}

// TestFirecrackerRealNetworkInterfaceInNetns checks the network-interfaces request against
// real Firecracker. Firecracker creates the tap itself, so it runs in a network namespace of
// its own (gone with the process): the host's network is never touched.
func TestFirecrackerRealNetworkInterfaceInNetns(t *testing.T) {
	bin := realFirecracker(t)
	dir := shortDir(t, "bfn")
	sock := filepath.Join(dir, "api.sock")
	cmd := exec.Command(bin, "--api-sock", sock, "--level", "Warning")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; i < 2000; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c := NewClient(sock)
	defer c.Close()
	ctx := context.Background()
	const tap = "bgtest0"
	if err := c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: tap, GuestMAC: "06:00:0a:00:00:02"}); err != nil {
		t.Fatalf("PUT network-interfaces: %v", err)
	}
	if _, err := net.InterfaceByName(tap); err == nil {
		t.Errorf("tap %s appeared in the host's namespace", tap)
	}
	err := c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth1", HostDevName: tap, GuestMAC: "06:00:0a:00:00:03"})
	t.Logf("a second interface on the same tap: %v", err)
}

func TestJailerRealStartPauseResumeStop(t *testing.T) {
	bin := realFirecracker(t)
	jailer := realJailer(t)
	on := true
	base := shortDir(t, "bjl")
	d := &Driver{Binary: bin, Jailer: JailerOptions{Enabled: &on, Binary: jailer, ChrootBase: base}}
	st, err := d.JailerStatus(context.Background())
	if err != nil || !st.Enabled {
		t.Fatalf("JailerStatus = %+v, %v", st, err)
	}
	t.Logf("jailer: %s; %s", st.Reason, st.Warning)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Two VMs at once: each gets its own uid.
	var ms []*Machine
	var cfgs []vmm.Config
	for i := 0; i < 2; i++ {
		id := newID(t) + strconv.Itoa(i)
		cfg := testConfig(t, id)
		m, err := d.StartMachine(ctx, cfg)
		if err != nil {
			t.Fatalf("Start (jailed) %d: %v", i, err)
		}
		defer m.Kill()
		ms = append(ms, m)
		cfgs = append(cfgs, cfg)
		tm := m.Timings()
		t.Logf("jailed firecracker %s: API socket after %s, %d configuration calls in %s, InstanceStart %s",
			m.Version(), tm.Socket, tm.Calls-1, tm.Configure, tm.InstanceStart)
	}
	_, uid0, _ := ms[0].Jail()
	_, uid1, _ := ms[1].Jail()
	if uid0 == uid1 || uid0 < DefaultJailerID {
		t.Errorf("jail uids %d and %d; want distinct ids from %d", uid0, uid1, DefaultJailerID)
	}

	for i, m := range ms {
		dir, uid, gid := m.Jail()
		if !strings.HasPrefix(dir, base) {
			t.Errorf("jail %s is not under %s", dir, base)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.Record().PID))
		if err != nil {
			t.Fatal(err)
		}
		wantUID := fmt.Sprintf("Uid:\t%d\t%d", uid, uid)
		wantGID := fmt.Sprintf("Gid:\t%d\t%d", gid, gid)
		if !strings.Contains(string(b), wantUID) || !strings.Contains(string(b), wantGID) {
			t.Errorf("firecracker runs as\n%s\nwant uid %d gid %d", b, uid, gid)
		}
		// Its root is the jail (pivot_root in a mount namespace of its own): its /firecracker.log
		// is the jail's.
		inside, err1 := os.Stat(fmt.Sprintf("/proc/%d/root/%s", m.Record().PID, logFile))
		outside, err2 := os.Stat(filepath.Join(dir, "root", logFile))
		if err1 != nil || err2 != nil || !os.SameFile(inside, outside) {
			t.Errorf("firecracker's / is not the jail %s: %v %v", filepath.Join(dir, "root"), err1, err2)
		}
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", m.Record().PID)); ns == mustReadlink("/proc/self/ns/mnt") {
			t.Errorf("firecracker shares the host's mount namespace")
		}
		for _, s := range m.Record().Sockets {
			if len(s) >= 108 {
				t.Errorf("socket path %s is over the limit", s)
			}
		}
		if state, err := m.State(ctx); err != nil || state != StateRunning {
			t.Fatalf("state = %q, %v", state, err)
		}
		if err := m.Pause(ctx); err != nil {
			t.Fatalf("Pause: %v", err)
		}
		if err := m.Resume(ctx); err != nil {
			t.Fatalf("Resume: %v", err)
		}
		// The VM's own files stay where they were, handed to the jail's uid.
		var sst syscall.Stat_t
		if err := syscall.Stat(cfgs[i].Disks[1].Path, &sst); err != nil || int(sst.Uid) != uid {
			t.Errorf("VM disk owner = %d, %v; want the jail's uid %d", sst.Uid, err, uid)
		}
	}
	for i, m := range ms {
		if err := m.Kill(); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		assertGone(t, m, cfgs[i].ID)
		if _, err := os.Stat(cfgs[i].Disks[1].Path); err != nil {
			t.Errorf("the VM disk went with the jail: %v", err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(base, "*", "*")); len(left) > 0 {
		t.Errorf("jails left under %s: %v", base, left)
	}
}

// TestJailerRealGoneWhileDaemonDown: the process dies while nobody watches; Attach finds it
// gone and removes its jail.
func TestJailerRealGoneWhileDaemonDown(t *testing.T) {
	bin := realFirecracker(t)
	jailer := realJailer(t)
	on := true
	base := shortDir(t, "bjg")
	d := &Driver{Binary: bin, Jailer: JailerOptions{Enabled: &on, Binary: jailer, ChrootBase: base}}
	id := newID(t)
	cfg := testConfig(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := d.StartMachine(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	rec := m.Record()
	dir, _, _ := m.Jail()
	// Stop the machine's own clean-up from running, as if the daemon were gone: Attach must
	// do it. (The process is killed behind the Machine's back.)
	m.cleanOnce.Do(func() {})
	syscall.Kill(rec.PID, syscall.SIGKILL)
	<-m.Done()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("jail already gone before Attach: %v", err)
	}
	if _, err := (&Driver{}).Attach(rec); !errors.Is(err, vmm.ErrGone) {
		t.Fatalf("Attach = %v; want ErrGone", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("Attach of a gone machine left its jail %s", dir)
	}
	for _, s := range rec.Sockets {
		if _, err := os.Lstat(s); err == nil {
			t.Errorf("socket %s left", s)
		}
	}
}

// TestFirecrackerBootToAgent boots banger's kernel, initramfs and image under Firecracker and
// talks to the agent over vsock. It needs KVM that runs real guests.
func TestFirecrackerBootToAgent(t *testing.T) {
	bin := realFirecracker(t)
	if a := host.Root("/").DetectAccel(); a.Accel != host.KVM {
		t.Skipf("KVM cannot run real guests here (%s); the boot-to-agent test needs hardware KVM", a.Reason)
	}
	image := testImage()
	if image == "" {
		t.Skip("no image built by banger found; run `banger vm run --rm -- true` once")
	}
	id := newID(t)
	cfg := testConfig(t, id)
	if cfg.Initrd == "" {
		t.Skip("no banger initramfs next to the kernel")
	}
	cfg.Disks[0].Path = image
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", cfg.Disks[1].Path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	cfg.VCPU, cfg.MemoryMiB = 2, 1024
	cfg.Cmdline += " systemd.hostname=fc-test quiet"
	d := &Driver{Binary: bin, Jailer: JailerOptions{ChrootBase: shortDir(t, "bjb"), Binary: os.Getenv(envJailer)}}
	if os.Getenv(envJailer) == "" {
		off := false
		d.Jailer.Enabled = &off
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	m, err := d.StartMachine(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer m.Kill()
	var c *agent.Client
	for c == nil {
		conn, err := m.DialAgent(ctx)
		if err == nil {
			c, err = agent.Connect(ctx, conn)
		}
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("agent did not answer: %v; console:\n%s", err, vmm.LogTail(m.Record().Console, 20))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	defer c.Close()
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	t.Logf("agent %s answered %s after start; guest %s, init %s", h.AgentVersion, time.Since(t0), h.Hostname, h.Init)
	if err := c.Poweroff(ctx); err != nil {
		t.Fatalf("poweroff: %v", err)
	}
	select {
	case <-m.Done():
	case <-time.After(time.Minute):
		t.Fatalf("firecracker still runs a minute after the guest's poweroff")
	}
	assertGone(t, m, id)
}

func mustReadlink(p string) string {
	s, _ := os.Readlink(p)
	return s
}
