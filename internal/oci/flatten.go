package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/banger-dev/banger/internal/untar"
)

// Stats counts what flattening did.
type Stats struct {
	Files, Dirs, Symlinks, Hardlinks, Fifos int64
	Whiteouts, OpaqueDirs                   int64
	Bytes                                   int64 // regular file data written (apparent sizes)
	// DevicesSkipped counts device nodes under /dev, which the guest's devtmpfs replaces.
	DevicesSkipped int64
	// XattrsSkipped counts extended attributes the staging file system refused.
	XattrsSkipped int64
}

// zstdMaxMemory bounds what a zstd layer's decoder may allocate (its window above all).
const zstdMaxMemory = 256 << 20

// Flattener applies image layers, oldest first, to a directory that becomes the image's
// root. It honours whiteouts and opaque directories and keeps ownership, modes (setuid and
// setgid included), hard links, symlinks, FIFOs, times and extended attributes.
//
// The layers go through package untar: nothing is ever written outside the root (entry names
// that are absolute or contain ".." are rejected, so is anything that would go through a
// symlink, a hard link to anything outside the tree or to a directory, and a relative symlink
// that climbs above the root), sparse files stay sparse, and the unpacked size and entry
// count are bounded. Device nodes under /dev are skipped (the guest mounts a devtmpfs there);
// elsewhere they are refused. Every error names the layer and the entry.
type Flattener struct {
	x       *untar.Extractor
	devices int64
}

// NewFlattener returns a Flattener for root, an existing, empty directory, bounded by limits
// over all the layers (its Bytes and Entries; zero is no limit).
func NewFlattener(root string, limits Limits) (*Flattener, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", abs)
	}
	f := &Flattener{}
	f.x, err = untar.New(abs, untar.Options{
		Limits:    untar.Limits{Bytes: limits.Bytes, Entries: limits.Entries},
		Symlinks:  untar.SymlinksAbsolute,
		HardLinks: true, Fifos: true, Whiteouts: true, Ownership: true,
		Filter: f.devicesUnderDev,
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Flattener) devicesUnderDev(rel string, h *tar.Header) (bool, error) {
	if h.Typeflag != tar.TypeChar && h.Typeflag != tar.TypeBlock {
		return true, nil
	}
	if rel == "dev" || strings.HasPrefix(rel, "dev/") {
		f.devices++
		return false, nil
	}
	return false, errors.New("device node outside /dev; images may not carry devices")
}

// Stats returns what has been done so far.
func (f *Flattener) Stats() Stats {
	s := f.x.Stats()
	return Stats{Files: s.Files, Dirs: s.Dirs, Symlinks: s.Symlinks, Hardlinks: s.Hardlinks, Fifos: s.Fifos,
		Whiteouts: s.Whiteouts, OpaqueDirs: s.OpaqueDirs, Bytes: s.Bytes, DevicesSkipped: f.devices, XattrsSkipped: s.XattrsSkipped}
}

// Apply applies one layer: a tar stream, gzip- or zstd-compressed or not (detected from its
// first bytes). name identifies the layer in errors (its digest).
func (f *Flattener) Apply(r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, _ := br.Peek(4)
	var src io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("layer %s: %w", name, err)
		}
		defer zr.Close()
		src = zr
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(zstdMaxMemory))
		if err != nil {
			return fmt.Errorf("layer %s: %w", name, err)
		}
		defer zr.Close()
		src = zr
	}
	if err := f.x.Extract(src); err != nil {
		var le *untar.LimitError
		if errors.As(err, &le) {
			return fmt.Errorf("layer %s: %w: the image is larger than it may be (its unpacked size is capped by the image's disk size)", name, err)
		}
		return fmt.Errorf("layer %s: %w", name, err)
	}
	return nil
}

// Finish sets the times of the directories, which the entries written into them changed, and
// releases the root.
func (f *Flattener) Finish() error {
	defer f.x.Close()
	return f.x.Finish()
}

// Close releases the root (Finish does too).
func (f *Flattener) Close() error { return f.x.Close() }
