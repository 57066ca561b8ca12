package paths

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/banger-dev/banger/internal/peercred"
)

// ErrUnsafe is the kind of every refusal of a directory another user could control:
// errors.Is(err, ErrUnsafe).
var ErrUnsafe = errors.New("unsafe directory")

// UnsafeError is a directory on the way to banger's sockets that someone other than root and
// banger's user could change.
type UnsafeError struct {
	Path    string
	Problem string // what is wrong, e.g. "is owned by uid 65534 (nobody)"
	Fix     string // what to do
}

func (e *UnsafeError) Error() string {
	return fmt.Sprintf("%s %s; %s", e.Path, e.Problem, e.Fix)
}

// Unwrap makes errors.Is(err, ErrUnsafe) true.
func (e *UnsafeError) Unwrap() error { return ErrUnsafe }

// maxLinks bounds the symlinks followed while walking a path (the kernel's own limit).
const maxLinks = 40

// ensureSecureDir makes dir a directory that only uid (and root) can change, creating what is
// missing with mode 0700, and checks what already exists, the way OpenSSH's secure_path and
// systemd's chase do:
//
//   - every directory above dir, after symlinks are followed, is owned by root or uid and not
//     writable by group or others unless it is sticky (like /tmp: there, others can add entries
//     but not replace the ones root or uid own); a symlink on the way must be owned by root or
//     uid too;
//   - dir itself is a real directory (a symlink there is refused, never followed), owned by
//     uid, with no write permission for group or others, and with private no permission for
//     them at all.
//
// A directory another user created first (mkdir of an existing directory succeeds in
// MkdirAll) is therefore detected rather than used. fix says what to do about a refusal.
func ensureSecureDir(dir string, uid int, private bool, fix string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("runtime directory %q is not an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	if dir == "/" {
		return &UnsafeError{Path: dir, Problem: "is the root directory, not a directory of banger's own", Fix: fix}
	}
	parent, err := ensureTrustedPath(filepath.Dir(dir), uid, fix)
	if err != nil {
		return err
	}
	final := filepath.Join(parent, filepath.Base(dir))
	if err := os.Mkdir(final, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create runtime directory %s: %w", final, err)
	}
	return checkOwnDir(final, uid, private, fix)
}

// checkOwnDir checks that dir, not following a symlink, is a directory owned by uid with no
// write permission (private: no permission at all) for group and others.
func checkOwnDir(dir string, uid int, private bool, fix string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check runtime directory: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := os.Readlink(dir)
		return &UnsafeError{Path: dir, Problem: fmt.Sprintf("is a symlink (to %s), not a directory of banger's own", target), Fix: fix}
	}
	if !fi.IsDir() {
		return &UnsafeError{Path: dir, Problem: fmt.Sprintf("is not a directory (mode %s)", fi.Mode()), Fix: fix}
	}
	owner := ownerOf(fi)
	if owner != uid {
		return &UnsafeError{Path: dir, Problem: fmt.Sprintf("is owned by uid %s, not by uid %s that banger runs as: another user may have created it to pose as banger's daemon or a VM's agent", peercred.Describe(owner), peercred.Describe(uid)), Fix: fix}
	}
	perm := fi.Mode().Perm()
	if private && perm&0o077 != 0 {
		return &UnsafeError{Path: dir, Problem: fmt.Sprintf("has mode %04o, open to other users", perm), Fix: "run chmod 700 " + dir}
	}
	if perm&0o022 != 0 {
		if fi.Mode()&fs.ModeSticky != 0 {
			return &UnsafeError{Path: dir, Problem: fmt.Sprintf("is shared with other users (mode %04o, sticky): they can plant files next to banger's sockets", perm), Fix: fix}
		}
		return &UnsafeError{Path: dir, Problem: fmt.Sprintf("has mode %04o: other users can add or replace files in it", perm), Fix: "run chmod go-w " + dir + ", or " + fix}
	}
	return nil
}

// ensureTrustedPath walks the absolute path p from /, following symlinks, creating missing
// directories with mode 0700, and checks that every directory and symlink on the way is owned
// by root or uid and that every directory is not writable by group or others unless sticky.
// It returns p with every symlink resolved.
func ensureTrustedPath(p string, uid int, fix string) (string, error) {
	if err := checkTrusted("/", uid, fix); err != nil {
		return "", err
	}
	cur := "/"
	rest := splitPath(p)
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur has no symlinks left: lexical is right
			continue
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(next, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return "", fmt.Errorf("create directory %s: %w", next, err)
			}
			fi, err = os.Lstat(next)
		}
		if err != nil {
			return "", fmt.Errorf("check directory %s: %w", next, err)
		}
		if err := checkTrustedInfo(next, fi, uid, fix); err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if links++; links > maxLinks {
				return "", fmt.Errorf("check directory %s: too many levels of symbolic links", p)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", fmt.Errorf("check directory %s: %w", next, err)
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			rest = append(splitPath(target), rest...)
			continue
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("%s is not a directory (mode %s); it is on the way to banger's runtime directory", next, fi.Mode())
		}
		cur = next
	}
	return cur, nil
}

func splitPath(p string) []string {
	return strings.Split(strings.Trim(p, "/"), "/")
}

func checkTrusted(p string, uid int, fix string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("check directory %s: %w", p, err)
	}
	return checkTrustedInfo(p, fi, uid, fix)
}

// checkTrustedInfo applies the rule for a directory or symlink above banger's own ones.
func checkTrustedInfo(p string, fi fs.FileInfo, uid int, fix string) error {
	if owner := ownerOf(fi); owner != 0 && owner != uid {
		what := "a directory"
		if fi.Mode()&fs.ModeSymlink != 0 {
			what = "a symlink"
		}
		return &UnsafeError{Path: p, Problem: fmt.Sprintf("is %s on the way to banger's runtime directory owned by uid %s; every directory above it must belong to root or to uid %s", what, peercred.Describe(owner), peercred.Describe(uid)), Fix: fix}
	}
	if fi.IsDir() && fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return &UnsafeError{Path: p, Problem: fmt.Sprintf("is a directory on the way to banger's runtime directory with mode %04o: other users can replace what is in it", fi.Mode().Perm()), Fix: "run chmod go-w " + p + " (or chmod +t for a shared directory), or " + fix}
	}
	return nil
}

func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
