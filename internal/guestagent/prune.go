package guestagent

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

	"github.com/klauspost/compress/zstd"
)

// maxShippedEntries bounds the names read from one shipped stream.
const maxShippedEntries = 1 << 20

// PruneShipped removes from dir what the zstd tar stream in oldFile shipped there and the
// one in newFile no longer ships: after `vm exec --sync`, a file deleted on the host is
// deleted in the guest too. Only names of the old stream are touched, through a root opened
// on dir (nothing outside it, no symlink followed); a directory goes only when it is empty.
// It returns how many entries it removed.
func PruneShipped(oldFile, newFile, dir string) (int, error) {
	old, err := shippedNames(oldFile)
	if err != nil {
		return 0, err
	}
	keep, err := shippedNames(newFile)
	if err != nil {
		return 0, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	var gone []string
	for name := range old {
		if _, ok := keep[name]; !ok {
			gone = append(gone, name)
		}
	}
	// Deepest first, so that a directory is empty by the time its turn comes.
	sort.Slice(gone, func(i, j int) bool {
		if di, dj := strings.Count(gone[i], "/"), strings.Count(gone[j], "/"); di != dj {
			return di > dj
		}
		return gone[i] > gone[j]
	})
	removed := 0
	for _, name := range gone {
		err := root.Remove(name)
		switch {
		case err == nil:
			removed++
		case errors.Is(err, fs.ErrNotExist):
		case old[name]: // a directory the guest still has files in: it stays
		default:
			return removed, fmt.Errorf("remove %s: %w", name, err)
		}
	}
	return removed, nil
}

// shippedNames reads the entry names of a zstd tar stream, cleaned as extraction cleans them,
// each mapped to whether it is a directory.
func shippedNames(file string) (map[string]bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		if len(names) >= maxShippedEntries {
			return nil, fmt.Errorf("read %s: more than %d entries", file, maxShippedEntries)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			continue // never extracted, so never pruned
		}
		names[name] = h.Typeflag == tar.TypeDir
	}
}
