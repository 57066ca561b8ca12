package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sparseFile writes a file of size bytes with data at the start and at off, zeros elsewhere.
func sparseFile(t *testing.T, p string, size, off int64) []byte {
	t.Helper()
	b := make([]byte, size)
	copy(b, "head")
	copy(b[off:], "tail")
	f, _ := os.Create(p)
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("tail"), off)
	f.Truncate(size)
	f.Close()
	return b
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	rootfs := sparseFile(t, filepath.Join(dir, "rootfs.ext4"), 64<<20, 40<<20)
	os.WriteFile(filepath.Join(dir, "image.json"), []byte(`{"name":"x"}`), 0o644)
	out := filepath.Join(dir, "x.bundle")
	res, err := Write(context.Background(), out, Manifest{Kind: KindImage, Name: "x", Arch: "amd64", Kernel: "debian-6.1"}, []File{
		{Name: "image.json", Path: filepath.Join(dir, "image.json")},
		{Name: "rootfs.ext4", Path: filepath.Join(dir, "rootfs.ext4"), Size: int64(len(rootfs)), SHA256: sum(rootfs)},
	}, nil)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	raw, _ := os.ReadFile(out)
	if res.SHA256 != sum(raw) || res.Size != int64(len(raw)) {
		t.Errorf("result sha/size %s/%d; the file is %s/%d", res.SHA256, res.Size, sum(raw), len(raw))
	}
	if len(raw) > 1<<20 {
		t.Errorf("bundle of a mostly-zero 64 MiB file is %d bytes; zstd should shrink it to almost nothing", len(raw))
	}

	dst := t.TempDir()
	m, err := Read(context.Background(), bytes.NewReader(raw), dst, func(m Manifest) error {
		if m.Kind != KindImage {
			return errors.New("want an image")
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if m.Name != "x" || m.Kernel != "debian-6.1" || len(m.Members) != 2 {
		t.Errorf("manifest = %+v", m)
	}
	got, _ := os.ReadFile(filepath.Join(dst, "rootfs.ext4"))
	if !bytes.Equal(got, rootfs) {
		t.Fatal("rootfs differs after the round trip")
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(dst, "rootfs.ext4"), &st)
	if st.Blocks*512 > 1<<20 {
		t.Errorf("extracted rootfs allocates %d bytes; zeros should stay holes", st.Blocks*512)
	}
}

// craft writes a bundle by hand: manifest m (nil: none) then the members in order.
func craft(t testing.TB, m any, members ...[2]string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, _ := zstd.NewWriter(&b)
	tw := tar.NewWriter(zw)
	write := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	if m != nil {
		data, _ := json.Marshal(m)
		write(ManifestName, data)
	}
	for _, mb := range members {
		write(mb[0], []byte(mb[1]))
	}
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func TestReadRefusesTamperedBundles(t *testing.T) {
	good := Manifest{Format: Format, Kind: KindImage, Name: "x", Arch: "amd64", Members: []Member{
		{Name: "rootfs.ext4", Size: 5, SHA256: sum([]byte("12345"))},
		{Name: "image.json", Size: 2, SHA256: sum([]byte("{}"))},
	}}
	withMembers := func(ms ...Member) Manifest { m := good; m.Members = ms; return m }
	tests := []struct {
		name   string
		bundle []byte
		want   string
	}{
		{"altered member", craft(t, good, [2]string{"rootfs.ext4", "12346"}, [2]string{"image.json", "{}"}), "rootfs.ext4 has sha256"},
		{"resized member", craft(t, good, [2]string{"rootfs.ext4", "123456"}, [2]string{"image.json", "{}"}), "is 6 bytes, its manifest says 5"},
		{"missing member", craft(t, good, [2]string{"rootfs.ext4", "12345"}), "lacks image.json"},
		{"extra member", craft(t, good, [2]string{"rootfs.ext4", "12345"}, [2]string{"image.json", "{}"}, [2]string{"evil.sh", "x"}), `holds "evil.sh"`},
		{"duplicate member", craft(t, good, [2]string{"rootfs.ext4", "12345"}, [2]string{"rootfs.ext4", "12345"}), "twice"},
		{"path member", craft(t, withMembers(Member{Name: "../x", Size: 1, SHA256: sum([]byte("x"))}), [2]string{"../x", "x"}), "invalid or duplicate member"},
		{"manifest not first", craft(t, nil, [2]string{"rootfs.ext4", "12345"}), "first member"},
		{"manifest not JSON", craft(t, nil, [2]string{ManifestName, "{"}), "not valid"},
		{"unknown manifest field", craft(t, map[string]any{"format": 1, "evil": true}), "not valid"},
		{"newer format", craft(t, Manifest{Format: 2, Kind: KindImage, Name: "x", Arch: "amd64", Members: good.Members}), "format 2"},
		{"not zstd", []byte("PK\x03\x04 a zip file"), "not a bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			_, err := Read(context.Background(), bytes.NewReader(tt.bundle), dst, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read = %v; want an error containing %q", err, tt.want)
			}
			entries, _ := os.ReadDir(filepath.Dir(dst))
			if len(entries) != 1 {
				t.Errorf("something was written next to the destination: %v", entries)
			}
		})
	}
	// The check refuses before any member is written.
	dst := t.TempDir()
	_, err := Read(context.Background(), bytes.NewReader(craft(t, good, [2]string{"rootfs.ext4", "12345"}, [2]string{"image.json", "{}"})), dst,
		func(m Manifest) error { return errors.New("is for arm64") }, nil)
	if entries, _ := os.ReadDir(dst); err == nil || len(entries) != 0 {
		t.Errorf("refused by check: err %v, wrote %v", err, entries)
	}
}

func TestWriteChecksWhatItIsTold(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("actual"), 0o644)
	_, err := Write(context.Background(), filepath.Join(dir, "b"), Manifest{Kind: KindImage, Name: "x", Arch: "amd64"},
		[]File{{Name: "rootfs.ext4", Path: filepath.Join(dir, "f"), Size: 6, SHA256: sum([]byte("expect"))}}, nil)
	if err == nil || !strings.Contains(err.Error(), "changed or is damaged") {
		t.Fatalf("Write of a file that is not what the manifest says = %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("a failed write left files: %v", entries)
	}
}

func TestCheckForAndCheckMembers(t *testing.T) {
	img := Manifest{Kind: KindImage, Arch: "amd64", Members: []Member{{Name: "rootfs.ext4"}, {Name: "extra"}}}
	kern := Manifest{Kind: KindKernel, Arch: "arm64", Members: []Member{{Name: "vmlinux"}}}
	for _, c := range []struct {
		err  error
		want string
	}{
		{img.CheckFor(KindImage, "amd64"), ""},
		{img.CheckFor(KindKernel, "amd64"), "the bundle holds a image, not a kernel"},
		{kern.CheckFor(KindImage, "arm64"), "the bundle holds a kernel, not an image"},
		{kern.CheckFor(KindKernel, "amd64"), "the bundle's kernel is for arm64; this host runs amd64 guests"},
		{img.CheckFor(KindImage, "arm64"), "the bundle's image is for amd64; this host runs arm64 guests"},
		{img.CheckMembers("rootfs.ext4", "extra"), ""},
		{img.CheckMembers("rootfs.ext4", "image.json"), `the bundle holds "extra", which image bundles do not have`},
		{kern.CheckMembers("vmlinux"), ""},
	} {
		got := ""
		if c.err != nil {
			got = c.err.Error()
		}
		if got != c.want {
			t.Errorf("error %q, want %q", got, c.want)
		}
	}
}
