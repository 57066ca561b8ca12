package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// values returns what follows every occurrence of flag in args, in order.
func values(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

// only returns the single value of flag, failing the test when it is absent or repeated.
func only(t *testing.T, args []string, flag string) string {
	t.Helper()
	v := values(args, flag)
	if len(v) != 1 {
		t.Fatalf("%s given %d times (%q), want once; args: %q", flag, len(v), v, args)
	}
	return v[0]
}

func testConfig(accel host.Accel) vmm.Config {
	return vmm.Config{
		ID:         "0123456789abcdef",
		Name:       "dev",
		Dir:        "/state/vms/0123456789abcdef",
		RuntimeDir: "/run/b/vms/0123456789abcdef",
		VCPU:       2,
		MemoryMiB:  1024,
		Accel:      accel,
		Kernel:     "/state/kernels/debian-6.1/vmlinux",
		Initrd:     "/state/kernels/debian-6.1/initrd.cpio",
		Cmdline:    "root=/dev/vda ro",
		Disks: []vmm.Disk{
			{Path: "/state/images/golden/rootfs.ext4", ReadOnly: true},
			{Path: "/state/vms/0123456789abcdef/disk.ext4"},
		},
	}
}

func TestArgsAccelerator(t *testing.T) {
	for _, tc := range []struct {
		name       string
		accel      host.Accel
		tsckHz     int
		wantAccel  string
		wantCPU    string
		wantAppend string
	}{
		{"KVM uses the host CPU and never passes tsc_early_khz", host.KVM, 2_400_000,
			"kvm", "host", "root=/dev/vda ro console=ttyS0"},
		{"TCG uses multi-threaded TCG, the max CPU, a reliable TSC and tsc_early_khz", host.TCG, 2_400_000,
			"tcg,thread=multi,tb-size=64", "max", "root=/dev/vda ro console=ttyS0 tsc=reliable tsc_early_khz=2400000"},
		{"TCG without a known TSC frequency passes no tsc_early_khz", host.TCG, 0,
			"tcg,thread=multi,tb-size=64", "max", "root=/dev/vda ro console=ttyS0 tsc=reliable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := (&Driver{TSCkHz: tc.tsckHz}).Args(testConfig(tc.accel))
			if got := only(t, args, "-accel"); got != tc.wantAccel {
				t.Errorf("-accel %q, want %q", got, tc.wantAccel)
			}
			if got := only(t, args, "-cpu"); got != tc.wantCPU {
				t.Errorf("-cpu %q, want %q", got, tc.wantCPU)
			}
			if got := only(t, args, "-append"); got != tc.wantAppend {
				t.Errorf("-append %q, want %q", got, tc.wantAppend)
			}
		})
	}
}

func TestArgsMachine(t *testing.T) {
	cfg := testConfig(host.KVM)
	args := (&Driver{}).Args(cfg)
	for _, tc := range []struct{ flag, want string }{
		{"-M", "microvm,x-option-roms=off"},
		{"-m", "1024"},
		{"-smp", "2"},
		{"-kernel", cfg.Kernel},
		{"-initrd", cfg.Initrd},
		{"-serial", "chardev:console"},
		{"-qmp", "unix:/run/b/vms/0123456789abcdef/qmp.sock,server=on,wait=off"},
	} {
		if got := only(t, args, tc.flag); got != tc.want {
			t.Errorf("%s %q, want %q", tc.flag, got, tc.want)
		}
	}
	for _, flag := range []string{"-nodefaults", "-no-user-config", "-no-reboot"} {
		if !slices.Contains(args, flag) {
			t.Errorf("args lack %s: %q", flag, args)
		}
	}
	chardevs := values(args, "-chardev")
	for _, want := range []string{
		"file,id=console,path=/state/vms/0123456789abcdef/console.log,append=on",
		"socket,id=agent,path=/run/b/vms/0123456789abcdef/agent.sock,server=on,wait=off",
	} {
		if !slices.Contains(chardevs, want) {
			t.Errorf("-chardev %q missing; chardevs: %q", want, chardevs)
		}
	}
	devices := values(args, "-device")
	if want := "virtserialport,chardev=agent,name=" + agent.PortName; !slices.Contains(devices, want) {
		t.Errorf("-device %q missing (the agent's port on the agent socket); devices: %q", want, devices)
	}
	if !slices.Contains(devices, "virtio-serial-device") {
		t.Errorf("-device virtio-serial-device missing; devices: %q", devices)
	}
}

