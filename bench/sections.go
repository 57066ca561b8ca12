package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmservice"
	"github.com/banger-dev/banger/internal/wire"
)

// overhead compares `banger vm run --rm --cold -- true` (CLI start to exit) with the same kernel,
// initramfs and image booted by a bare QEMU command line until the agent answers.
func (b *bench) overhead() error {
	var banger, bare []time.Duration
	for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
		// Cold: the bare side boots too (warm starts have a section of their own).
		r := bangerRun(b, b.runArgs(true)...)
		if r.err != nil {
			return r.err
		}
		banger = append(banger, r.took)
		d, err := b.bareBoot(i)
		if err != nil {
			return fmt.Errorf("bare boot: %w", err)
		}
		bare = append(bare, d)
		logf("overhead round %d: banger %s, bare %s", i+1, r.took.Round(time.Millisecond), d.Round(time.Millisecond))
	}
	a := b.rep.add("overhead.banger", "vm run --rm --cold -- true, CLI start to exit", "s", seconds(banger))
	c := b.rep.add("overhead.bare", "bare QEMU, same kernel+initramfs+image, start to agent answer", "s", seconds(bare))
	b.rep.ratio("overhead.ratio", "banger / bare (median)", a.Median/c.Median, 1.10)
	return nil
}

func bangerRun(b *bench, args ...string) cmdResult { return banger(b.o, b.ctx, args...) }

// bareBoot boots the machine banger would boot, with QEMU started by hand: the disk is made
// before the clock starts (the bare side's best case), and the clock stops when the agent
// answers a health request.
func (b *bench) bareBoot(round int) (time.Duration, error) {
	dir := filepath.Join(b.scratch, fmt.Sprintf("bare-%d", round))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	diskPath := filepath.Join(dir, "disk.ext4")
	if err := disk.CreateExt4(b.ctx, diskPath, 8<<30, "banger-disk"); err != nil {
		return 0, err
	}
	mem, err := memoryMiB(b.o.memory)
	if err != nil {
		return 0, err
	}
	cfg := vmm.Config{
		ID: "bare", Name: "bare", Dir: dir, RuntimeDir: dir,
		VCPU: b.o.vcpu, MemoryMiB: mem, Accel: b.accel.Accel,
		Kernel: b.vmlinux, Initrd: b.initrd, Cmdline: vmservice.GuestCmdline("bare"),
		Disks: []vmm.Disk{{Path: b.rootfs, ReadOnly: true}, {Path: diskPath}},
	}
	// banger's VMs have a network device, which the guest probes and the agent configures:
	// the bare machine gets one too, on a tap of its own in the benchmark's namespace.
	tap, err := bareTap(round)
	if err != nil {
		return 0, err
	}
	defer netlink.LinkDel(tap)
	mac := hostnet.MAC(fmt.Sprintf("bare-%d", round))
	cfg.NIC = &vmm.NIC{Tap: tap.Attrs().Name, MAC: mac.String()}
	cfg.Cmdline += fmt.Sprintf(" banger.ip=192.168.250.2/24 banger.gw=192.168.250.1 banger.dns=192.168.250.1 banger.mac=%s", mac)
	if b.modules != "" {
		cfg.Disks = append(cfg.Disks, vmm.Disk{Path: b.modules, ReadOnly: true})
		cfg.Cmdline += " banger.modules=vdc"
	}
	cmd := exec.Command("qemu-system-x86_64", b.qemu.Args(cfg)...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Minute)
	defer cancel()
	sock := filepath.Join(dir, "agent.sock")
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			c, err := agent.Connect(ctx, conn)
			if err != nil {
				return 0, err
			}
			_, err = c.Health(ctx)
			took := time.Since(start)
			c.Close()
			return took, err
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// bareTap makes the bare machine's tap (up, attached to nothing) in the benchmark's own
// network namespace.
func bareTap(round int) (netlink.Link, error) {
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("bare%d", round)},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_NO_PI,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return nil, fmt.Errorf("bare machine: create tap %s: %w", tap.Name, err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		_ = netlink.LinkDel(tap)
		return nil, fmt.Errorf("bare machine: bring tap %s up: %w", tap.Name, err)
	}
	return tap, nil
}

// steps creates VMs through the API and reports the daemon's own timing of each start step;
// the host-side time is every step but "agent", which is the guest booting.
func (b *bench) steps() error {
	per := map[string][]time.Duration{}
	var host, total, del []time.Duration
	for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
		start := time.Now()
		ev, err := b.createVM(fmt.Sprintf("bench-steps-%d", i))
		if err != nil {
			return err
		}
		total = append(total, time.Since(start))
		var h time.Duration
		for _, t := range ev.Timings {
			per[t.Name] = append(per[t.Name], t.Duration)
			if t.Name != vmservice.StepAgent {
				h += t.Duration
			}
		}
		host = append(host, h)
		start = time.Now()
		if err := b.client.DeleteVM(b.ctx, ev.VM.ID, true); err != nil {
			return err
		}
		del = append(del, time.Since(start))
	}
	for _, name := range vmservice.StepNames {
		what := "start step " + name
		if name == vmservice.StepAgent {
			what += " (guest boot until the agent answers; not host-side)"
		}
		b.rep.add("steps."+name, what, "ms", millis(per[name]))
	}
	h := b.rep.add("steps.host_total", "host-side create time: all steps but agent", "ms", millis(host))
	h.Target, h.TargetMet = 50, h.Median < 50
	b.rep.add("steps.create_total", "vm create through the API, request to ready", "s", seconds(total))
	b.rep.add("steps.delete", "vm delete of a running VM", "ms", millis(del))
	return nil
}

