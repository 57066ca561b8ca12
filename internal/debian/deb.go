package debian

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/banger-dev/banger/internal/untar"
)

// Limits of a package's data: a kernel image package unpacks to a few hundred MiB in a few
// thousand files.
var debLimits = untar.Limits{Bytes: 8 << 30, Entries: 500_000, EntryBytes: 2 << 30}

// zstdMaxWindow bounds the window a data.tar.zst may declare, which the decoder allocates
// up front: dpkg-deb writes at most 8 MiB (level 19); a frame claiming more is refused.
const zstdMaxWindow = 32 << 20

// ExtractDeb extracts into dstDir (created if missing) the entries of the .deb's data.tar.{xz,
// zst,gz} that keep accepts. keep sees archive paths cleaned and relative ("boot/vmlinuz-…",
// "lib/modules/6.1.0-50-cloud-amd64/kernel"); a nil keep accepts everything. Regular files,
// directories, symlinks and hard links are extracted; device nodes and FIFOs are skipped.
//
// Extraction goes through package untar: the archive is refused, naming the entry, if any
// entry has an absolute path or a ".." component, and a kept entry is refused if it is a
// symlink pointing outside dstDir (absolute, or climbing above it), a hard link to an entry not
// extracted, or would be placed below a symlink, or if the data is larger than debLimits.
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
	x, err := untar.New(dstDir, untar.Options{Limits: debLimits, HardLinks: true,
		Filter: func(rel string, h *tar.Header) (bool, error) {
			switch h.Typeflag {
			case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
			default:
				return false, nil // device nodes, FIFOs, metadata entries: not needed from a package
			}
			return keep == nil || keep(rel), nil
		}})
	if err != nil {
		return fmt.Errorf("open extraction directory: %w", err)
	}
	defer x.Close()
	if err := x.Extract(r); err != nil {
		var ee *untar.EntryError
		var le *untar.LimitError
		if errors.As(err, &ee) || errors.As(err, &le) {
			return fmt.Errorf("extract %s: %w", debPath, err)
		}
		return fmt.Errorf("read %s: %s: %w (truncated or corrupt package?)", debPath, dataName, err)
	}
	// Read the compressed stream to its end so its trailer and checksum are verified.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read %s: %s: %w (truncated or corrupt package?)", debPath, dataName, err)
	}
	return nil
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
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderMaxMemory(2*zstdMaxWindow))
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
