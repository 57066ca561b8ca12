package guestagent

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func writeShipped(t *testing.T, path string, entries map[string]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw, _ := zstd.NewWriter(f)
	tw := tar.NewWriter(zw)
	for name, typ := range entries {
		h := &tar.Header{Name: name, Typeflag: typ, Mode: 0o644}
		if typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if typ == tar.TypeSymlink {
			h.Linkname = "target"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
}

// What the old stream shipped and the new one does not is removed: files, links and emptied
// directories; what the guest made itself, and directories still in use, stay.
func TestPruneShippedRemovesWhatNoLongerShips(t *testing.T) {
	dir, tmp := t.TempDir(), t.TempDir()
	for _, f := range []string{"keep.txt", "gone.txt", "sub/gone.txt", "olddir/a", "olddir/guest-made", "built.o"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("target", filepath.Join(dir, "gone-link")); err != nil {
		t.Fatal(err)
	}
	writeShipped(t, filepath.Join(tmp, "old"), map[string]byte{
		"keep.txt": tar.TypeReg, "gone.txt": tar.TypeReg, "sub/": tar.TypeDir, "sub/gone.txt": tar.TypeReg,
		"olddir/": tar.TypeDir, "olddir/a": tar.TypeReg, "gone-link": tar.TypeSymlink, "../outside": tar.TypeReg,
	})
	writeShipped(t, filepath.Join(tmp, "new"), map[string]byte{"keep.txt": tar.TypeReg, "new.txt": tar.TypeReg})
	n, err := PruneShipped(filepath.Join(tmp, "old"), filepath.Join(tmp, "new"), dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"gone.txt", "sub/gone.txt", "sub", "olddir/a", "gone-link"} {
		if _, err := os.Lstat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Errorf("%s is still there: %v", gone, err)
		}
	}
	for _, kept := range []string{"keep.txt", "olddir/guest-made", "built.o"} {
		if _, err := os.Lstat(filepath.Join(dir, kept)); err != nil {
			t.Errorf("%s was removed: %v", kept, err)
		}
	}
	if n != 5 {
		t.Errorf("removed %d, want 5", n)
	}
}
