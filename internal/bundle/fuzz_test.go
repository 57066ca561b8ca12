package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzRead feeds arbitrary bytes to the bundle reader. Whatever it accepts must have put
// exactly the manifest's members into the directory, and nothing may land outside it.
func FuzzRead(f *testing.F) {
	good := Manifest{Format: Format, Kind: KindImage, Name: "x", Arch: "amd64", Members: []Member{
		{Name: "rootfs.ext4", Size: 5, SHA256: sum([]byte("12345"))},
		{Name: "image.json", Size: 2, SHA256: sum([]byte("{}"))},
	}}
	f.Add(craft(f, good, [2]string{"rootfs.ext4", "12345"}, [2]string{"image.json", "{}"}))
	f.Add(craft(f, good, [2]string{"rootfs.ext4", "12346"}, [2]string{"image.json", "{}"}))
	f.Add(craft(f, good, [2]string{"rootfs.ext4", "12345"}))
	f.Add(craft(f, map[string]any{"format": 1}))
	f.Add(hugeWindowFrame())
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	// Read fsyncs every member; on tmpfs that costs nothing, so the fuzzer runs at speed.
	base := f.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "banger-fuzz-bundle-"); err == nil {
		base = shm
		f.Cleanup(func() { os.RemoveAll(shm) })
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent, err := os.MkdirTemp(base, "run-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(parent)
		dir := filepath.Join(parent, "dst")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		m, err := Read(context.Background(), bytes.NewReader(data), dir, nil, nil)
		if entries, _ := os.ReadDir(parent); len(entries) != 1 {
			t.Fatalf("Read wrote next to its directory: %v", entries)
		}
		if err != nil {
			return
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != len(m.Members) {
			t.Fatalf("accepted bundle left %d files for %d members", len(entries), len(m.Members))
		}
		for _, mb := range m.Members {
			fi, err := os.Stat(filepath.Join(dir, mb.Name))
			if err != nil || fi.Size() != mb.Size {
				t.Fatalf("member %s: %v, %v; want %d bytes", mb.Name, fi, err, mb.Size)
			}
		}
	})
}
