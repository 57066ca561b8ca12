package guestinit

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// deviceWait bounds the wait for a block device to appear after its driver loaded.
const deviceWait = 20 * time.Second

func waitDevice(name string) (string, error) {
	dev := "/dev/" + name
	deadline := time.Now().Add(deviceWait)
	for {
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("block device %s did not appear within %s", dev, deviceWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assembleRoot mounts the image read-only and the VM disk read-write under /run/banger and
// stacks them as an overlayfs on /newroot. The image is never written: it is mounted
// read-only with journal replay disabled.
func assembleRoot(p Params) error {
	lowerDev, err := waitDevice(p.Lower)
	if err != nil {
		return err
	}
	upperDev, err := waitDevice(p.Upper)
	if err != nil {
		return err
	}
	for _, d := range []string{lowerMount, diskMount, newRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
	}
	if err := unix.Mount(lowerDev, lowerMount, "ext4", unix.MS_RDONLY|unix.MS_NODEV, "noload"); err != nil {
		return fmt.Errorf("mount image %s read-only: %w", lowerDev, err)
	}
	if err := unix.Mount(upperDev, diskMount, "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount VM disk %s: %w", upperDev, err)
	}
	upper, work := diskMount+"/root", diskMount+"/work"
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("mkdir %s on the VM disk: %w", d, err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lowerMount, upper, work)
	if err := unix.Mount("overlay", newRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay root (%s): %w", opts, err)
	}
	return nil
}

// agentUnit runs the agent as early as systemd can: it needs only /dev, /proc and its port,
// so it is ordered before sysinit.target and does not wait for the network or sshd.
const agentUnit = `[Unit]
Description=banger guest agent
DefaultDependencies=no
Before=sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=simple
ExecStart=` + agentPath + ` serve
Restart=always
RestartSec=200ms
OOMScoreAdjust=-900
`

// installUnit registers the agent (copied to /run/banger) as a runtime unit
// (/run/systemd/system), so the image itself needs no agent files and never goes stale.
// /run is a tmpfs that systemd adopts as it finds it.
func installUnit() error {
	wants := filepath.Join(unitDir, "sysinit.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return fmt.Errorf("install agent unit: %w", err)
	}
	if err := os.WriteFile(filepath.Join(unitDir, unitName), []byte(agentUnit), 0o644); err != nil {
		return fmt.Errorf("install agent unit: %w", err)
	}
	if err := os.Symlink("../"+unitName, filepath.Join(wants, unitName)); err != nil && !os.IsExist(err) {
		return fmt.Errorf("enable agent unit: %w", err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// switchRoot moves the API filesystems into newroot, frees the initramfs, makes newroot the
// root and executes init there with args. It returns only on failure.
func switchRoot(newroot, init string, args ...string) error {
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		dst := newroot + m
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", dst, err)
		}
		if err := unix.Mount(m, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to the new root: %w", m, err)
		}
	}
	if err := os.Chdir(newroot); err != nil {
		return err
	}
	var root unix.Stat_t
	if err := unix.Stat("/", &root); err == nil {
		freeInitramfs("/", root.Dev, newroot)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the new root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return unix.Exec(init, append([]string{init}, args...), os.Environ())
}

// freeInitramfs deletes the initramfs's files (it lives in RAM) without crossing into other
// filesystems or the new root.
func freeInitramfs(dir string, dev uint64, skip string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if p == skip {
			continue
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != dev {
			continue
		}
		if e.IsDir() {
			freeInitramfs(p, dev, skip)
			_ = unix.Rmdir(p)
		} else {
			_ = unix.Unlink(p)
		}
	}
}
