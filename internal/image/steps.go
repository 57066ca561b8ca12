package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// applySteps applies a recipe's customization steps to the tree at root, in order.
//
// Every file operation goes through an os.Root, so a path can never leave the tree: a symlink
// that points outside it (or is absolute, which inside an image tree means "relative to the
// image root", not to the host's) is refused rather than followed. Steps that replace a path
// (write, symlink, mask) create the new entry under a temporary name and rename it over the
// old one, so an existing symlink at the path is replaced, never written through.
func applySteps(root string, steps []Step) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("open image tree: %w", err)
	}
	defer r.Close()
	for i, s := range steps {
		if err := s.validate(); err != nil {
			return fmt.Errorf("step %d (%s): %w", i, s, err)
		}
		if err := applyStep(r, s); err != nil {
			if strings.Contains(err.Error(), "path escapes from parent") {
				err = fmt.Errorf("%w (a symlink on the way is absolute or leads out of the image tree; steps never follow such links)", err)
			}
			return fmt.Errorf("step %d (%s): %w", i, s, err)
		}
	}
	return nil
}

func applyStep(r *os.Root, s Step) error {
	name := strings.TrimPrefix(s.Path, "/")
	switch s.Kind {
	case StepWrite:
		mode := s.Mode
		if mode == 0 {
			mode = 0o644
		}
		return replaceFile(r, name, []byte(s.Content), mode, nil)
	case StepRemove:
		return removeMatching(r, name)
	case StepSymlink:
		return replaceWithSymlink(r, name, s.Target)
	case StepMask:
		return replaceWithSymlink(r, "etc/systemd/system/"+s.Unit, "/dev/null")
	case StepTruncate:
		return truncateFile(r, name)
	case StepLockPassword:
		return lockPassword(r, s.User)
	}
	return fmt.Errorf("unknown step kind %q", s.Kind)
}

// owner is a file's uid and gid.
type owner struct{ uid, gid int }

// replaceFile atomically replaces name with a regular file holding data. Parent directories are
// created (0755). When own is nil the file keeps the creator's ownership (root during a build).
func replaceFile(r *os.Root, name string, data []byte, mode fs.FileMode, own *owner) error {
	dir := path.Dir(name)
	if err := r.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := tempName(name)
	if err := r.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && own != nil {
		err = f.Chown(own.uid, own.gid)
	}
	if err == nil {
		err = f.Chmod(mode) // after Chown, which clears setuid bits
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Rename(tmp, name)
	}
	if err != nil {
		_ = r.Remove(tmp)
	}
	return err
}

// replaceWithSymlink atomically replaces name with a symlink to target. The target is stored
// as given and never followed.
func replaceWithSymlink(r *os.Root, name, target string) error {
	if err := r.MkdirAll(path.Dir(name), 0o755); err != nil {
		return err
	}
	tmp := tempName(name)
	if err := r.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := r.Symlink(target, tmp); err != nil {
		return err
	}
	if err := r.Rename(tmp, name); err != nil {
		_ = r.Remove(tmp)
		return err
	}
	return nil
}

func tempName(name string) string {
	return path.Join(path.Dir(name), ".banger-"+path.Base(name)+".tmp")
}

// removeMatching removes name, recursively, like rm -rf. The last element may be a glob. A
// symlink is removed itself, never its target; a missing path is not an error.
func removeMatching(r *os.Root, name string) error {
	dir, base := path.Split(name)
	if !strings.ContainsAny(base, `*?[\`) {
		return r.RemoveAll(name)
	}
	if dir == "" {
		dir = "."
	}
	d, err := r.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if ok, _ := path.Match(base, n); ok { // the pattern was validated
			if err := r.RemoveAll(path.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// truncateFile makes name an empty regular file, keeping its mode and owner when it exists.
func truncateFile(r *os.Root, name string) error {
	fi, err := r.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return replaceFile(r, name, nil, 0o644, nil)
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("/%s is a %s, not a regular file; refusing to truncate it", name, describeType(fi.Mode()))
	}
	f, err := r.OpenFile(name, os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// lockPassword prefixes user's password hash in /etc/shadow with "!" (what passwd -l does), so
// no password can log in. Key-based ssh logins keep working.
func lockPassword(r *os.Root, user string) error {
	const shadow = "etc/shadow"
	fi, err := r.Lstat(shadow)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("/%s is a %s, not a regular file", shadow, describeType(fi.Mode()))
	}
	data, err := r.ReadFile(shadow)
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	found := false
	for i, line := range lines {
		fields := strings.Split(line, ":")
		if len(fields) < 2 || fields[0] != user {
			continue
		}
		found = true
		if !strings.HasPrefix(fields[1], "!") {
			fields[1] = "!" + fields[1]
			lines[i] = strings.Join(fields, ":")
		}
	}
	if !found {
		return fmt.Errorf("user %q has no entry in /%s", user, shadow)
	}
	var own *owner
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		own = &owner{uid: int(st.Uid), gid: int(st.Gid)}
	}
	return replaceFile(r, shadow, []byte(strings.Join(lines, "\n")), fi.Mode().Perm(), own)
}

func describeType(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}