// A NIC handed over as an open tap queue is QEMU's file descriptor 3 (the first of ExtraFiles);
// one without is opened by name. vhost stays off either way; no NIC, no network device.
func TestArgsNIC(t *testing.T) {
	queue, err := os.Open(os.DevNull) // stands for the tap's queue: Args only looks at whether there is one
	if err != nil {
		t.Fatal(err)
	}
	defer queue.Close()
	const mac = "02:12:34:56:78:9a"
	for _, tc := range []struct {
		name       string
		nic        *vmm.NIC
		wantNetdev []string
		wantDevice bool
	}{
		{"by file descriptor", &vmm.NIC{Tap: "bg0123456789ab", MAC: mac, File: queue}, []string{"tap,id=net0,fd=3"}, true},
		{"by name", &vmm.NIC{Tap: "bg0123456789ab", MAC: mac}, []string{"tap,id=net0,ifname=bg0123456789ab,script=no,downscript=no"}, true},
		{"none", nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(host.TCG)
			cfg.NIC = tc.nic
			args := (&Driver{}).Args(cfg)
			if got := values(args, "-netdev"); !slices.Equal(got, tc.wantNetdev) {
				t.Errorf("-netdev %q, want %q", got, tc.wantNetdev)
			}
			if got := slices.Contains(values(args, "-device"), "virtio-net-device,netdev=net0,mac="+mac); got != tc.wantDevice {
				t.Errorf("virtio-net-device with the guest's MAC given: %v, want %v; args %q", got, tc.wantDevice, args)
			}
			if strings.Contains(strings.Join(args, " "), "vhost") {
				t.Errorf("args mention vhost; it stays off: %q", args)
			}
		})
	}
}

func TestArgsWithoutInitrdPassNone(t *testing.T) {
	cfg := testConfig(host.TCG)
	cfg.Initrd = ""
	if got := values((&Driver{}).Args(cfg), "-initrd"); len(got) != 0 {
		t.Errorf("-initrd %q given without an initrd, want none", got)
	}
}

func TestArgsAttachDisksInOrder(t *testing.T) {
	cfg := testConfig(host.KVM)
	cfg.Disks = append(cfg.Disks, vmm.Disk{Path: "/data/extra.img", ReadOnly: true})
	args := (&Driver{}).Args(cfg)

	wantDrives := []string{
		"id=disk0,file=/state/images/golden/rootfs.ext4,format=raw,if=none,readonly=on",
		"id=disk1,file=/state/vms/0123456789abcdef/disk.ext4,format=raw,if=none,discard=unmap,detect-zeroes=unmap",
		"id=disk2,file=/data/extra.img,format=raw,if=none,readonly=on",
	}
	if got := values(args, "-drive"); !slices.Equal(got, wantDrives) {
		t.Errorf("-drive values:\n got  %q\n want %q", got, wantDrives)
	}
	var blk []string
	for _, d := range values(args, "-device") {
		if strings.HasPrefix(d, "virtio-blk-device") {
			blk = append(blk, d)
		}
	}
	wantBlk := []string{"virtio-blk-device,drive=disk0", "virtio-blk-device,drive=disk1", "virtio-blk-device,drive=disk2"}
	if !slices.Equal(blk, wantBlk) {
		t.Errorf("virtio-blk devices = %q, want %q (the guest sees them as vda, vdb, vdc in this order)", blk, wantBlk)
	}
}

