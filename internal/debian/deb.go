package debian

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ExtractDeb extracts into dstDir (created if missing) the entries of the .deb's data.tar.{xz,
// zst,gz} that keep accepts. keep sees archive paths cleaned and relative ("boot/vmlinuz-…",
// "lib/modules/6.1.0-50-cloud-amd64/kernel"); a nil keep accepts everything. Regular files,
// directories, symlinks and hard links are extracted; device nodes and FIFOs are skipped.
//
// The archive is refused, naming the entry, if any entry has an absolute path or a ".."
// component, and an extracted entry is refused if it is a symlink pointing outside dstDir
// (absolute, or climbing above it), a hard link to an entry not extracted, or would be placed
// below a symlink. Writes go through an os.Root so nothing lands outside dstDir regardless.
func ExtractDeb(debPath, dstDir string, keep func(path string) bool) error {
	f, err := os.Open(debPath)
	if err != nil {
		return fmt.Errorf("open package: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat package: %w", err)
	}
	data, dataName, err := debData(f, fi.Size())
	if err != nil {
		return fmt.Errorf("read %s: %w", debPath, err)
	}
	r, closeDec, err := decompressor(dataName, bufio.NewReaderSize(data, 1<<20))
	if err != nil {
		return fmt.Errorf("read %s: %s: %w", debPath, dataName, err)
	}
	defer closeDec()

	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return fmt.Errorf("create extraction directory: %w", err)
	}
	root, err := os.OpenRoot(dstDir)
	if err != nil {
		return fmt.Errorf("open extraction directory: %w", err)
	}
	defer root.Close()
	x := &extractor{root: root, keep: keep, dirs: map[string]bool{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			// Read the compressed stream to its end so its trailer and checksum are verified.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return fmt.Errorf("read %s: %s: %w (truncated or corrupt package?)", debPath, dataName, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %s: %w (truncated or corrupt package?)", debPath, dataName, err)
		}
		if err := x.extract(hdr, tr); err != nil {
			return fmt.Errorf("extract %s: %w", debPath, err)
		}
	}
}

// debData checks that the ar archive is a binary package and returns its data member.
func debData(f io.ReaderAt, size int64) (*io.SectionReader, string, error) {
	members, err := readAr(f, size)
	if err != nil {
		return nil, "", err
	}
	if len(members) == 0 || members[0].Name != "debian-binary" {
		return nil, "", errors.New("not a Debian binary package (first ar member is not debian-binary)")
	}
	version := make([]byte, min(members[0].Size, 16))
	if _, err := f.ReadAt(version, members[0].Offset); err != nil || !strings.HasPrefix(string(version), "2.") {
		return nil, "", fmt.Errorf("unsupported Debian package format %q (want 2.x)", strings.TrimSpace(string(version)))
	}
	for _, m := range members[1:] {
		if strings.HasPrefix(m.Name, "data.tar") {
			return io.NewSectionReader(f, m.Offset, m.Size), m.Name, nil
		}
	}
	return nil, "", errors.New("package has no data.tar member")
}

// decompressor returns a reader of the uncompressed tar stream and a function releasing it.
func decompressor(name string, r io.Reader) (io.Reader, func(), error) {
	switch name {
	case "data.tar":
		return r, func() {}, nil
	case "data.tar.xz":
		xr, err := xz.NewReader(r)
		return xr, func() {}, err
	case "data.tar.zst":
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case "data.tar.gz":
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return gr, func() { gr.Close() }, nil
	default:
		return nil, nil, fmt.Errorf("unsupported compression (want xz, zst or gz)")
	}
}

// extractor writes accepted tar entries below root.
type extractor struct {
	root *os.Root
	keep func(string) bool
	dirs map[string]bool // directories known to be real directories below root
}

