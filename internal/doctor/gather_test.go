package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/roothelper"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
)

// writeTree creates files (path → content; a path ending in "/" is a directory) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func tempLayout(t *testing.T) paths.Layout {
	t.Helper()
	home := t.TempDir()
	l, err := paths.New(func(k string) (string, bool) {
		if k == "BANGER_SOCKET" {
			return filepath.Join(home, "run", "bangerd.sock"), true
		}
		return "", false
	}, os.Getuid(), home)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestGatherFromFakeRoot reads a made-up host: a 6.1 kernel with cgroup v1 and favordynmods
// on the command line, KVM parameters, bridging built in, dnsmasq forwarding .vm, an
// installed image whose manifest names its kernel, and a config with vm_defaults.
func TestGatherFromFakeRoot(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"proc/sys/kernel/osrelease":               "6.1.0-28-amd64\n",
		"proc/meminfo":                            "MemTotal:       32768000 kB\n",
		"proc/cpuinfo":                            "processor\t: 0\nflags\t\t: fpu vmx sse2\n",
		"proc/mounts":                             "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0\n",
		"proc/cmdline":                            "BOOT_IMAGE=/vmlinuz quiet cgroup_favordynmods=true -- init-arg cgroup_favordynmods=false\n",
		"sys/module/kvm_intel/":                   "",
		"sys/module/kvm/parameters/nx_huge_pages": "N\n",
		"sys/devices/system/cpu/vulnerabilities/itlb_multihit": "Not affected\n",
		"lib/modules/6.1.0-28-amd64/modules.builtin":           "kernel/net/bridge/bridge.ko\n",
		"etc/resolv.conf":           "# managed\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n",
		"etc/dnsmasq.d/other.conf":  "cache-size=1000\n",
		"etc/dnsmasq.d/banger.conf": "server=/vm/127.0.0.1#53530\n",
		"dev/kvm":                   "",
		"etc/subuid":                "alice:100000:65536\nroot:165536:65536\n",
		"etc/subgid":                "0:165536:65536\n",
		"proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1\n",
	})
	l := tempLayout(t)
	writeTree(t, l.ConfigDir, map[string]string{
		"config.toml":             "default_image_name = \"devbox\"\n[vm_defaults]\nvcpu = 2\n",
		"catalogs/team.json":      `{"images": [{"name": "devbox", "oci": "registry.example/devbox:3", "kernel": "fc-6.1"}]}`,
		"../../.ssh/placeholder/": "",
	})
	writeTree(t, l.StateDir, map[string]string{
		"images/devbox/aaaa/rootfs.ext4":   "x",
		"images/devbox/aaaa/manifest.json": `{"name": "devbox", "kernel": "mykernel"}`,
		"kernels/mykernel/vmlinux":         "elf",
	})

	var ran []string
	env := Env{
		Root:   root,
		Layout: l,
		UID:    0,
		LookPath: func(name string) (string, error) {
			if name == "debootstrap" || name == "git" {
				return "", errors.New(name + " not found")
			}
			return "/usr/bin/" + name, nil
		},
		Output: func(ctx context.Context, name string, args ...string) (string, error) {
			ran = append(ran, filepath.Base(name)+" "+strings.Join(args, " "))
			switch filepath.Base(name) {
			case "qemu-system-x86_64":
				if args[0] == "--version" {
					return "QEMU emulator version 8.2.1 (Debian)\nCopyright\n", nil
				}
				return "Supported machines are:\nmicrovm              microvm (i386)\npc                   Standard PC\n", nil
			case "mkfs.ext4":
				return "mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0\n", nil
			case "mmdebstrap":
				return "mmdebstrap 1.3.5\n", nil
			case "ssh":
				return "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026\n", nil
			case "depmod":
				return "kmod version 30\n+ZSTD +XZ\n", nil
			}
			return "", fmt.Errorf("unexpected %s", name)
		},
		Net: func(cfg config.Config, l paths.Layout) NetFacts {
			return NetFacts{NFTables: NFTables{Filter: hostnet.FilterState{Present: true, NAT: []netip.Addr{netip.MustParseAddr("172.16.0.2")}}}}
		},
		Daemon: func(ctx context.Context, socket string) Daemon { return Daemon{Socket: socket} },
		Firecracker: func(ctx context.Context, cfg config.Config) (Firecracker, Jailer, vmm.Probe) {
			err := errors.New("no firecracker")
			return Firecracker{Err: err}, Jailer{}, vmm.Probe{Driver: "firecracker", Err: err}
		},
		Getenv: func(string) string { return "" },
	}
	f := Gather(context.Background(), env)

	checks := []struct {
		what      string
		got, want any
	}{
		{"kernel release", f.KernelRelease, "6.1.0-28-amd64"},
		{"config loaded", f.ConfigErr == nil && f.ConfigExists, true},
		{"vm_defaults.vcpu", f.Config.VMDefaults.VCPU, 2},
		{"host memory", f.Host.MemoryBytes, int64(32768000) * 1024},
		{"kvm accel (kvm_intel)", f.KVM.Accel.Accel, host.KVM},
		{"cpu virt flag", f.KVM.CPUVirt, true},
		{"kvm modules", strings.Join(f.KVM.Modules, ","), "kvm_intel"},
		{"vmm facts carry the accel", f.VMM.Accel.Accel, host.KVM},
		{"vmm facts carry the probes in the daemon's order", len(f.VMM.Drivers) == 2 && f.VMM.Drivers[0].Driver == "firecracker" && f.VMM.Drivers[1] == vmm.Probe{Driver: "qemu", Title: "QEMU", Found: "qemu at /usr/bin/qemu-system-x86_64"}, true},
		{"qemu version", f.QEMU.Version, "8.2.1"},
		{"qemu microvm", f.QEMU.Microvm, true},
		{"mkfs version", f.Tools["mkfs.ext4"].Version, "1.47.0"},
		{"depmod version", f.Tools["depmod"].Version, "30"},
		{"ssh version", f.Tools["ssh"].Version, "OpenSSH_9.2p1"},
		{"git missing", f.Tools["git"].Err != nil, true},
		{"bridge builtin", f.Bridge.Module, "builtin"},
		{"tun missing from the fake root", f.Tun.Exists, false},
		{"nftables from Net", len(f.NFTables.Filter.NAT), 1},
		{"cgroup v2 root", f.Cgroup.V2Root, false},
		{"favordynmods mount option", f.Cgroup.FavorDynmods, false},
		{"favordynmods on the command line (before --)", f.Cgroup.Cmdline, true},
		{"nx_huge_pages", f.NX.Param, "N"},
		{"itlb_multihit", f.NX.ITLB, "Not affected"},
		{"nameservers", strings.Join(f.DNS.Nameservers, ","), "192.0.2.53,192.0.2.54"},
		{"dnsmasq forwarder", f.DNS.Forwarder, "/etc/dnsmasq.d/banger.conf"},
		{"dnsmasq port", f.DNS.ForwarderPort, 53530},
		{"host ip", f.DNS.HostIP.String(), "172.16.0.1"},
		{"image from the user catalog", f.Image.Kind + " " + f.Image.Origin, "oci registry.example/devbox:3"},
		{"image installed", f.Image.Installed, true},
		{"kernel named by the image's manifest", f.Kernel.Name, "mykernel"},
		{"kernel installed", f.Kernel.Installed, true},
		{"ssh include not installed", f.SSHConfig.Installed, false},
		{"subordinate uids by name", fmt.Sprint(f.Subordinate.UIDs), "[165536-231071]"},
		{"subordinate gids by uid", fmt.Sprint(f.Subordinate.GIDs), "[165536-231071]"},
		{"a free range after them", f.Subordinate.Free.String(), "231072-296607"},
		{"newuidmap", f.Subordinate.NewUIDMap.Path, "/usr/bin/newuidmap"},
		{"apparmor userns restriction", f.Subordinate.AppArmorRestrict, "1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	for _, r := range ran {
		if !strings.Contains(r, "version") && !strings.HasSuffix(r, " -V") && r != "qemu-system-x86_64 -machine help" {
			t.Errorf("Gather ran %q; it may only ask tools for their version (and QEMU for its machines)", r)
		}
	}
}

