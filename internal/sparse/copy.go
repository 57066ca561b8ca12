package sparse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// copyChunk is how much Copy copies between looks at its context.
const copyChunk = 64 << 20

// Copy copies src's contents into dst (a new, empty file) extent by extent: the holes of src
// (SEEK_HOLE) stay holes in dst, data is copied in the kernel where it can be
// (copy_file_range) and through memory where not. dst ends as long as src. It stops, with
// ctx's error, within one chunk of copying once ctx is done; dst is then partly written and
// the caller removes it.
func Copy(ctx context.Context, dst, src *os.File) error {
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("copy %s: %w", src.Name(), err)
	}
	size := fi.Size()
	fd := int(src.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return fmt.Errorf("copy %s: find its data: %w", src.Name(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("copy %s: find its holes: %w", src.Name(), err)
		}
		for off = data; off < hole; {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("copy %s to %s: %w", src.Name(), dst.Name(), err)
			}
			n, err := copyRange(dst, src, off, min(copyChunk, hole-off))
			if err != nil {
				return fmt.Errorf("copy %s to %s: %w", src.Name(), dst.Name(), err)
			}
			off += n
		}
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src.Name(), dst.Name(), err)
	}
	return nil
}

// copyRange copies up to n bytes at off from src to the same offset of dst and returns how
// many it copied (at least one unless it fails).
func copyRange(dst, src *os.File, off, n int64) (int64, error) {
	roff, woff := off, off
	c, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(n), 0)
	if err == nil && c > 0 {
		return int64(c), nil
	}
	if err != nil && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EINVAL) &&
		!errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return 0, err
	}
	// No copy_file_range between these files (or it copied nothing): through memory.
	w, err := io.Copy(io.NewOffsetWriter(dst, off), io.NewSectionReader(src, off, n))
	if err == nil && w == 0 {
		err = io.ErrUnexpectedEOF // the file shrank under us
	}
	return w, err
}
