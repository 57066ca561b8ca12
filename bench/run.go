package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/kernel"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/vmm/qemu"
)

// cmdResult is one run of the banger CLI.
type cmdResult struct {
	stdout, stderr string
	took           time.Duration
	cpu            time.Duration // the CLI process's own user and system time
	err            error
}

// banger runs the CLI with the benchmark's environment, from process start to exit.
func banger(o options, ctx context.Context, args ...string) cmdResult {
	if ctx == nil {
		ctx = context.Background()
	}
	cmd := exec.CommandContext(ctx, filepath.Join(o.bin, "banger"), args...)
	cmd.Env = o.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := cmdResult{stdout: out.String(), stderr: errb.String(), took: time.Since(start), err: err}
	if cmd.ProcessState != nil {
		r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		r.err = fmt.Errorf("banger %s: %v: %s", strings.Join(args, " "), err, lastLine(r.stderr))
	}
	return r
}

// lastLine returns the last line of a command's stderr that is not a hint, with the hint
// after it if there is one: the error, and what the CLI suggests.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	last := lines[len(lines)-1]
	for i := len(lines) - 1; i >= 0; i-- {
		if !strings.HasPrefix(strings.TrimSpace(lines[i]), "hint:") {
			if i == len(lines)-1 {
				return last
			}
			return lines[i] + " (" + strings.TrimSpace(last) + ")"
		}
	}
	return last
}

// bench holds what the sections share.
type bench struct {
	o   options
	ctx context.Context
	rep *report

	layout  paths.Layout
	client  *client.Client
	accel   host.AccelChoice
	qemu    *qemu.Driver
	vmlinux string
	initrd  string
	rootfs  string
	modules string // the kernel's module disk; "" when it has none
	scratch string
	snaps   []string // user snapshots made and not removed yet
	primed  bool     // the boot snapshot of the benchmark VMs' combination exists
}

// vmArgs are the size flags every benchmark VM gets, so banger and the bare VMM boot the
// same machine.
func (b *bench) vmArgs() []string {
	return []string{"--vcpu", strconv.Itoa(b.o.vcpu), "--memory", b.o.memory}
}

func (b *bench) setup() error {
	lookup := func(k string) (string, bool) {
		for _, kv := range b.o.env() {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	l, err := paths.New(lookup, os.Getuid(), b.o.home)
	if err != nil {
		return err
	}
	b.layout = l
	// Start the daemon inside the namespace (and check it answers) before measuring.
	if r := banger(b.o, b.ctx, "daemon", "status"); r.err != nil {
		return r.err
	}
	if r := banger(b.o, b.ctx, "vm", "list"); r.err != nil {
		return r.err
	}
	b.client = client.New(l.Socket)
	// A run that was killed (machine restart, Ctrl-C twice) leaves its VMs; their names would
	// clash with this run's. The benchmark owns this HOME, so they go.
	if n := b.deleteVMs(); n > 0 {
		fmt.Fprintf(os.Stderr, "bench: deleted %d VMs an interrupted run left\n", n)
	}
	if b.o.sections["warm"] || b.o.sections["fork"] || b.o.sections["snapshot"] || b.o.sections["memory"] {
		b.removeLeftSnapshots()
	}
	b.accel = host.Root("/").DetectAccel()
	b.qemu = &qemu.Driver{TSCkHz: host.Root("/").TSCkHz()}

	km, err := kernel.Load(filepath.Join(l.KernelsDir(), "debian-6.1"))
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	b.vmlinux = km.VmlinuxPath()
	// The same initramfs banger boots: built for this agent binary (already there after warm-up).
	if b.initrd, err = kernel.EnsureInitramfs(km.Dir, km.Release, filepath.Join(b.o.bin, "banger-agent")); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	// The kernel's module disk, which banger attaches as vdc (already made after warm-up).
	if b.modules, err = kernel.EnsureModulesDisk(b.ctx, km); err != nil {
		return fmt.Errorf("modules disk: %w", err)
	}
	// The image version new VMs boot, as the daemon sees it.
	img, err := b.client.GetImage(b.ctx, "debian-bookworm")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	b.rootfs = filepath.Join(img.Dir, "rootfs.ext4")
	if _, err := os.Stat(b.rootfs); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if b.scratch, err = os.MkdirTemp("", "banger-bench-"); err != nil {
		return err
	}
	b.rep.setEnvironment(b)
	return nil
}

func (b *bench) cleanup() {
	if b.scratch != "" {
		os.RemoveAll(b.scratch)
	}
	// Delete whatever a failed section left.
	if b.client != nil {
		if n := b.deleteVMs(); n > 0 {
			logf("cleanup: deleted %d VMs a section left", n)
		}
	}
	b.removeSnapshots()
}

// deleteVMs deletes every VM of the benchmark's own daemon and says how many it deleted.
func (b *bench) deleteVMs() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vms, err := b.client.ListVMs(ctx)
	if err != nil {
		return 0
	}
	n := 0
	for _, vm := range vms {
		if err := b.client.DeleteVM(ctx, vm.ID, true); err != nil {
			logf("delete VM %s: %v", vm.Name, err)
			continue
		}
		n++
	}
	return n
}

// createVM makes a running VM through the API, booted cold, and returns the final event
// (with timings).
func (b *bench) createVM(name string) (api.Event, error) { return b.createVMCtx(b.ctx, name, true) }

// createVMCtx is createVM with a context and a choice: cold, or warm when a boot snapshot
// of the combination exists.
func (b *bench) createVMCtx(ctx context.Context, name string, cold bool) (api.Event, error) {
	vcpu := b.o.vcpu
	mem, err := memoryMiB(b.o.memory)
	if err != nil {
		return api.Event{}, err
	}
	return b.client.CreateVMResult(ctx, api.CreateVMRequest{Name: name, VCPU: &vcpu, MemoryMiB: &mem, Cold: cold}, nil)
}

func memoryMiB(s string) (int, error) {
	n, err := bytesize.Parse(s)
	if err != nil || n < bytesize.MiB {
		return 0, fmt.Errorf("-memory %q: want e.g. 1G or 512M", s)
	}
	return int(n / bytesize.MiB), nil
}

// rss returns a process's resident set size in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
