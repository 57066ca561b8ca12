// Package disk owns the per-VM writable disks: sparse raw files holding an ext4 filesystem that
// the guest agent uses as the upper layer of the VM's overlay root. It creates them, grows them
// and reports how much host storage they really use.
//
// A disk is a plain sparse file: creating one allocates only the few MiB of metadata mkfs
// writes, and the file grows on the host as the guest writes to it.
package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"unicode"

	"github.com/banger-dev/banger/internal/ext4"
)

const (
	// BlockSize is the ext4 block size of every disk; sizes must be multiples of it.
	BlockSize = 4096
	// MinSize is the smallest disk CreateExt4 makes: below it mkfs.ext4 silently leaves out
	// the journal.
	MinSize = 16 << 20
	// maxLabel is the longest ext4 volume label, in bytes.
	maxLabel = 16
)

// mkfsTool is the formatter CreateExt4 runs; a variable so tests can make it fail.
var mkfsTool = "mkfs.ext4"

// CreateExt4 creates a sparse file of sizeBytes at path and formats it as ext4 with a journal,
// labelled label. The file must not exist yet; its directory must. The file is created 0600.
// On any failure, cancellation included, the file is removed again.
//
// Speed: formatting the file directly is the fastest correct approach measured here: a median
// of 3 ms for 1 GiB, 7 ms for 8 GiB and 10 ms for 64 GiB, most of it starting mkfs.ext4. The
// option that matters is assume_storage_prezeroed: the file was just created by truncate, so
// every block reads as zero, which is exactly what that option asserts. mkfs then writes
// neither the journal nor the inode tables (8 GiB stays 4 MiB allocated; mkfs's defaults
// allocate 68 MiB, and 530 MiB for 64 GiB) and marks every group ITABLE_ZEROED, so the guest
// kernel's lazy-init thread does no background zeroing either (plain lazy_itable_init leaves
// that to the guest). nodiscard skips punching holes in a file that has no data yet. A
// pre-formatted 64 MiB template copied sparsely and grown with resize2fs took 7 ms, 9 ms with
// the fresh UUID every disk needs, and yields a 4 MiB journal, twice the inodes and new groups
// that are not marked zeroed, so it is not used.
func CreateExt4(ctx context.Context, path string, sizeBytes int64, label string) error {
	return CreateExt4From(ctx, path, sizeBytes, label, "")
}

// CreateExt4From is CreateExt4 with the filesystem filled from the directory tree at from
// (mkfs.ext4 -d: modes, owners and times as they are there); "" makes an empty filesystem.
// A few small files cost no measurable time over an empty one.
func CreateExt4From(ctx context.Context, path string, sizeBytes int64, label, from string) (err error) {
	if err := checkSize(sizeBytes); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	if err := checkLabel(label); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	mkfs, err := ext4.LookTool(mkfsTool)
	if err != nil {
		return fmt.Errorf("disk %s: %w; install e2fsprogs (apt-get install e2fsprogs)", path, err)
	}

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("disk %s already exists; remove it first or choose another path", path)
	}
	if err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.Remove(path)
		}
	}()
	err = f.Truncate(sizeBytes) // sparse: allocates nothing
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("disk %s: size it to %d bytes: %w", path, sizeBytes, err)
	}

	args := []string{"-q", "-F", "-b", strconv.Itoa(BlockSize),
		"-E", "nodiscard,assume_storage_prezeroed=1"}
	if label != "" {
		args = append(args, "-L", label)
	}
	if from != "" {
		args = append(args, "-d", from)
	}
	if err := ext4.Run(ctx, mkfs, append(args, path)...); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	return nil
}

// Usage reports a disk's footprint: apparent is its size as the guest sees it, allocated the
// host storage it actually occupies (less for a sparse file).
func Usage(path string) (apparent, allocated int64, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("disk %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.Size(), fi.Size(), nil
	}
	return fi.Size(), st.Blocks * 512, nil // st_blocks counts 512-byte units
}

func checkSize(size int64) error {
	switch {
	case size < MinSize:
		return fmt.Errorf("size %d bytes is below the minimum of %d MiB", size, MinSize>>20)
	case size%BlockSize != 0:
		return fmt.Errorf("size %d bytes is not a multiple of %d; round it to whole MiB", size, BlockSize)
	}
	return nil
}

func checkLabel(label string) error {
	if len(label) > maxLabel {
		return fmt.Errorf("label %q is longer than %d bytes", label, maxLabel)
	}
	for _, r := range label {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) || r == ' ' {
			return fmt.Errorf("label %q may only hold printable characters without spaces", label)
		}
	}
	return nil
}
