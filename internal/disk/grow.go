package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/banger-dev/banger/internal/ext4"
)

// Grow enlarges the disk at path to newSize bytes and its ext4 filesystem with it. It refuses
// to shrink, does nothing when the size is unchanged and refuses a disk that QEMU has open (the
// VM must be stopped). The filesystem is checked (e2fsck -f -p) before it is resized, as
// resize2fs requires after a VM used it.
func Grow(ctx context.Context, path string, newSize int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("disk %s is not a regular file", path)
	}
	cur := fi.Size()
	switch {
	case newSize < cur:
		return fmt.Errorf("disk %s: cannot shrink from %s to %s; disks only grow", path, size(cur), size(newSize))
	case newSize == cur:
		return nil
	}
	if err := checkSize(newSize); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	if err := checkNotInUse(path); err != nil {
		return err
	}
	e2fsck, err := ext4.LookTool("e2fsck")
	if err != nil {
		return fmt.Errorf("disk %s: %w; install e2fsprogs", path, err)
	}
	resize2fs, err := ext4.LookTool("resize2fs")
	if err != nil {
		return fmt.Errorf("disk %s: %w; install e2fsprogs", path, err)
	}

	// e2fsck -p exits 1 when it fixed something, which is fine; 2 and above are not.
	if err := ext4.Run(ctx, e2fsck, "-f", "-p", path); err != nil {
		var te *ext4.ToolError
		if !errors.As(err, &te) || te.Code != 1 {
			return fmt.Errorf("disk %s: check before growing: %w; repair it with e2fsck -f %s", path, err, path)
		}
	}
	if err := os.Truncate(path, newSize); err != nil {
		return fmt.Errorf("disk %s: extend to %s: %w", path, size(newSize), err)
	}
	if err := ext4.Run(ctx, resize2fs, path, strconv.FormatInt(newSize/1024, 10)+"K"); err != nil {
		// The file is larger now but the filesystem may still have its old size; a later Grow
		// to the same size retries the resize.
		return fmt.Errorf("disk %s: resize filesystem to %s: %w", path, size(newSize), err)
	}
	return nil
}

// Offsets QEMU's file locking uses (block/file-posix.c): one byte per permission at 100 and
// one per shared permission at 200. A running QEMU holds OFD locks there on every disk image it
// has open.
const (
	qemuLockStart = 100
	qemuLockLen   = 200
	fOFDGetlk     = 36 // F_OFD_GETLK
)

// checkNotInUse fails when another process holds a QEMU-style lock on the file.
func checkNotInUse(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: qemuLockStart, Len: qemuLockLen}
	if err := syscall.FcntlFlock(f.Fd(), fOFDGetlk, &lk); err != nil {
		return nil // no OFD locks on this filesystem: nothing to detect
	}
	if lk.Type != syscall.F_UNLCK {
		return fmt.Errorf("disk %s is in use (locked by a running VM); stop the VM first", path)
	}
	return nil
}

// size formats a byte count for people.
func size(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
