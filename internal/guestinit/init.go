// Package guestinit is banger-agent's boot half: as the initramfs /init (PID 1) it loads the
// kernel modules the initramfs carries, mounts the shared image read-only and the VM's own
// disk, assembles an overlayfs root from them, mounts the kernel's module disk at
// /lib/modules/<release> and binds directories of the VM disk where overlayfs cannot serve
// (container storage), then hands over:
//
//   - to systemd, when the image's /sbin/init is systemd: the agent installs itself as a
//     runtime unit under /run and switch_roots into /sbin/init;
//   - to itself otherwise (images without systemd, such as most OCI images): it switch_roots
//     into its own copy under /run/banger and stays PID 1 (package guestagent, RunInit).
//
// The kernel command line tells it what to do:
//
//	banger.lower=vda    block device holding the read-only image
//	banger.upper=vdb    block device holding the VM's writable disk
//	banger.modules=vdc  block device holding the kernel's module tree (optional)
//
// Everything it mounts stays visible in the guest under /run/banger.
package guestinit

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"golang.org/x/sys/unix"
)

// Paths inside the initramfs and, after the switch, inside the guest.
const (
	newRoot    = "/newroot"
	bangerRun  = "/run/banger"
	lowerMount = bangerRun + "/lower"
	diskMount  = bangerRun + "/disk"
	modMount   = bangerRun + "/modules"
	agentPath  = agent.GuestBinary // where the host runs the agent's tools too
	unitDir    = "/run/systemd/system"
	unitName   = "banger-agent.service"
)

// Params are the banger.* settings of the kernel command line.
type Params struct {
	Lower   string // device name of the image, e.g. "vda"
	Upper   string // device name of the VM disk, e.g. "vdb"
	Modules string // device name of the kernel's module disk, e.g. "vdc"; "" for none
	Debug   bool
}

// ParseCmdline extracts Params from a kernel command line.
func ParseCmdline(cmdline string) (Params, error) {
	var p Params
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "banger.lower":
			p.Lower = v
		case "banger.upper":
			p.Upper = v
		case "banger.modules":
			p.Modules = v
		case "banger.debug":
			p.Debug = v == "" || v == "1"
		}
	}
	for _, d := range []struct{ key, val string }{{"banger.lower", p.Lower}, {"banger.upper", p.Upper}, {"banger.modules", p.Modules}} {
		if d.val == "" {
			if d.key == "banger.modules" {
				continue // optional
			}
			return p, fmt.Errorf("kernel command line has no %s=<device>", d.key)
		}
		if strings.ContainsAny(d.val, "/.") {
			return p, fmt.Errorf("%s=%q: want a device name such as vda", d.key, d.val)
		}
	}
	return p, nil
}

// Run boots the guest. It only returns on failure; the caller then powers the guest off.
func Run(selfPath string) error {
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "banger-agent: init: %6.3fs "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	if err := mountEarly(); err != nil {
		return err
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read /proc/cmdline: %w", err)
	}
	p, err := ParseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	n, err := LoadModules("/lib/modules/" + release)
	if err != nil {
		return err
	}
	logf("loaded %d modules", n)
	if err := assembleRoot(p); err != nil {
		return err
	}
	logf("root assembled (image %s read-only, disk %s)", p.Lower, p.Upper)
	if p.Modules != "" {
		where, err := mountModules(p.Modules, release)
		if err != nil {
			return err
		}
		logf("kernel modules (%s) at %s", p.Modules, where)
	}
	if err := bindVolumes(); err != nil {
		return err
	}
	if err := copyFile(selfPath, agentPath, 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	init, systemd := findInit(newRoot)
	if !systemd {
		// No systemd: the agent stays PID 1 (reaping, shutdown) and serves the host itself.
		logf("image has no systemd (%s); the agent is init", init)
		return switchRoot(newRoot, agentPath, "init")
	}
	if err := installUnit(); err != nil {
		return err
	}
	logf("switching root to %s", init)
	return switchRoot(newRoot, "/sbin/init")
}

// Fail reports err on the console and powers the guest off, so the host sees the VMM exit
// instead of waiting for an agent that will never answer.
func Fail(err error) {
	fmt.Fprintf(os.Stderr, "banger-agent: init failed: %v\n", err)
	unix.Sync()
	time.Sleep(100 * time.Millisecond)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// If power-off is not possible, halt: with panic on PID 1 exit the VMM still stops.
	os.Exit(1)
}

func mountEarly() error {
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dst, err)
		}
	}
	return nil
}