func (x *extractor) extract(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanEntryPath(hdr.Name)
	if err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if rel == "" || (x.keep != nil && !x.keep(rel)) {
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.mkdir(rel, hdr.Name)
	case tar.TypeReg:
		if err := x.prepare(rel, hdr.Name); err != nil {
			return err
		}
		f, err := x.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(hdr.Mode)&0o777)
		if err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		_, err = io.CopyN(f, r, hdr.Size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("entry %q: archive ends early (truncated or corrupt package): %w", hdr.Name, err)
		}
		if err != nil {
			return fmt.Errorf("entry %q: write: %w", hdr.Name, err)
		}
		return nil
	case tar.TypeSymlink:
		if err := checkSymlink(rel, hdr.Linkname); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		if err := x.prepare(rel, hdr.Name); err != nil {
			return err
		}
		if err := x.root.Symlink(hdr.Linkname, rel); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		return nil
	case tar.TypeLink:
		target, err := cleanEntryPath(hdr.Linkname)
		if err != nil || target == "" {
			return fmt.Errorf("entry %q: hard link target %q: refusing (%v)", hdr.Name, hdr.Linkname, err)
		}
		if err := x.prepare(rel, hdr.Name); err != nil {
			return err
		}
		if err := x.root.Link(target, rel); err != nil {
			return fmt.Errorf("entry %q: hard link to %q (was the target extracted?): %w", hdr.Name, hdr.Linkname, err)
		}
		return nil
	default:
		return nil // device nodes, FIFOs, metadata entries: not needed from a package
	}
}

// cleanEntryPath turns a tar entry name into a clean relative path ("" for the archive root),
// refusing absolute paths and ".." components.
func cleanEntryPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute path in archive; refusing to extract")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", errors.New(`".." in path; refusing to extract outside the destination`)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// checkSymlink refuses symlink targets that point outside the extraction root. Because no
// entry may be placed below a symlink (see prepare), the link's location is its real location
// and a lexical check of the target is exact.
func checkSymlink(rel, target string) error {
	if target == "" {
		return errors.New("symlink with empty target")
	}
	if strings.HasPrefix(target, "/") {
		return fmt.Errorf("symlink to absolute path %q would point outside the destination; refusing", target)
	}
	resolved := path.Join(path.Dir(rel), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("symlink to %q escapes the destination; refusing", target)
	}
	return nil
}

func (x *extractor) mkdir(rel, entry string) error {
	if err := x.parents(rel, entry); err != nil {
		return err
	}
	return x.ensureDir(rel, entry)
}

// prepare makes rel's parent directories and removes whatever non-directory is at rel, so that
// a later entry replaces an earlier one as tar semantics require.
func (x *extractor) prepare(rel, entry string) error {
	if err := x.parents(rel, entry); err != nil {
		return err
	}
	fi, err := x.root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("entry %q: %w", entry, err)
	case fi.IsDir():
		return fmt.Errorf("entry %q: a directory of that name already exists", entry)
	}
	if err := x.root.Remove(rel); err != nil {
		return fmt.Errorf("entry %q: replace existing file: %w", entry, err)
	}
	return nil
}

func (x *extractor) parents(rel, entry string) error {
	dir := path.Dir(rel)
	if dir == "." || x.dirs[dir] {
		return nil
	}
	if err := x.parents(dir, entry); err != nil {
		return err
	}
	return x.ensureDir(dir, entry)
}

// ensureDir makes rel a directory, refusing if a symlink or file is in the way.
func (x *extractor) ensureDir(rel, entry string) error {
	if x.dirs[rel] {
		return nil
	}
	fi, err := x.root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := x.root.Mkdir(rel, 0o755); err != nil {
			return fmt.Errorf("entry %q: create directory %q: %w", entry, rel, err)
		}
	case err != nil:
		return fmt.Errorf("entry %q: %w", entry, err)
	case !fi.IsDir():
		return fmt.Errorf("entry %q: %q is a symlink or file, not a directory; refusing to write through it", entry, rel)
	}
	x.dirs[rel] = true
	return nil
}