// TestRealHostSmoke gathers facts from this machine with a layout in a temporary directory:
// every check runs, nothing is created in that layout, and no daemon is started.
func TestRealHostSmoke(t *testing.T) {
	l := tempLayout(t)
	f := Gather(context.Background(), Env{Layout: l, UID: os.Getuid()})
	rs := Check(f)
	if len(rs) < 25 {
		t.Fatalf("%d results, want at least 25", len(rs))
	}
	seen := map[string]bool{}
	for _, r := range rs {
		seen[r.Check] = true
		if r.Status != Pass && r.Fix == "" {
			t.Errorf("%s: %s without a fix: %s", r.Check, r.Status, r.Detail)
		}
	}
	for _, want := range []string{"arch", "kvm", "vmm", "firecracker", "jailer", "qemu", "mkfs.ext4", "tun", "bridge", "nftables", "disk", "daemon", "image", "kernel", "dns", "favordynmods", "nx_huge_pages"} {
		if !seen[want] {
			t.Errorf("no %q check", want)
		}
	}
	for _, p := range []string{l.StateDir, l.ConfigDir, l.CacheDir, l.Socket} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("doctor created %s; it must change nothing", p)
		}
	}
	if f.Daemon.Running {
		t.Errorf("a daemon answers on the test's own socket %s", l.Socket)
	}
	for _, r := range rs {
		t.Logf("%s %-22s %s", r.Status, r.Check, r.Detail)
	}
}

// Without root the Firecracker driver's probe says it needs root, unless the root helper
// starts jails: then Gather clears that, as the daemon's driver (which asks the helper) would.
func TestGatherFirecrackerThroughTheHelper(t *testing.T) {
	for _, jails := range []bool{false, true} {
		env := Env{
			Root: t.TempDir(), Layout: tempLayout(t), UID: 1000,
			LookPath: func(name string) (string, error) { return "", errors.New(name + " not found") },
			Output:   func(ctx context.Context, name string, args ...string) (string, error) { return "", errors.New("no") },
			Net:      func(config.Config, paths.Layout) NetFacts { return NetFacts{} },
			Daemon:   func(ctx context.Context, socket string) Daemon { return Daemon{Socket: socket} },
			Firecracker: func(ctx context.Context, cfg config.Config) (Firecracker, Jailer, vmm.Probe) {
				return Firecracker{}, Jailer{}, vmm.Probe{Driver: "firecracker", Found: "firecracker 1.14.2", Err: fmt.Errorf("%w (uid 1000)", firecracker.ErrNeedsRoot)}
			},
			Getenv:        func(string) string { return "" },
			Helper:        func(string, roothelper.Network) (string, bool, error) { return "v1", jails, nil },
			UserGroups:    func(uid int) (string, []int, error) { return "dev", []int{1000}, nil },
			GroupID:       func(string) (int, error) { return 1001, nil },
			ProcessGroups: func() ([]int, error) { return []int{1000}, nil },
		}
		f := Gather(context.Background(), env)
		if got := f.VMM.Drivers[0].Err == nil; got != jails || f.Helper.Jails != jails {
			t.Errorf("helper jails %v: the Firecracker probe's error is %v, Helper.Jails %v", jails, f.VMM.Drivers[0].Err, f.Helper.Jails)
		}
	}
}