// concurrency starts n `vm run --rm --cold -- true` at once and reports the wall time until all have
// exited, and how many failed.
func (b *bench) concurrency() error {
	for _, n := range b.o.concurrency {
		var walls []time.Duration
		failures := 0
		var firstErr error
		for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
			var wg sync.WaitGroup
			var mu sync.Mutex
			start := time.Now()
			for j := 0; j < n; j++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if r := bangerRun(b, b.runArgs(true)...); r.err != nil {
						mu.Lock()
						failures++
						if firstErr == nil {
							firstErr = r.err
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			walls = append(walls, time.Since(start))
			logf("concurrency %d round %d: %s", n, i+1, walls[len(walls)-1].Round(time.Millisecond))
		}
		f := b.rep.add(fmt.Sprintf("concurrency.%d", n), fmt.Sprintf("%d simultaneous vm run --rm --cold -- true, wall time", n), "s", seconds(walls))
		f.Failures = failures
		f.Target, f.TargetMet = 0, failures == 0
		if firstErr != nil {
			f.Note = "first failure: " + firstErr.Error()
		}
	}
	return nil
}

// workspace measures shipping a generated 10,000-file, 100 MB repository into a running VM,
// CLI start to exit (`vm exec --sync -- true` ships the whole work tree again, as a first
// ship does), against the floor: tar c | tar x of the same files on the host. Under software
// emulation the guest's side dominates, so the same tar pipe inside the guest is measured
// too, and the host's share (the CLI's and the daemon's CPU time) is reported on its own.
func (b *bench) workspace() error {
	src := filepath.Join(b.scratch, "repo")
	if err := generateRepo(src, 10000, 100<<20); err != nil {
		return err
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "bench"}} {
		cmd := exec.CommandContext(b.ctx, "git", args...)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", args[0], err, out)
		}
	}
	// The VM, with the workspace shipped once (not measured: it includes the boot).
	r := bangerRun(b, append(append([]string{"vm", "run", "-d", "--no-bootstrap", "--name", "bench-ws"}, b.vmArgs()...), src)...)
	if r.err != nil {
		return r.err
	}
	defer func() { _ = b.client.DeleteVM(context.Background(), "bench-ws", true) }()
	v, err := b.client.Version(b.ctx)
	if err != nil {
		return err
	}
	var floor, ship, guestFloor, hostCPU []time.Duration
	for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
		dst := filepath.Join(b.scratch, "copy")
		if err := os.MkdirAll(dst, 0o700); err != nil {
			return err
		}
		// Both sides read the same warm files: no root-wide cache drops on a shared machine.
		start := time.Now()
		out, err := exec.Command("sh", "-c", "tar -C "+src+" -cf - . | tar -C "+dst+" -xf -").CombinedOutput()
		if err != nil {
			return fmt.Errorf("tar floor: %v: %s", err, out)
		}
		floor = append(floor, time.Since(start))
		os.RemoveAll(dst)

		daemonBefore, err := cpuTime(v.PID)
		if err != nil {
			return err
		}
		r := bangerRun(b, "vm", "exec", "bench-ws", "--sync", "--", "true")
		if r.err != nil {
			return r.err
		}
		daemonAfter, err := cpuTime(v.PID)
		if err != nil {
			return err
		}
		ship = append(ship, r.took)
		hostCPU = append(hostCPU, r.cpu+daemonAfter-daemonBefore)

		r = bangerRun(b, "vm", "exec", "bench-ws", "--guest-path", "/root", "--", "sh", "-c",
			"rm -rf /root/floor && mkdir /root/floor && tar -C /root/repo -cf - . | tar -C /root/floor -xf - && rm -rf /root/floor")
		if r.err != nil {
			return r.err
		}
		guestFloor = append(guestFloor, r.took)
		logf("workspace round %d: host floor %s, banger %s (host CPU %s), guest floor %s", i+1,
			floor[i].Round(time.Millisecond), ship[i].Round(time.Millisecond), hostCPU[i].Round(time.Millisecond), guestFloor[i].Round(time.Millisecond))
	}
	a := b.rep.add("workspace.banger", "vm exec --sync -- true: 10,000 files / 100 MB shipped into a running VM, CLI start to exit", "s", seconds(ship))
	c := b.rep.add("workspace.floor", "tar c | tar x of the same files on the host", "s", seconds(floor))
	g := b.rep.add("workspace.guest_floor", "tar c | tar x of the same files inside the guest (via vm exec)", "s", seconds(guestFloor))
	h := b.rep.add("workspace.host_cpu", "host CPU time of a ship (CLI + daemon, user + system)", "s", seconds(hostCPU))
	h.Note = "the host's share of the work; the rest is the guest writing the files"
	b.rep.ratio("workspace.ratio", "banger / host tar floor (median)", a.Median/c.Median, 1.5)
	gr := b.rep.add("workspace.guest_ratio", "banger / guest tar floor (median)", "x", []float64{a.Median / g.Median})
	gr.Note = "what shipping costs beyond the guest's own file writing"
	return nil
}