// QEMU splits option values at commas; a comma inside a path must be doubled or QEMU reads the
// rest as another option.
func TestArgsEscapeCommasInPaths(t *testing.T) {
	cfg := testConfig(host.KVM)
	cfg.Dir = "/home/a,b/vms/x"
	cfg.RuntimeDir = "/run/a,b/x"
	cfg.Disks = []vmm.Disk{{Path: "/home/a,b/images/rootfs.ext4", ReadOnly: true}}
	args := (&Driver{}).Args(cfg)

	for _, want := range []string{
		"file,id=console,path=/home/a,,b/vms/x/console.log,append=on",
		"socket,id=agent,path=/run/a,,b/x/agent.sock,server=on,wait=off",
	} {
		if !slices.Contains(values(args, "-chardev"), want) {
			t.Errorf("-chardev %q missing; chardevs: %q", want, values(args, "-chardev"))
		}
	}
	if got, want := only(t, args, "-qmp"), "unix:/run/a,,b/x/qmp.sock,server=on,wait=off"; got != want {
		t.Errorf("-qmp %q, want %q", got, want)
	}
	if got, want := only(t, args, "-drive"), "id=disk0,file=/home/a,,b/images/rootfs.ext4,format=raw,if=none,readonly=on"; got != want {
		t.Errorf("-drive %q, want %q", got, want)
	}
	// -kernel and -initrd take a plain file name: no escaping there.
	cfg.Kernel = "/home/a,b/vmlinux"
	if got := only(t, (&Driver{}).Args(cfg), "-kernel"); got != cfg.Kernel {
		t.Errorf("-kernel %q, want %q unchanged", got, cfg.Kernel)
	}
}

func TestStartWithoutQEMUSaysHowToInstallIt(t *testing.T) {
	d := &Driver{Binary: "qemu-system-x86_64-that-does-not-exist"}
	_, err := d.Start(t.Context(), testConfig(host.TCG))
	if err == nil || !strings.Contains(err.Error(), "apt-get install qemu-system-x86") || !strings.Contains(err.Error(), "qemu_bin") {
		t.Errorf("Start with a missing binary = %v, want an error saying how to install QEMU or set qemu_bin", err)
	}
}

func TestStartRefusesSocketPathsOverTheUnixLimit(t *testing.T) {
	cfg := testConfig(host.TCG)
	cfg.Dir = t.TempDir()
	cfg.RuntimeDir = filepath.Join(t.TempDir(), strings.Repeat("r", 100))
	// /bin/true stands in for QEMU: Start must refuse before running anything.
	_, err := (&Driver{Binary: "/bin/true"}).Start(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), "107-byte unix socket limit") {
		t.Errorf("Start with a %d-byte runtime dir = %v, want an error about the unix socket limit", len(cfg.RuntimeDir), err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "qemu.log")); err == nil {
		t.Error("Start opened qemu.log although it refused the config")
	}
}

func TestAttachRefusesRecordsItCannotFollow(t *testing.T) {
	d := &Driver{}
	if _, err := d.Attach(vmm.Record{Driver: "firecracker", PID: os.Getpid()}); err == nil || !strings.Contains(err.Error(), "firecracker") {
		t.Errorf("Attach of a firecracker record = %v, want an error naming the driver", err)
	}
	st, err := vmm.StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// This process, recorded with another start time: the pid was reused.
	if _, err := d.Attach(vmm.Record{Driver: "qemu", PID: os.Getpid(), StartTime: st + 1}); !errors.Is(err, vmm.ErrGone) {
		t.Errorf("Attach of a reused pid = %v, want an error wrapping vmm.ErrGone", err)
	}
}

// TestProbeReadsSettingsAfresh: like Firecracker's, QEMU's settings are read on every call (the
// daemon re-reads config.toml), and a missing binary is a probe that says what to do.
func TestProbeReadsSettingsAfresh(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "my-qemu")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	name := bin
	d := &Driver{Binary: "/ignored", Settings: func() Settings { return Settings{Binary: name} }}
	if p := d.Probe(context.Background()); p.Err != nil || p.Found != "qemu at "+bin || p.Driver != Name || p.NeedsKVM {
		t.Errorf("Probe = %+v; want %s found, no KVM needed", p, bin)
	}
	name = filepath.Join(dir, "gone")
	p := d.Probe(context.Background())
	if p.Err == nil || !strings.Contains(p.Err.Error(), name+" not found") || !strings.Contains(p.Err.Error(), "qemu_bin") {
		t.Errorf("Probe after the setting changed = %+v; want the new binary not found, with a hint at qemu_bin", p)
	}
	_, err := d.Start(context.Background(), vmm.Config{Dir: t.TempDir(), RuntimeDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), name+" not found") {
		t.Errorf("Start after the setting changed = %v; want the new binary not found", err)
	}
}

