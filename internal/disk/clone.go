package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/sparse"
)

// Clone makes dst (which must not exist) a copy of the disk image src that a VM may write
// without touching src: a reflink (FICLONE: the two share blocks until either is written)
// where the file system has them (btrfs, xfs), otherwise a copy that keeps src's holes holes
// (sparse.Copy). It reports whether it reflinked. On failure, and when ctx is done, dst is
// removed.
func Clone(ctx context.Context, src, dst string) (reflinked bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("clone disk %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("clone disk %s: %s already exists; remove it first or choose another path", src, dst)
	}
	if err != nil {
		return false, fmt.Errorf("clone disk %s: %w", src, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("clone disk %s: %w", src, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err == nil {
		return true, nil
	}
	// No reflinks here (ext4, tmpfs, two file systems): copy what is not a hole.
	if err := sparse.Copy(ctx, out, in); err != nil {
		return false, fmt.Errorf("clone disk: %w", err)
	}
	return false, nil
}
