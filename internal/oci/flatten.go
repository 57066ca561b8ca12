package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Limits of what ext4 and the guest can hold; an entry beyond them is rejected by name.
const (
	maxNameComponent = 255  // bytes in one path component (ext4)
	maxPath          = 4095 // bytes in a whole path (PATH_MAX - 1)
)

// Whiteout markers of the OCI image layer spec (inherited from aufs).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Stats counts what flattening did.
type Stats struct {
	Files, Dirs, Symlinks, Hardlinks, Fifos int64
	Whiteouts, OpaqueDirs                   int64
	Bytes                                   int64 // regular file data written
	// DevicesSkipped counts device nodes under /dev, which the guest's devtmpfs replaces.
	DevicesSkipped int64
	// XattrsSkipped counts extended attributes the staging file system refused.
	XattrsSkipped int64
}

// Flattener applies image layers, oldest first, to a directory that becomes the image's
// root. It honours whiteouts and opaque directories and keeps ownership, modes (setuid and
// setgid included), hard links, symlinks, times and extended attributes.
//
// Nothing is ever written outside the root: entry names that are absolute, that contain ".."
// or that go through a symlink are rejected, so are hard links to anything outside the tree
// or to a directory, relative symlinks that climb above the root, and device nodes outside
// /dev (those under /dev are skipped: the guest mounts a devtmpfs there). Every error names
// the layer and the entry.
type Flattener struct {
	root    string
	chown   bool // only root can give files away; tests as other users skip it
	stats   Stats
	layer   string          // the layer being applied, for errors
	created map[string]bool // entries the current layer made (opaque markers spare them)
	holds   map[string]bool // directories holding entries the current layer made
	dirs    map[string]dirTimes
}

type dirTimes struct{ atime, mtime time.Time }

// NewFlattener returns a Flattener for root, an existing, empty directory.
func NewFlattener(root string) (*Flattener, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", abs)
	}
	return &Flattener{root: abs, chown: os.Geteuid() == 0, dirs: map[string]dirTimes{}}, nil
}

// Stats returns what has been done so far.
func (f *Flattener) Stats() Stats { return f.stats }

// Apply applies one layer: a tar stream, gzip- or zstd-compressed or not (detected from its
// first bytes). name identifies the layer in errors (its digest).
func (f *Flattener) Apply(r io.Reader, name string) error {
	f.layer = name
	f.created, f.holds = map[string]bool{}, map[string]bool{}
	br := bufio.NewReaderSize(r, 1<<20)
	magic, _ := br.Peek(4)
	var tr *tar.Reader
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("layer %s: %w", name, err)
		}
		defer zr.Close()
		tr = tar.NewReader(zr)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return fmt.Errorf("layer %s: %w", name, err)
		}
		defer zr.Close()
		tr = tar.NewReader(zr)
	default:
		tr = tar.NewReader(br)
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("layer %s: read: %w", name, err)
		}
		if err := f.entry(hdr, tr); err != nil {
			return fmt.Errorf("layer %s: entry %q: %w", name, shortName(hdr.Name), err)
		}
	}
}

// Finish sets the times of the directories, which the entries written into them changed.
func (f *Flattener) Finish() error {
	paths := make([]string, 0, len(f.dirs))
	for p := range f.dirs {
		paths = append(paths, p)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(paths))) // children first
	for _, p := range paths {
		t := f.dirs[p]
		full := f.full(p)
		if fi, err := os.Lstat(full); err != nil || !fi.IsDir() {
			continue // removed by a later layer
		}
		if err := os.Chtimes(full, t.atime, t.mtime); err != nil {
			return fmt.Errorf("set times of %s: %w", p, err)
		}
	}
	return nil
}

// shortName keeps error messages readable for huge names.
func shortName(s string) string {
	if len(s) > 120 {
		return fmt.Sprintf("%s… (%d bytes)", s[:100], len(s))
	}
	return s
}