// The guest's RAM is anonymous memory unless ShareMemory asks for a memfd that snapshots save
// as a file; a restored machine maps the snapshot's memory file privately (copy-on-write).
func TestArgsGuestMemoryBacking(t *testing.T) {
	d := &Driver{}
	cfg := testConfig(host.KVM)
	if args := d.Args(cfg); len(values(args, "-object")) != 0 {
		t.Errorf("a VM without ShareMemory has a memory backend: %q", values(args, "-object"))
	}
	cfg.ShareMemory = true
	args := d.Args(cfg)
	if got, want := only(t, args, "-M"), "microvm,x-option-roms=off,memory-backend=microvm.ram"; got != want {
		t.Errorf("-M %q; want %q", got, want)
	}
	if got, want := only(t, args, "-object"), "memory-backend-memfd,id=microvm.ram,size=1024M,share=on"; got != want {
		t.Errorf("-object %q; want %q", got, want)
	}
	args = d.args(cfg, nil, "/snap,1/memory")
	if got, want := only(t, args, "-object"), "memory-backend-file,id=microvm.ram,size=1024M,mem-path=/snap,,1/memory,share=off"; got != want {
		t.Errorf("restored: -object %q; want %q", got, want)
	}
}

func TestQMPVersionMatchesBinaryVersion(t *testing.T) {
	for _, tc := range []struct {
		pkg, want string
	}{
		{"Debian 1:7.2+dfsg-7", "7.2.22 (Debian 1:7.2+dfsg-7)"},
		{" (Debian 1:7.2+dfsg-7)", "7.2.22 (Debian 1:7.2+dfsg-7)"},
		{"", "7.2.22"},
	} {
		var v qmpVersion
		v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro, v.Package = 7, 2, 22, tc.pkg
		if got := v.String(); got != tc.want {
			t.Errorf("package %q: %q; want %q", tc.pkg, got, tc.want)
		}
	}
}

// TestTemplateArgsOwnNothingOutside checks a template's command line (template.go): the
// machine's devices in the machine's order, with the RAM in the snapshot's memory file mapped
// shared, null disks keeping their read-only flag, a tap of the template's own, the monitor
// and agent port on inherited descriptors, no kernel, and vCPUs that never start.
func TestTemplateArgsOwnNothingOutside(t *testing.T) {
	sh := shape{VCPU: 2, MemoryMiB: 1024, Disks: 2, NIC: true, Accel: "tcg", DiskReadOnly: []bool{true, false}}
	got := strings.Join(templateArgs(sh, "/snap/a,b/memory", 4, 3, -1), " ")
	for _, want := range []string{
		"-object memory-backend-file,id=microvm.ram,size=1024M,mem-path=/snap/a,,b/memory,share=on",
		"-drive id=disk0,driver=null-co,if=none,readonly=on -device virtio-blk-device,drive=disk0 -drive id=disk1,driver=null-co,if=none -device virtio-blk-device,drive=disk1 -netdev tap,id=net0,ifname=template,script=no,downscript=no -device virtio-net-device",
		"-chardev socket,id=agent,fd=4,server=on,wait=off",
		"-chardev socket,id=qmp,fd=3 -mon chardev=qmp,mode=control",
		"-smp 2",
		"-S -incoming defer",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("template args lack %q:\n%s", want, got)
		}
	}
	for _, bad := range []string{"-kernel", "-append", "-initrd", "-qmp", ",file=", ",path=", "memfd"} {
		if strings.Contains(got, bad) {
			t.Errorf("template args hold %q:\n%s", bad, got)
		}
	}
	// With a scratch tap (a daemon that is not root cannot make the template's namespace),
	// the NIC is that tap's queue on an inherited descriptor.
	withTap := strings.Join(templateArgs(sh, "/snap/memory", 4, 3, 6), " ")
	if !strings.Contains(withTap, "-netdev tap,id=net0,fd=6 -device virtio-net-device") || strings.Contains(withTap, "ifname=") {
		t.Errorf("template args with a scratch tap on fd 6:\n%s", withTap)
	}
	if (shape{Disks: 1}).reshapable() || !(shape{Disks: 1, DiskReadOnly: []bool{false}}).reshapable() {
		t.Error("reshapable: want false for a record without the disks' read-only flags, true with them")
	}
}
