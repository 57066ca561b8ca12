// Package untar owns the one safe way banger extracts a tar stream onto a directory: OCI image
// layers, the guest agent's workspace uploads, Debian packages and kernel module trees all
// go through it.
//
// Nothing is ever created or written outside the directory. Every path is resolved through an
// os.Root opened on it; entry names are cleaned and refused when absolute, when they hold a
// ".." component or a NUL byte, or when too long for ext4; a missing parent directory is made,
// but a parent that is a symlink (even one pointing inside the tree) or a file is refused, so
// nothing is ever written through a link; entries are created with O_EXCL|O_NOFOLLOW (and
// their *at equivalents), replacing whatever was at their name. Hard links may only point at
// a non-directory already in the tree; device nodes are never created. Sizes and counts are
// bounded by the caller's Limits, and a breach is a *LimitError naming the entry.
package untar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/sparse"
	"golang.org/x/sys/unix"
)

// Limits of ext4 and of the guest on names; a longer name is refused.
const (
	MaxNameComponent = 255  // bytes in one path component
	MaxPath          = 4095 // bytes in a whole path (PATH_MAX - 1)
)

// Whiteout markers of the OCI image layer spec (inherited from aufs).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// SymlinkRule says which symlink targets an extraction accepts. Whatever the rule, the
// extractor itself never follows a symlink it meets: the rule is about what the tree will mean
// to whoever uses it later.
type SymlinkRule int

const (
	// SymlinksInside, the zero value, accepts only relative targets that stay inside the
	// tree (checked lexically from the link's place, which is exact because no entry is ever
	// placed below a symlink).
	SymlinksInside SymlinkRule = iota
	// SymlinksAbsolute also accepts absolute targets: the tree is a root file system whose
	// users resolve them inside it (an image's /lib64 -> /usr/lib64).
	SymlinksAbsolute
	// SymlinksAny accepts every target: links are kept as data (a user's repository).
	SymlinksAny
)

// Limits bound an Extractor over all the streams it extracts. Zero means no limit.
type Limits struct {
	Bytes      int64 // total size of regular files (as the headers declare them, holes included)
	Entries    int64 // tar entries, whatever their kind (skipped ones included)
	EntryBytes int64 // size of one regular file
}

// Options say what an extraction accepts and keeps.
type Options struct {
	Limits   Limits
	Symlinks SymlinkRule
	// HardLinks accepts hard links (to a non-directory already in the tree); otherwise they
	// are refused.
	HardLinks bool
	// Fifos creates FIFO entries; otherwise they are refused. Device nodes are always refused
	// (Filter may skip them instead).
	Fifos bool
	// Whiteouts applies OCI whiteouts (".wh.<name>" removes name, ".wh..wh..opq" clears what
	// earlier streams put in its directory) instead of creating those files.
	Whiteouts bool
	// Ownership keeps what a root file system needs: owners (when running as root),
	// setuid/setgid/sticky bits, extended attributes (SCHILY.xattr PAX records) and times
	// (directory times are set by Finish). Without it, files keep their permission bits and
	// directories theirs plus u+rwx.
	Ownership bool
	// RefuseDuplicates refuses an entry whose name an earlier entry had; otherwise a later
	// entry replaces an earlier one, as tar does.
	RefuseDuplicates bool
	// Filter, when set, sees every entry with its cleaned name ("dir/file"); entries it
	// drops are read past (and still counted as entries). An error refuses the entry.
	Filter func(name string, h *tar.Header) (keep bool, err error)
}

// Stats counts what an Extractor did.
type Stats struct {
	Entries                          int64
	Files, Dirs, Symlinks, Hardlinks int64
	Fifos, Whiteouts, OpaqueDirs     int64
	Skipped                          int64 // entries Filter dropped
	XattrsSkipped                    int64 // extended attributes the file system refused
	Bytes                            int64 // sizes of the regular files written
}

