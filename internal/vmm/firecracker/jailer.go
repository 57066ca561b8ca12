package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// DefaultJailerBinary is looked up in PATH (and next to the Firecracker binary) when no jailer
// is configured.
const DefaultJailerBinary = "jailer"

// Jailed Firecracker processes run as an unprivileged uid and gid. Unless configured, each VM
// gets its own id, the lowest free one from DefaultJailerID on, used for both uid and gid.
// Why its own: Firecracker is the process a guest attacks first; under a uid shared by all
// VMs, a compromised one could signal or ptrace the other VMs' Firecrackers and open their
// disks. Why this range: it is far above login accounts (1000–60000), systemd's dynamic users
// (61184–65519) and nobody (65534), and banger creates no /etc/passwd entries, so nothing
// else on the host owns files or processes under these ids. An id that /etc/passwd does name
// is skipped. Set jailer_uid/jailer_gid to run every VM under one dedicated account instead.
const (
	DefaultJailerID = 900000
	jailerIDCount   = 100000
)

// JailerOptions configure running Firecracker through the jailer.
type JailerOptions struct {
	// Enabled: nil means "when the jailer binary is found"; false never jails; true requires
	// the jailer and fails starts without it.
	Enabled *bool
	// Binary is the jailer (a path, or a name looked up in PATH); "" looks up "jailer" in PATH
	// and then next to the Firecracker binary.
	Binary string
	// ChrootBase holds the per-VM jails: <ChrootBase>/<firecracker binary name>/<VM id>/root.
	// It must be on the same filesystem as the VM directories: the VM's disk and log files are
	// hard-linked into the jail (read-only inputs are copied when they cannot be linked).
	ChrootBase string
	// UID and GID to run as; 0 means a per-VM id from DefaultJailerID on.
	UID, GID int
}

// JailerStatus says whether VMs run jailed and why, for `banger doctor`.
type JailerStatus struct {
	Enabled bool
	Binary  string  // resolved path, "" when not found
	Version Version // zero when not found
	// Reason is one line: why the jailer is or is not used.
	Reason string
	// Warning is set for a usable but questionable setup (a jailer of another version than
	// Firecracker).
	Warning string
}

