package guestinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Volumes are the directories of the guest root that are bound from the VM's disk instead of
// living on the overlay root: container engines stack overlayfs mounts of their own there
// (Docker's overlay2, containerd's and podman's overlayfs snapshotters), and overlayfs cannot
// use an overlayfs as its upper layer. The VM disk is a real ext4, so they work there. What
// the image ships in one of them is copied to the disk on first boot.
var Volumes = []string{"/var/lib/docker", "/var/lib/containerd", "/var/lib/containers"}

// volumesDir is where the volumes live on the VM disk (mounted at diskMount).
const volumesDir = diskMount + "/volumes"

// maxSymlinks bounds symlink resolution inside the new root, like the kernel's limit.
const maxSymlinks = 40

// resolveInRoot resolves p (absolute, inside root) the way the guest will see it once root is
// /: symlinks are followed with absolute targets taken from root and ".." stopping at root. It
// returns the path inside root of the deepest existing part plus what does not exist yet.
func resolveInRoot(root, p string) (existing string, missing []string, err error) {
	todo := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := "/"
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		fi, err := os.Lstat(root + next)
		if errors.Is(err, fs.ErrNotExist) {
			return cur, append([]string{c}, todo...), nil
		}
		if err != nil {
			return "", nil, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxSymlinks {
			return "", nil, fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(root + next)
		if err != nil {
			return "", nil, err
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return cur, nil, nil
}

// mkdirInRoot makes directory p inside root (resolving symlinks as the guest will) and returns
// its host path.
func mkdirInRoot(root, p string) (string, error) {
	existing, missing, err := resolveInRoot(root, p)
	if err != nil {
		return "", err
	}
	dir := root + existing
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s: %s is not a directory", p, existing)
	}
	for _, c := range missing {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("%s: cannot create %q", p, c)
		}
		dir = filepath.Join(dir, c)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return dir, nil
}

// mountModules mounts the kernel's module disk read-only under /run/banger and binds it at
// /lib/modules/<release> of the new root (/usr/lib/modules on merged-/usr images, through
// their /lib symlink). It returns where the guest sees the modules.
func mountModules(dev, release string) (string, error) {
	devPath, err := waitDevice(dev)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(modMount, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount(devPath, modMount, "ext4", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, "noload"); err != nil {
		return "", fmt.Errorf("mount kernel modules %s read-only: %w", devPath, err)
	}
	where := "/lib/modules/" + release
	dst, err := mkdirInRoot(newRoot, where)
	if err != nil {
		return "", fmt.Errorf("make %s in the root: %w", where, err)
	}
	if err := unix.Mount(modMount, dst, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind kernel modules at %s: %w", where, err)
	}
	_ = unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, "")
	return strings.TrimPrefix(dst, newRoot), nil
}

// bindVolumes binds a directory of the VM disk at each of Volumes whose parent the image has.
func bindVolumes() error {
	for _, v := range Volumes {
		parent, missing, err := resolveInRoot(newRoot, path.Dir(v))
		if err != nil || len(missing) > 0 {
			continue // no /var/lib: not an image a container engine runs in
		}
		if fi, err := os.Stat(newRoot + parent); err != nil || !fi.IsDir() {
			continue
		}
		src := volumesDir + v
		fresh := false
		if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
			fresh = true
		}
		if err := os.MkdirAll(src, 0o711); err != nil {
			return fmt.Errorf("volume %s on the VM disk: %w", v, err)
		}
		dst, err := mkdirInRoot(newRoot, v)
		if err != nil {
			return fmt.Errorf("volume %s: %w", v, err)
		}
		if fresh {
			// First boot: what the image ships there moves to the disk with it.
			if err := copyTree(dst, src); err != nil {
				return fmt.Errorf("volume %s: copy the image's contents: %w", v, err)
			}
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind volume %s: %w", v, err)
		}
	}
	return nil
}

// copyTree copies the contents of src into the existing directory dst, keeping owners, modes,
// times and symlinks. It is only used for what images ship in Volumes, usually nothing.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch {
		case rel == ".":
		case d.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		case d.Type().IsRegular():
			if err := copyFile(p, target, 0o600); err != nil {
				return err
			}
		default:
			if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
				return err
			}
		}
		if err := unix.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			if err := unix.Chmod(target, st.Mode&0o7777); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		return unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// findInit says what the image's /sbin/init is and whether it is systemd.
func findInit(root string) (string, bool) {
	existing, missing, err := resolveInRoot(root, "/sbin/init")
	if err != nil {
		return "/sbin/init: " + err.Error(), false
	}
	if len(missing) > 0 {
		return "no /sbin/init", false
	}
	fi, err := os.Stat(root + existing)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return "/sbin/init is not an executable file", false
	}
	return "/sbin/init → " + existing, path.Base(existing) == "systemd"
}