// EntryError is an entry that was refused or could not be extracted.
type EntryError struct {
	Entry string // the entry's name as the archive has it
	Err   error
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %q: %v", shortName(e.Entry), e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// LimitError is an entry that would take an extraction over one of its Limits.
type LimitError struct {
	Entry string // the entry's name as the archive has it
	Limit string // "total size", "entry count" or "entry size"
	Max   int64
	Value int64 // what it would have come to
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("entry %q: %s would be %d, over the limit of %d", shortName(e.Entry), e.Limit, e.Value, e.Max)
}

// Extractor extracts tar streams onto one directory. It is not safe for concurrent use.
type Extractor struct {
	root  *os.Root
	opts  Options
	stats Stats
	chown bool        // only root can give files away
	umask os.FileMode // the process's; a mode it would mask is set explicitly
	buf   []byte

	dirs    map[string]bool // real directories (no symlink on the way) known in the tree
	cur     *os.File        // the directory files last went to
	curName string

	seen     map[string]bool // names so far, with RefuseDuplicates
	created  map[string]bool // entries the current stream made (opaque markers spare them)
	holds    map[string]bool // directories holding entries the current stream made
	dirTimes map[string][2]time.Time
}

// New returns an Extractor onto dir, an existing directory. Close releases it.
func New(dir string, opts Options) (*Extractor, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	x := &Extractor{root: root, opts: opts, chown: opts.Ownership && os.Geteuid() == 0, umask: processUmask(),
		dirs: map[string]bool{".": true}, dirTimes: map[string][2]time.Time{}}
	if opts.RefuseDuplicates {
		x.seen = map[string]bool{}
	}
	return x, nil
}

// Dir extracts one tar stream onto dir (which must exist) and returns what it did.
func Dir(r io.Reader, dir string, opts Options) (Stats, error) {
	x, err := New(dir, opts)
	if err != nil {
		return Stats{}, err
	}
	defer x.Close()
	if err := x.Extract(r); err != nil {
		return x.Stats(), err
	}
	return x.Stats(), x.Finish()
}

// Stats returns what has been done so far.
func (x *Extractor) Stats() Stats { return x.stats }

// Close releases the directory; later calls do nothing.
func (x *Extractor) Close() error {
	x.closeCur()
	if x.root == nil {
		return nil
	}
	err := x.root.Close()
	x.root = nil
	return err
}

// Extract extracts one uncompressed tar stream (an OCI layer: whiteouts apply to what earlier
// streams made). Errors about an entry are *EntryError or *LimitError values naming it.
func (x *Extractor) Extract(r io.Reader) error {
	if x.opts.Whiteouts {
		x.created, x.holds = map[string]bool{}, map[string]bool{}
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the archive: %w", err)
		}
		if err := x.entry(h, tr); err != nil {
			var le *LimitError
			if errors.As(err, &le) {
				return err
			}
			return &EntryError{Entry: h.Name, Err: err}
		}
	}
}

// Finish sets the times of directories (with Ownership), which the entries written into them
// changed.
func (x *Extractor) Finish() error {
	paths := make([]string, 0, len(x.dirTimes))
	for p := range x.dirTimes {
		paths = append(paths, p)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(paths))) // children first
	for _, p := range paths {
		if fi, err := x.root.Lstat(p); err != nil || !fi.IsDir() {
			continue // removed by a later stream
		}
		t := x.dirTimes[p]
		if err := x.root.Chtimes(p, t[0], t[1]); err != nil {
			return fmt.Errorf("set times of %s: %w", p, err)
		}
	}
	return nil
}

func shortName(s string) string {
	if len(s) > 120 {
		return fmt.Sprintf("%s… (%d bytes)", s[:100], len(s))
	}
	return s
}

// CleanName turns a tar entry name into a clean path relative to the root ("." for the root
// itself), or says why it is refused: "./" prefixes and trailing slashes are fine, and so is
// "/" for the root itself (umoci writes it); empty and absolute names, ".." components, NUL
// bytes and names too long for ext4 are not.
func CleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if strings.Trim(name, "/") == "" {
		return ".", nil
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute path; entries must be relative to the root")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("name contains a NUL byte")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", errors.New(`path contains ".."; it would escape the root`)
		}
		if len(c) > MaxNameComponent {
			return "", fmt.Errorf("a path component is %d bytes; ext4 allows %d", len(c), MaxNameComponent)
		}
	}
	rel := path.Clean(name)
	if len(rel) > MaxPath {
		return "", fmt.Errorf("path is %d bytes; the limit is %d", len(rel), MaxPath)
	}
	return rel, nil
}