// cleanName turns a tar entry name into a clean path relative to the root, or says why it is
// refused. "./" prefixes and trailing slashes are fine; absolute names and ".." are not.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute path; layer entries must be relative to the image root")
	}
	if strings.ContainsRune(name, 0) {
		return "", errors.New("name contains a NUL byte")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", errors.New(`path contains ".."; it would escape the image root`)
		}
		if len(c) > maxNameComponent {
			return "", fmt.Errorf("a path component is %d bytes; ext4 allows %d", len(c), maxNameComponent)
		}
	}
	rel := path.Clean(name)
	if len(rel) > maxPath {
		return "", fmt.Errorf("path is %d bytes; the limit is %d", len(rel), maxPath)
	}
	return rel, nil
}

// full is the host path of rel (clean, relative) in the root.
func (f *Flattener) full(rel string) string {
	if rel == "." {
		return f.root
	}
	return f.root + "/" + rel
}

// parents makes sure every parent directory of rel exists as a real directory inside the
// root: with create, missing ones are made (root-owned, 0755, as container runtimes do);
// without, a missing one makes ok false. A symlink or a non-directory on the way is an error,
// so nothing is ever written through a link.
func (f *Flattener) parents(rel string, create bool) (ok bool, err error) {
	dir := path.Dir(rel)
	if dir == "." {
		return true, nil
	}
	cur := ""
	for _, c := range strings.Split(dir, "/") {
		if cur == "" {
			cur = c
		} else {
			cur += "/" + c
		}
		fi, err := os.Lstat(f.full(cur))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if !create {
				return false, nil
			}
			if err := os.Mkdir(f.full(cur), 0o755); err != nil {
				return false, err
			}
			f.stats.Dirs++
			f.made(cur)
			continue
		case err != nil:
			return false, err
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(f.full(cur))
			return false, fmt.Errorf("its parent %q is a symlink (to %q); a layer may not write through a symlink", cur, shortName(target))
		case !fi.IsDir():
			return false, fmt.Errorf("its parent %q is not a directory", cur)
		}
	}
	return true, nil
}

// made records that the current layer made rel, and that its ancestors hold something it made.
func (f *Flattener) made(rel string) {
	f.created[rel] = true
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		f.holds[d] = true
	}
}

func (f *Flattener) entry(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	base := path.Base(rel)
	if rel == "." {
		return nil // the root itself: it stays root-owned 0755
	}

	// Whiteouts hide what lower layers put there.
	if base == opaqueMarker {
		if ok, err := f.parents(rel, false); err != nil || !ok {
			return err // nothing below a missing directory to hide
		}
		f.stats.OpaqueDirs++
		return f.clearLower(path.Dir(rel))
	}
	if strings.HasPrefix(base, whiteoutMeta) || strings.Contains("/"+rel, "/"+whiteoutMeta) {
		return nil // other aufs bookkeeping (hard link directories): nothing to apply
	}
	if victim, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		target := path.Join(path.Dir(rel), victim)
		if victim == "" || victim == "." || victim == ".." {
			return errors.New("whiteout of an invalid name")
		}
		if ok, err := f.parents(target, false); err != nil || !ok {
			return err
		}
		f.stats.Whiteouts++
		if err := os.RemoveAll(f.full(target)); err != nil {
			return fmt.Errorf("remove %s: %w", target, err)
		}
		return nil
	}

	if _, err := f.parents(rel, true); err != nil {
		return err
	}
	full := f.full(rel)
	existing, err := os.Lstat(full)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if existing != nil && !(existing.IsDir() && hdr.Typeflag == tar.TypeDir) {
		// A new entry replaces what lower layers (or this one) had at that path.
		if err := os.RemoveAll(full); err != nil {
			return fmt.Errorf("replace: %w", err)
		}
		existing = nil
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if existing == nil {
			if err := os.Mkdir(full, 0o700); err != nil {
				return err
			}
			f.stats.Dirs++
		}
		f.dirs[rel] = dirTimes{hdr.AccessTime, hdr.ModTime}
	case tar.TypeReg, tar.TypeRegA:
		out, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		n, err := io.Copy(out, r)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		f.stats.Files++
		f.stats.Bytes += n
	case tar.TypeSymlink:
		if err := checkSymlink(rel, hdr.Linkname); err != nil {
			return err
		}
		if err := os.Symlink(hdr.Linkname, full); err != nil {
			return err
		}
		f.stats.Symlinks++
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", shortName(hdr.Linkname), err)
		}
		ok, err := f.parents(target, false)
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", target, err)
		}
		fi, err := os.Lstat(f.full(target))
		if !ok || err != nil {
			return fmt.Errorf("hard link to %q, which is not in the image (so far)", target)
		}
		if fi.IsDir() {
			return fmt.Errorf("hard link to the directory %q", target)
		}
		if err := os.Link(f.full(target), full); err != nil {
			return err
		}
		f.stats.Hardlinks++
		f.made(rel)
		return nil // a hard link shares its target's inode: no metadata of its own
	case tar.TypeChar, tar.TypeBlock:
		if rel == "dev" || strings.HasPrefix(rel, "dev/") {
			f.stats.DevicesSkipped++
			return nil
		}
		return errors.New("device node outside /dev; images may not carry devices")
	case tar.TypeFifo:
		if err := unix.Mkfifo(full, 0o600); err != nil {
			return err
		}
		f.stats.Fifos++
	default:
		return fmt.Errorf("unsupported entry type %q", string(hdr.Typeflag))
	}
	f.made(rel)
	return f.metadata(full, hdr)
}