// findJailer resolves the jailer binary: the configured one, else "jailer" in PATH, else a
// "jailer" next to the Firecracker binary (how release archives ship them).
func findJailer(configured, firecrackerBin string) (string, error) {
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return "", fmt.Errorf("jailer_bin %q not found or not executable", configured)
		}
		return p, nil
	}
	if p, err := exec.LookPath(DefaultJailerBinary); err == nil {
		return p, nil
	}
	if firecrackerBin != "" {
		p := filepath.Join(filepath.Dir(firecrackerBin), DefaultJailerBinary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("no jailer binary in PATH or next to the firecracker binary")
}

// jailerStatus decides whether to jail. fcBin is the resolved Firecracker binary ("" if
// none), fcVersion its version (zero if unknown). An error means a jailer was required
// (jailer_enabled = true, or jailer_bin set) but cannot be used.
func (o JailerOptions) status(ctx context.Context, fcBin string, fcVersion Version) (JailerStatus, error) {
	if o.Enabled != nil && !*o.Enabled {
		return JailerStatus{Reason: "jailer_enabled = false: Firecracker runs unjailed, as root"}, nil
	}
	required := o.Enabled != nil && *o.Enabled
	bin, err := findJailer(o.Binary, fcBin)
	if err != nil {
		if required || o.Binary != "" {
			return JailerStatus{Reason: err.Error()}, fmt.Errorf("firecracker: the jailer is required (jailer_enabled = true or jailer_bin set) but %v; install the jailer from the Firecracker release (%s) or set jailer_enabled = false", err, ReleasesURL)
		}
		return JailerStatus{Reason: "no jailer found (" + err.Error() + "): Firecracker runs unjailed, as root; put the release's jailer in PATH or set jailer_bin for a chroot and an unprivileged uid"}, nil
	}
	st := JailerStatus{Enabled: true, Binary: bin}
	v, err := BinaryVersion(ctx, bin)
	if err != nil {
		st.Enabled = false
		st.Reason = err.Error()
		if required || o.Binary != "" {
			return st, fmt.Errorf("firecracker: jailer %s does not run: %w", bin, err)
		}
		st.Reason = "the jailer at " + bin + " does not run (" + err.Error() + "): Firecracker runs unjailed"
		return st, nil
	}
	st.Version = v
	st.Reason = fmt.Sprintf("jailer %s at %s: each VM runs in a chroot under %s as an unprivileged uid", v, bin, o.ChrootBase)
	if fcVersion != (Version{}) && v != fcVersion {
		st.Warning = fmt.Sprintf("jailer %s and firecracker %s differ; Firecracker supports a jailer of the same release only (v1.7.0's jailer was seen to work with firecracker 1.14.2)", v, fcVersion)
	}
	if o.ChrootBase == "" {
		return st, errors.New("firecracker: no jailer_chroot_base configured")
	}
	return st, nil
}

// jail is one VM's chroot as the jailer builds it.
type jail struct {
	Dir  string // <base>/<exec name>/<id>: removed as a whole on cleanup
	Root string // Dir/root: "/" for the jailed Firecracker
	UID  int
	GID  int
}

var jailerIDRE = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

// newJail computes the jail of VM id for Firecracker binary fcBin.
func newJail(base, fcBin, id string) (jail, error) {
	if !jailerIDRE.MatchString(id) {
		return jail{}, fmt.Errorf("firecracker: VM id %q cannot be a jailer id (letters, digits and hyphens, at most 64)", id)
	}
	exe := filepath.Base(fcBin)
	if !strings.Contains(exe, "firecracker") {
		return jail{}, fmt.Errorf("firecracker: the jailer only runs binaries whose name contains \"firecracker\"; rename %s or set jailer_enabled = false", fcBin)
	}
	if !filepath.IsAbs(base) {
		return jail{}, fmt.Errorf("firecracker: jailer_chroot_base %q is not an absolute path", base)
	}
	dir := filepath.Join(base, exe, id)
	return jail{Dir: dir, Root: filepath.Join(dir, "root")}, nil
}

// validJailDir guards the recursive removal of a jail named by a record: it must look like
// <abs base>/<…firecracker…>/<id>.
func validJailDir(dir, id string) bool {
	return filepath.IsAbs(dir) && filepath.Clean(dir) == dir && jailerIDRE.MatchString(id) &&
		filepath.Base(dir) == id && strings.Contains(filepath.Base(filepath.Dir(dir)), "firecracker") &&
		len(strings.Split(dir, "/")) > 3
}

// usedJailIDs returns the uids owning the jails that exist under base.
func usedJailIDs(base string) map[int]bool {
	used := map[int]bool{}
	roots, _ := filepath.Glob(filepath.Join(base, "*", "*", "root"))
	for _, r := range roots {
		if st, err := os.Stat(r); err == nil {
			if s, ok := st.Sys().(*syscall.Stat_t); ok {
				used[int(s.Uid)] = true
				used[int(s.Gid)] = true
			}
		}
	}
	return used
}

// pickJailID returns the lowest id from DefaultJailerID on that no jail under base uses and
// /etc/passwd (or the group database) does not name.
func pickJailID(base string) (int, error) {
	used := usedJailIDs(base)
	for id := DefaultJailerID; id < DefaultJailerID+jailerIDCount; id++ {
		if used[id] {
			continue
		}
		s := strconv.Itoa(id)
		if _, err := user.LookupId(s); err == nil {
			continue
		}
		if _, err := user.LookupGroupId(s); err == nil {
			continue
		}
		return id, nil
	}
	return 0, fmt.Errorf("firecracker: no free jailer uid in %d–%d; remove stale jails under %s", DefaultJailerID, DefaultJailerID+jailerIDCount-1, base)
}

// create makes the jail's root directory, owned by the jail's uid and gid (the jailer would
// do the same; doing it first lets banger place files before Firecracker starts).
func (j *jail) create() error {
	if err := os.RemoveAll(j.Dir); err != nil { // a leftover of a crashed start of this id
		return fmt.Errorf("firecracker: remove stale jail %s: %w", j.Dir, err)
	}
	// The base stays private to root: the jailer enters the chroot before dropping
	// privileges, so the jailed uid never needs to traverse it.
	if err := os.MkdirAll(filepath.Dir(filepath.Dir(j.Dir)), 0o700); err != nil {
		return fmt.Errorf("firecracker: create jailer_chroot_base: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(j.Dir), 0o755); err != nil {
		return fmt.Errorf("firecracker: create jail: %w", err)
	}
	if err := os.MkdirAll(j.Root, 0o700); err != nil {
		return fmt.Errorf("firecracker: create jail: %w", err)
	}
	for _, d := range []string{j.Root, filepath.Join(j.Root, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("firecracker: create jail: %w", err)
		}
		if err := os.Chown(d, j.UID, j.GID); err != nil {
			return fmt.Errorf("firecracker: hand jail %s to uid %d: %w", d, j.UID, err)
		}
	}
	return nil
}

// place makes src available in the jail as /name and returns that in-jail path. Files are
// hard-linked; a writable file (the VM's disk, its logs) is handed to the jail's uid, which
// changes the original too (they are the VM's own). A read-only file is shared with other VMs
// (the image, the kernel), so its owner and mode are never changed: when the jail's uid could
// not read it through a link, or when it lives on another filesystem, it is copied instead.
func (j *jail) place(src, name string, writable bool) (string, error) {
	dst := filepath.Join(j.Root, name)
	_ = os.Remove(dst)
	err := os.Link(src, dst)
	switch {
	case err == nil && writable:
		if err := os.Chown(dst, j.UID, j.GID); err != nil {
			return "", fmt.Errorf("firecracker: hand %s to the jail's uid %d: %w", src, j.UID, err)
		}
		st, err := os.Stat(dst)
		if err != nil {
			return "", err
		}
		if st.Mode().Perm()&0o600 != 0o600 {
			if err := os.Chmod(dst, st.Mode().Perm()|0o600); err != nil {
				return "", err
			}
		}
		return "/" + name, nil
	case err == nil:
		st, err := os.Stat(dst)
		if err != nil {
			return "", err
		}
		if st.Mode().Perm()&0o004 != 0 {
			return "/" + name, nil
		}
		_ = os.Remove(dst) // not world-readable: copy rather than change a shared file
	case writable:
		if errors.Is(err, syscall.EXDEV) {
			return "", fmt.Errorf("firecracker: cannot hard-link %s into the jail at %s: they are on different filesystems, and a copy would not keep the VM's writes; put jailer_chroot_base on the filesystem of banger's state directory (the default) or set jailer_enabled = false", src, j.Root)
		}
		return "", fmt.Errorf("firecracker: link %s into the jail: %w", src, err)
	}
	if err := copyFile(src, dst); err != nil {
		return "", fmt.Errorf("firecracker: copy %s into the jail: %w", src, err)
	}
	if err := os.Chown(dst, j.UID, j.GID); err != nil {
		return "", err
	}
	return "/" + name, os.Chmod(dst, 0o400)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// jailerArgs is the jailer's command line: Firecracker runs as uid:gid in the jail's root
// and serves its API on apiSock (an in-jail path). The jailer execs Firecracker in its own
// process (no --new-pid-ns, no --daemonize), so the pid banger starts is Firecracker's and its
// record identifies it; vmm.Spawn already gives it its own session. No cgroups are set: the
// jailer then creates none, and there is nothing to clean up there.
func jailerArgs(j jail, id, fcBin, base string, fcArgs []string) []string {
	args := []string{
		"--id", id,
		"--exec-file", fcBin,
		"--uid", strconv.Itoa(j.UID),
		"--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", base,
		"--",
	}
	return append(args, fcArgs...)
}