// CheckSymlink says whether a symlink at rel (clean, relative) to target is acceptable under
// rule.
func CheckSymlink(rel, target string, rule SymlinkRule) error {
	if target == "" {
		return errors.New("symlink with an empty target")
	}
	if strings.IndexByte(target, 0) >= 0 {
		return errors.New("symlink target contains a NUL byte")
	}
	if rule == SymlinksAny {
		return nil
	}
	if strings.HasPrefix(target, "/") {
		if rule == SymlinksAbsolute {
			return nil
		}
		return fmt.Errorf("symlink to the absolute path %q would point outside the root", shortName(target))
	}
	depth := strings.Count(rel, "/") // components of the link's directory
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return fmt.Errorf("symlink to %q escapes the root", shortName(target))
			}
		default:
			depth++
		}
	}
	return nil
}

func (x *Extractor) entry(h *tar.Header, r io.Reader) error {
	x.stats.Entries++
	if max := x.opts.Limits.Entries; max > 0 && x.stats.Entries > max {
		return &LimitError{Entry: h.Name, Limit: "entry count", Max: max, Value: x.stats.Entries}
	}
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil // PAX defaults for later entries; archive/tar applies none, nothing to create
	}
	rel, err := CleanName(h.Name)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil // the root itself stays as the caller made it
	}
	if x.opts.Filter != nil {
		keep, err := x.opts.Filter(rel, h)
		if err != nil {
			return err
		}
		if !keep {
			x.stats.Skipped++
			return nil
		}
	}
	if x.seen != nil {
		if x.seen[rel] {
			return errors.New("duplicate entry: an earlier entry has the same name")
		}
		x.seen[rel] = true
	}
	if x.opts.Whiteouts {
		if done, err := x.whiteout(rel); done || err != nil {
			return err
		}
	}
	isReg := h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeGNUSparse
	if isReg {
		if h.Size < 0 {
			return errors.New("negative size")
		}
		if max := x.opts.Limits.EntryBytes; max > 0 && h.Size > max {
			return &LimitError{Entry: h.Name, Limit: "entry size", Max: max, Value: h.Size}
		}
		if max := x.opts.Limits.Bytes; max > 0 && x.stats.Bytes+h.Size > max {
			return &LimitError{Entry: h.Name, Limit: "total size", Max: max, Value: x.stats.Bytes + h.Size}
		}
	}
	switch h.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		return errors.New("device nodes are not accepted")
	case tar.TypeFifo:
		if !x.opts.Fifos {
			return errors.New("FIFOs are not accepted")
		}
	case tar.TypeLink:
		if !x.opts.HardLinks {
			return errors.New("hard links are not accepted")
		}
		return x.hardlink(rel, h.Linkname)
	case tar.TypeSymlink:
		if err := CheckSymlink(rel, h.Linkname, x.opts.Symlinks); err != nil {
			return err
		}
	case tar.TypeDir:
	default:
		if !isReg {
			return fmt.Errorf("unsupported entry type %q", string(h.Typeflag))
		}
	}

	dir, base := path.Dir(rel), path.Base(rel)
	d, err := x.openDir(dir)
	if err != nil {
		return err
	}
	fd := int(d.Fd())
	mode := uint32(h.Mode) & 0o777
	special := uint32(h.Mode) & 0o7000
	if !x.opts.Ownership {
		special = 0
	}
	switch {
	case isReg:
		f, err := x.create(rel, fd, base, false, func() (*os.File, error) {
			nfd, err := unix.Openat(fd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
			if err != nil {
				return nil, err
			}
			return os.NewFile(uintptr(nfd), rel), nil
		})
		if err != nil {
			return err
		}
		err = x.writeSparse(f, r, h.Size)
		if err == nil {
			err = x.fileMetadata(f, fd, base, h, mode, special)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		x.stats.Files++
		x.stats.Bytes += h.Size
	case h.Typeflag == tar.TypeDir:
		existed := false
		_, err := x.create(rel, fd, base, true, func() (*os.File, error) {
			err := unix.Mkdirat(fd, base, 0o700)
			if errors.Is(err, unix.EEXIST) {
				var st unix.Stat_t
				if unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
					existed = true
					return nil, nil
				}
			}
			return nil, err
		})
		if err != nil {
			return err
		}
		if !existed {
			x.stats.Dirs++
		}
		x.dirs[rel] = true
		if !x.opts.Ownership {
			mode |= 0o700
		}
		if err := x.metadata(fd, base, h, mode|special, false); err != nil {
			return err
		}
		if x.opts.Ownership {
			x.dirTimes[rel] = [2]time.Time{h.AccessTime, h.ModTime}
		}
	case h.Typeflag == tar.TypeSymlink:
		if _, err := x.create(rel, fd, base, false, func() (*os.File, error) {
			return nil, unix.Symlinkat(h.Linkname, fd, base)
		}); err != nil {
			return err
		}
		x.stats.Symlinks++
		if x.opts.Ownership {
			if err := x.metadata(fd, base, h, 0, true); err != nil {
				return err
			}
		}
	case h.Typeflag == tar.TypeFifo:
		if _, err := x.create(rel, fd, base, false, func() (*os.File, error) {
			return nil, unix.Mknodat(fd, base, unix.S_IFIFO|0o600, 0)
		}); err != nil {
			return err
		}
		x.stats.Fifos++
		if err := x.metadata(fd, base, h, mode|special, false); err != nil {
			return err
		}
	}
	x.made(rel)
	return nil
}

