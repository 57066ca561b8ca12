package ext4

import (
	"io/fs"
	"path/filepath"
	"syscall"
)

const (
	// BlockSize is the ext4 block size of every read-only image (mkfs -b).
	BlockSize = 4096
	inodeSize = 256 // ext4 inode size of the images (mkfs -I)
	mib       = 1 << 20

	// fastSymlinkMax is the longest symlink target ext4 stores inside the inode itself.
	fastSymlinkMax = 59
)

// Usage is what a directory tree needs from a filesystem.
type Usage struct {
	Bytes  int64 // file, directory and long-symlink data, each rounded up to whole blocks
	Inodes int64 // files, directories, symlinks and special files; hard links count once
}

// Measure walks root without following symlinks or crossing into other filesystems.
func Measure(root string) (Usage, error) {
	var u Usage
	var rootDev uint64
	seen := map[uint64]bool{} // inode numbers of files with more than one link
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			u.Inodes++
			u.Bytes += roundUp(fi.Size(), BlockSize)
			return nil
		}
		if p == root {
			rootDev = st.Dev
		} else if st.Dev != rootDev {
			// A mount point inside the tree (should not exist after a bootstrap): count the
			// directory, not what is mounted on it.
			u.Inodes++
			if fi.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if st.Nlink > 1 && !fi.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		u.Inodes++
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
			u.Bytes += roundUp(fi.Size(), BlockSize)
		case fi.Mode()&fs.ModeSymlink != 0 && fi.Size() > fastSymlinkMax:
			u.Bytes += BlockSize
		}
		return nil
	})
	return u, err
}

// Geometry returns the size of the image file and the number of inodes to create for a
// tree: the tree's data plus its inode tables, plus 10% and 64 MiB of headroom (for metadata,
// extent trees, directory indexes and xattr blocks), rounded up to a MiB; inodes get 10% and
// 1024 spare.
func Geometry(u Usage) (sizeBytes, inodes int64) {
	inodes = u.Inodes + u.Inodes/10 + 1024
	data := u.Bytes + inodes*inodeSize
	sizeBytes = roundUp(data+data/10+64*mib, mib)
	return sizeBytes, inodes
}

func roundUp(n, unit int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n + unit - 1) / unit * unit
}
