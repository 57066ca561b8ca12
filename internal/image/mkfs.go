package image

import (
	"context"
	"fmt"
	"os"
	"strconv"
)

// makeRootfs creates the image file: a sparse file of size bytes formatted as ext4 and filled
// from tree by mkfs.ext4 -d, which copies ownership, modes (setuid bits included), timestamps,
// hard links and extended attributes (file capabilities) without mounting anything.
//
// The image is mounted read-only by every VM, so it has no journal (and mounts with noload),
// no blocks reserved for root, and exactly the inodes it needs plus headroom. Its features are
// mke2fs's ext4 defaults, which the Debian 6.1 guest kernel supports. The file is made read-only
// (0444) and synced.
func makeRootfs(ctx context.Context, t *tool, mkfs, tree, rootfs string, size, inodes int64) error {
	f, err := os.OpenFile(rootfs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", rootfs, err)
	}
	err = f.Truncate(size) // sparse: mkfs writes only what the tree needs
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("size %s: %w", rootfs, err)
	}
	err = t.run(ctx, mkfs,
		"-q", "-F",
		"-b", strconv.Itoa(blockSize),
		"-I", strconv.Itoa(inodeSize),
		"-N", strconv.FormatInt(inodes, 10),
		"-m", "0",
		"-L", rootfsLabel,
		"-O", "^has_journal",
		"-E", "root_owner=0:0",
		"-d", tree,
		rootfs)
	if err != nil {
		return err
	}
	f, err = os.Open(rootfs)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("make %s read-only: %w", rootfs, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", rootfs, err)
	}
	return nil
}