// create runs mk, which makes base in the directory fd; when something is already at that
// name, it is removed (a directory only when the new entry is not one) and mk runs again.
func (x *Extractor) create(rel string, fd int, base string, isDir bool, mk func() (*os.File, error)) (*os.File, error) {
	f, err := mk()
	if !errors.Is(err, unix.EEXIST) {
		return f, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if isDir {
			return mk()
		}
		if err := x.root.RemoveAll(rel); err != nil {
			return nil, fmt.Errorf("replace the directory: %w", err)
		}
		x.forget(rel)
	} else if err := unix.Unlinkat(fd, base, 0); err != nil {
		return nil, fmt.Errorf("replace: %w", err)
	}
	return mk()
}

// fileMetadata gives a regular file its owner, mode and extended attributes through its open
// descriptor, and its times. The mode is set after the owner: chown clears setuid and setgid.
func (x *Extractor) fileMetadata(f *os.File, dirfd int, base string, h *tar.Header, mode, special uint32) error {
	if x.chown {
		if err := f.Chown(h.Uid, h.Gid); err != nil {
			return fmt.Errorf("chown %d:%d: %w", h.Uid, h.Gid, err)
		}
	}
	if special != 0 || os.FileMode(mode)&x.umask != 0 {
		if err := f.Chmod(FileMode(mode | special)); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if !x.opts.Ownership {
		return nil
	}
	if err := x.xattrs(dirfd, base, h); err != nil {
		return err
	}
	return setTimes(dirfd, base, h)
}

// metadata gives a directory, FIFO or symlink its owner, mode, extended attributes and (but for
// directories, which Finish does) times.
func (x *Extractor) metadata(dirfd int, base string, h *tar.Header, mode uint32, symlink bool) error {
	if x.chown {
		if err := unix.Fchownat(dirfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %d:%d: %w", h.Uid, h.Gid, err)
		}
	}
	if !symlink {
		// The entry was just made (or is a directory) at base, never a symlink, so following is moot.
		if err := unix.Fchmodat(dirfd, base, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if !x.opts.Ownership {
		return nil
	}
	if err := x.xattrs(dirfd, base, h); err != nil {
		return err
	}
	if h.Typeflag == tar.TypeDir {
		return nil
	}
	return setTimes(dirfd, base, h)
}

func (x *Extractor) xattrs(dirfd int, base string, h *tar.Header) error {
	for key, value := range h.PAXRecords {
		name, ok := strings.CutPrefix(key, "SCHILY.xattr.")
		if !ok {
			continue
		}
		// The directory's descriptor through /proc, so the name is resolved from it, and
		// lsetxattr, so base itself is never followed.
		p := fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, base)
		if err := unix.Lsetxattr(p, name, []byte(value), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
				x.stats.XattrsSkipped++
				continue
			}
			return fmt.Errorf("set extended attribute %s: %w", name, err)
		}
	}
	return nil
}

func setTimes(dirfd int, base string, h *tar.Header) error {
	ts := []unix.Timespec{unix.NsecToTimespec(h.AccessTime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
	if h.AccessTime.IsZero() {
		ts[0] = ts[1]
	}
	if err := unix.UtimesNanoAt(dirfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// FileMode converts the permission and setuid, setgid and sticky bits of a Unix mode (as tar
// headers and chmod(2) write them, e.g. 0o4755) to an fs.FileMode; other bits are dropped.
func FileMode(m uint32) os.FileMode {
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

// writeSparse copies size bytes from r to f, seeking over every all-zero block instead of
// writing it: a sparse entry (or a run of zeros) becomes a hole, not allocated blocks.
func (x *Extractor) writeSparse(f *os.File, r io.Reader, size int64) error {
	if x.buf == nil {
		x.buf = make([]byte, 256<<10)
	}
	var off, end int64
	for off < size {
		n, err := io.ReadFull(r, x.buf[:min(int64(len(x.buf)), size-off)])
		e, werr := sparse.WriteAt(f, x.buf[:n], off)
		if werr != nil {
			return fmt.Errorf("write: %w", werr)
		}
		end = max(end, e)
		off += int64(n)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("the archive ends inside the entry: %w", io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("read: %w", err)
		}
	}
	if end < size {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}

// hardlink links rel to target, a non-directory already in the tree reached through real
// directories only.
func (x *Extractor) hardlink(rel, linkname string) error {
	target, err := CleanName(linkname)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", shortName(linkname), err)
	}
	ok, err := x.lookDir(path.Dir(target))
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", target, err)
	}
	fi, serr := x.root.Lstat(target)
	if !ok || serr != nil {
		return fmt.Errorf("hard link to %q, which is not in the tree (so far)", target)
	}
	if fi.IsDir() {
		return fmt.Errorf("hard link to the directory %q", target)
	}
	if target == rel {
		return nil // a link to itself: it is there already
	}
	d, err := x.openDir(path.Dir(rel))
	if err != nil {
		return err
	}
	fd, base := int(d.Fd()), path.Base(rel)
	if _, err := x.create(rel, fd, base, false, func() (*os.File, error) {
		return nil, x.root.Link(target, rel)
	}); err != nil {
		return err
	}
	x.stats.Hardlinks++
	x.made(rel)
	return nil
}

// openDir returns the directory dir (clean, relative), made with its missing parents if
// needed, as an open descriptor valid until the next call. A tar lists a directory's files
// together, so most files need no directory work at all.
func (x *Extractor) openDir(dir string) (*os.File, error) {
	if x.cur != nil && x.curName == dir {
		return x.cur, nil
	}
	if err := x.mkdirs(dir); err != nil {
		return nil, err
	}
	d, err := x.root.Open(dir)
	if err != nil {
		return nil, err
	}
	x.closeCur()
	x.cur, x.curName = d, dir
	return d, nil
}

func (x *Extractor) closeCur() {
	if x.cur != nil {
		x.cur.Close()
	}
	x.cur, x.curName = nil, ""
}

// mkdirs makes sure dir and its parents are real directories, making the missing ones
// (0755, owned by the extracting user, as container runtimes do). A symlink or a file on the
// way is an error: nothing is ever written through a link.
func (x *Extractor) mkdirs(dir string) error {
	if x.dirs[dir] {
		return nil
	}
	if err := x.mkdirs(path.Dir(dir)); err != nil {
		return err
	}
	fi, err := x.root.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := x.root.Mkdir(dir, 0o755); err != nil {
			return err
		}
		x.stats.Dirs++
		x.made(dir)
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		target, _ := x.root.Readlink(dir)
		return fmt.Errorf("its parent %q is a symlink (to %q); nothing is written through a symlink", dir, shortName(target))
	case !fi.IsDir():
		return fmt.Errorf("its parent %q is not a directory", dir)
	}
	x.dirs[dir] = true
	return nil
}

// lookDir is mkdirs without making anything: false when dir (or a parent) is missing.
func (x *Extractor) lookDir(dir string) (bool, error) {
	if x.dirs[dir] {
		return true, nil
	}
	if ok, err := x.lookDir(path.Dir(dir)); !ok || err != nil {
		return ok, err
	}
	fi, err := x.root.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case fi.Mode()&fs.ModeSymlink != 0:
		target, _ := x.root.Readlink(dir)
		return false, fmt.Errorf("its parent %q is a symlink (to %q); nothing is written through a symlink", dir, shortName(target))
	case !fi.IsDir():
		return false, fmt.Errorf("its parent %q is not a directory", dir)
	}
	x.dirs[dir] = true
	return true, nil
}

// forget drops what the Extractor knows about name and everything under it (removed).
func (x *Extractor) forget(name string) {
	under := func(d string) bool { return d == name || strings.HasPrefix(d, name+"/") }
	if x.cur != nil && under(x.curName) {
		x.closeCur()
	}
	for d := range x.dirs {
		if under(d) {
			delete(x.dirs, d)
		}
	}
}

// made records, for whiteouts, that the current stream made rel.
func (x *Extractor) made(rel string) {
	if x.created == nil {
		return
	}
	x.created[rel] = true
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		x.holds[d] = true
	}
}

// whiteout applies rel if it is a whiteout marker (done true).
func (x *Extractor) whiteout(rel string) (done bool, err error) {
	base := path.Base(rel)
	if base == opaqueMarker {
		if ok, err := x.lookDir(path.Dir(rel)); err != nil || !ok {
			return true, err // nothing below a missing directory to hide
		}
		x.stats.OpaqueDirs++
		return true, x.clearLower(path.Dir(rel))
	}
	if strings.HasPrefix(base, whiteoutMeta) || strings.Contains("/"+rel, "/"+whiteoutMeta) {
		return true, nil // other aufs bookkeeping (hard link directories): nothing to apply
	}
	victim, ok := strings.CutPrefix(base, whiteoutPrefix)
	if !ok {
		return false, nil
	}
	if victim == "" || victim == "." || victim == ".." {
		return true, errors.New("whiteout of an invalid name")
	}
	target := path.Join(path.Dir(rel), victim)
	if ok, err := x.lookDir(path.Dir(target)); err != nil || !ok {
		return true, err
	}
	x.stats.Whiteouts++
	if err := x.root.RemoveAll(target); err != nil {
		return true, fmt.Errorf("remove %s: %w", target, err)
	}
	x.forget(target)
	return true, nil
}

// clearLower removes what earlier streams left in dir (an opaque directory), at any depth,
// keeping what the current stream has already put there.
func (x *Extractor) clearLower(dir string) error {
	d, err := x.root.Open(dir)
	if err != nil {
		return err
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, e := range entries {
		child := path.Join(dir, e.Name())
		switch {
		case x.holds[child] && e.IsDir():
			if err := x.clearLower(child); err != nil {
				return err
			}
		case x.created[child]:
		default:
			if err := x.root.RemoveAll(child); err != nil {
				return err
			}
			x.forget(child)
		}
	}
	return nil
}

// processUmask reads the process's umask from /proc/self/status (Linux 4.7+) without changing
// it under other goroutines; when unknown, every file gets its mode set explicitly.
func processUmask() os.FileMode {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				var m uint32
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%o", &m); err == nil {
					return os.FileMode(m)
				}
			}
		}
	}
	return 0o777
}