// metadata gives an entry its owner, mode, extended attributes and times. The mode is set
// after the owner, because chown clears setuid and setgid bits.
func (f *Flattener) metadata(full string, hdr *tar.Header) error {
	if f.chown {
		if err := os.Lchown(full, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown %d:%d: %w", hdr.Uid, hdr.Gid, err)
		}
	}
	for key, value := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(key, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(full, name, []byte(value), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
				f.stats.XattrsSkipped++
				continue
			}
			return fmt.Errorf("set extended attribute %s: %w", name, err)
		}
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := os.Chmod(full, tarMode(hdr.Mode)); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		if hdr.Typeflag == tar.TypeDir {
			return nil // Finish sets directory times
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.AccessTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if hdr.AccessTime.IsZero() {
		ts[0] = ts[1]
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// tarMode converts a tar header's mode (Unix permission and setuid/setgid/sticky bits) to an
// os.FileMode.
func tarMode(m int64) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// checkSymlink refuses relative symlink targets that climb above the image root. Absolute
// targets are fine: the guest resolves them inside its own root, and nothing is ever written
// through a link here.
func checkSymlink(rel, target string) error {
	if target == "" {
		return errors.New("symlink with an empty target")
	}
	if strings.HasPrefix(target, "/") {
		return nil
	}
	depth := strings.Count(path.Dir(rel), "/") + 1
	if path.Dir(rel) == "." {
		depth = 0
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return fmt.Errorf("symlink to %q escapes the image root", shortName(target))
			}
		default:
			depth++
		}
	}
	return nil
}

// clearLower removes what lower layers left in dir (an opaque directory), at any depth,
// keeping what the current layer has already put there.
func (f *Flattener) clearLower(dir string) error {
	full := f.full(dir)
	fi, err := os.Lstat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("opaque marker in %q, which is not a directory", dir)
	}
	entries, err := os.ReadDir(full)
	if err != nil {
		return err
	}
	for _, e := range entries {
		child := path.Join(dir, e.Name())
		switch {
		case f.holds[child] && e.IsDir():
			if err := f.clearLower(child); err != nil {
				return err
			}
		case f.created[child]:
		default:
			if err := os.RemoveAll(f.full(child)); err != nil {
				return err
			}
		}
	}
	return nil
}