// cpuTime is the user and system CPU time a process has used so far, from /proc.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name (which may hold spaces); utime and stime are the 14th
	// and 15th of the line.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ
}

// generateRepo writes n files totalling about size bytes in a directory tree.
func generateRepo(dir string, n int, size int64) error {
	per := size / int64(n)
	buf := make([]byte, per)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%02d/s%02d", i%50, (i/50)%20))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		copy(buf, fmt.Sprintf("file %d\n", i))
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d.txt", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// footprint measures the daemon's memory idle and with 4 VMs, each VM's host memory beyond
// what its guest touched, and the disk a VM uses right after create.
func (b *bench) footprint() error {
	v, err := b.client.Version(b.ctx)
	if err != nil {
		return err
	}
	// Idle means quiet: the daemon returns a burst's memory (the sections before this one
	// made dozens of VMs) after 5 s without requests.
	time.Sleep(10 * time.Second)
	idle, err := rss(v.PID)
	if err != nil {
		return err
	}
	f := b.rep.add("footprint.daemon_idle", "daemon RSS, no VMs, 10 s after the last request", "MiB", []float64{float64(idle) / (1 << 20)})
	f.Target, f.TargetMet = 30, f.Median < 30

	var vms []api.VM
	defer func() {
		for _, vm := range vms {
			_ = b.client.DeleteVM(context.Background(), vm.ID, true)
		}
	}()
	for i := 0; i < 4; i++ {
		ev, err := b.createVM(fmt.Sprintf("bench-fp-%d", i))
		if err != nil {
			return err
		}
		vms = append(vms, *ev.VM)
	}
	with4, err := rss(v.PID)
	if err != nil {
		return err
	}
	b.rep.add("footprint.daemon_4vms", "daemon RSS with 4 running VMs", "MiB", []float64{float64(with4) / (1 << 20)})

	var overhead, diskUse []float64
	for _, vm := range vms {
		vmmRSS, err := rss(vm.PID)
		if err != nil {
			return err
		}
		touched, err := b.guestUsed(vm.ID)
		if err != nil {
			return err
		}
		overhead = append(overhead, float64(vmmRSS-touched)/(1<<20))
		_, alloc, err := disk.Usage(filepath.Join(vm.Dir, "disk.ext4"))
		if err != nil {
			return err
		}
		diskUse = append(diskUse, float64(alloc)/(1<<20))
	}
	o := b.rep.add("footprint.vmm_overhead", "VMM RSS minus guest memory in use (MemTotal-MemFree), per VM", "MiB", overhead)
	o.Note = "under TCG this includes QEMU's translation cache (tb-size=64 MiB)"
	b.rep.add("footprint.disk_per_vm", "VM disk allocated after boot (sparse file)", "MiB", diskUse)
	return nil
}

// guestUsed returns MemTotal-MemFree inside the guest: the guest memory its VMM has had to
// back at some point.
func (b *bench) guestUsed(ref string) (int64, error) {
	var out strings.Builder
	exit, err := b.client.Exec(b.ctx, ref, api.ExecRequest{Argv: []string{"cat", "/proc/meminfo"}}, wire.CallerIO{Stdout: &out, Stderr: io.Discard})
	if err != nil || exit.Code != 0 {
		return 0, fmt.Errorf("read guest meminfo: %v (exit %d)", err, exit.Code)
	}
	var total, free int64
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = kb * 1024
		case "MemFree:":
			free = kb * 1024
		}
	}
	return total - free, nil
}

// restart times `vm stop` and `vm start` of an existing VM (CLI start to exit).
func (b *bench) restart() error {
	args := append([]string{"vm", "create", "--name", "bench-restart"}, b.vmArgs()...)
	if r := bangerRun(b, args...); r.err != nil {
		return r.err
	}
	defer bangerRun(b, "vm", "delete", "-f", "bench-restart")
	var stops, starts []time.Duration
	for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
		r := bangerRun(b, "vm", "stop", "bench-restart")
		if r.err != nil {
			return r.err
		}
		stops = append(stops, r.took)
		r = bangerRun(b, "vm", "start", "bench-restart")
		if r.err != nil {
			return r.err
		}
		starts = append(starts, r.took)
		logf("restart round %d: stop %s, start %s", i+1, stops[i].Round(time.Millisecond), starts[i].Round(time.Millisecond))
	}
	b.rep.add("restart.stop", "vm stop of a running VM (graceful: the guest powers off)", "s", seconds(stops))
	b.rep.add("restart.start", "vm start of a stopped VM, until its agent answers", "s", seconds(starts))
	return nil
}
