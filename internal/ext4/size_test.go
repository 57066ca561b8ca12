package ext4

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeTestFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func TestImageGeometry(t *testing.T) {
	tests := []struct {
		name       string
		usage      Usage
		wantSize   int64
		wantInodes int64
	}{
		{name: "empty tree still gets headroom", usage: Usage{}, wantSize: 65 * mib, wantInodes: 1024},
		// 300 MiB in 13000 inodes: inodes 13000+1300+1024 = 15324, tables 3.74 MiB,
		// (303.74 MiB * 1.1) + 64 MiB = 398.1 -> 399 MiB.
		{name: "debian minbase-sized tree", usage: Usage{Bytes: 300 * mib, Inodes: 13000}, wantSize: 399 * mib, wantInodes: 15324},
		{name: "many small files need inode tables", usage: Usage{Bytes: 400 * mib, Inodes: 100000}, wantSize: 534 * mib, wantInodes: 111024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size, inodes := Geometry(tt.usage)
			if size != tt.wantSize || inodes != tt.wantInodes {
				t.Errorf("Geometry(%+v) = %d MiB (%d bytes), %d inodes; want %d MiB, %d inodes",
					tt.usage, size/mib, size, inodes, tt.wantSize/mib, tt.wantInodes)
			}
			if size%mib != 0 {
				t.Errorf("size %d is not a whole number of MiB", size)
			}
			if min := tt.usage.Bytes + tt.usage.Bytes/10 + inodes*inodeSize; size < min {
				t.Errorf("size %d leaves less than 10%% headroom over %d", size, min)
			}
		})
	}
}

func TestMeasureTree(t *testing.T) {
	root := t.TempDir()
	writeTestFile(t, filepath.Join(root, "one-byte"), "x", 0o644)
	writeTestFile(t, filepath.Join(root, "d/two-blocks"), strings.Repeat("y", BlockSize+1), 0o644)
	writeTestFile(t, filepath.Join(root, "empty"), "", 0o644)
	if err := os.Link(filepath.Join(root, "one-byte"), filepath.Join(root, "d/hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("short", filepath.Join(root, "fast-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(strings.Repeat("long/", 20), filepath.Join(root, "slow-link")); err != nil {
		t.Fatal(err)
	}
	u, err := Measure(root)
	if err != nil {
		t.Fatal(err)
	}
	// inodes: root, d, one-byte (+ its hard link, counted once), two-blocks, empty, 2 links
	if u.Inodes != 7 {
		t.Errorf("inodes = %d, want 7", u.Inodes)
	}
	dirBytes := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return roundUp(fi.Size(), BlockSize)
	}
	want := dirBytes(root) + dirBytes(filepath.Join(root, "d")) + BlockSize + 2*BlockSize + BlockSize
	if u.Bytes != want {
		t.Errorf("bytes = %d, want %d (data rounded to blocks, long symlink one block)", u.Bytes, want)
	}
}

func TestRoundUp(t *testing.T) {
	for _, tt := range []struct{ n, unit, want int64 }{{0, 4096, 0}, {-5, 4096, 0}, {1, 4096, 4096}, {4096, 4096, 4096}, {4097, 4096, 8192}} {
		if got := roundUp(tt.n, tt.unit); got != tt.want {
			t.Errorf("roundUp(%d, %d) = %d, want %d", tt.n, tt.unit, got, tt.want)
		}
	}
}
