package image

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := lookTool(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func TestPrepareRootAddsWhatAVMNeeds(t *testing.T) {
	tree := t.TempDir()
	writeTestFile(t, filepath.Join(tree, "usr/lib/systemd/systemd"), "#!", 0o755)
	writeTestFile(t, filepath.Join(tree, "etc/machine-id"), "0123456789abcdef0123456789abcdef\n", 0o444)
	notes, err := PrepareRoot(tree)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp"} {
		if fi, err := os.Stat(filepath.Join(tree, d)); err != nil || !fi.IsDir() {
			t.Errorf("/%s not added: %v", d, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(tree, "tmp")); fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("/tmp mode = %v; want sticky 0777", fi.Mode())
	}
	if got := readTestFile(t, filepath.Join(tree, "etc/hosts")); !strings.Contains(got, "127.0.0.1\tlocalhost") {
		t.Errorf("/etc/hosts = %q", got)
	}
	if got := readTestFile(t, filepath.Join(tree, "etc/machine-id")); got != "" {
		t.Errorf("machine-id = %q; want empty in an image with systemd", got)
	}
	if len(notes) == 0 {
		t.Error("no notes on what was added")
	}
}

func TestPrepareRootNeverLeavesTheTree(t *testing.T) {
	parent := t.TempDir()
	tree, outside := filepath.Join(parent, "tree"), filepath.Join(parent, "outside")
	os.MkdirAll(tree, 0o755)
	os.MkdirAll(outside, 0o755)
	os.Symlink(outside, filepath.Join(tree, "etc")) // absolute, pointing out of the tree
	if _, err := PrepareRoot(tree); err == nil {
		t.Error("PrepareRoot went along with /etc pointing out of the tree")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside the tree: %v", entries)
	}
}

func TestFromTreeRegisterExportImport(t *testing.T) {
	needTools(t, "mkfs.ext4")
	parent := t.TempDir()
	tree := filepath.Join(parent, "tree")
	writeTestFile(t, filepath.Join(tree, "bin/sh"), "#!fake shell", 0o755)
	writeTestFile(t, filepath.Join(tree, "var/lib/dpkg/status"), "Package: busybox\nStatus: install ok installed\nVersion: 1.35\n\n", 0o644)

	m, err := FromTree(context.Background(), TreeOptions{Tree: tree, Dest: filepath.Join(parent, "img"), Name: "tiny",
		Manifest: Manifest{Source: SourceOCI, OCI: &OCIOrigin{Reference: "x/tiny:1", Digest: "sha256:aa"}, Kernel: "debian-6.1"}})
	if err != nil {
		t.Fatalf("FromTree: %v", err)
	}
	if err := Verify(filepath.Join(parent, "img")); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if m.Source != SourceOCI || m.OCI.Reference != "x/tiny:1" || len(m.Packages) != 1 || m.Version() != m.RootfsSHA256[:12] || m.RootfsSize < 64<<20 {
		t.Errorf("manifest = %+v", m)
	}
	if _, err := FromTree(context.Background(), TreeOptions{Tree: tree, Dest: filepath.Join(parent, "small"), Name: "tiny", Size: 1 << 20}); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("FromTree with a tiny --size = %v; want too small", err)
	}

	// Register adopts an ext4 file, and refuses anything else.
	reg, err := Register(context.Background(), RegisterOptions{Rootfs: filepath.Join(parent, "img", RootfsFile), Dest: filepath.Join(parent, "reg"), Name: "again"})
	if err != nil || reg.RootfsSHA256 != m.RootfsSHA256 || reg.Source != SourceRegister {
		t.Fatalf("Register = %+v, %v; want the same rootfs", reg, err)
	}
	if _, err := Register(context.Background(), RegisterOptions{Rootfs: filepath.Join(tree, "bin/sh"), Dest: filepath.Join(parent, "reg2"), Name: "x"}); err == nil || !strings.Contains(err.Error(), "ext4") {
		t.Errorf("Register of a non-ext4 file = %v", err)
	}

	// Export → import round trip.
	b := filepath.Join(parent, "tiny.bundle")
	res, err := Export(context.Background(), filepath.Join(parent, "img"), b, nil)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	t.Logf("bundle: %d bytes for a %d MiB rootfs", res.Size, m.RootfsSize>>20)
	f, _ := os.Open(b)
	defer f.Close()
	imported, err := Import(context.Background(), f, parent, ImportOptions{Name: "tiny2", Dest: func(m Manifest) string { return filepath.Join(parent, "imp-"+m.Version()) }})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if imported.Name != "tiny2" || imported.RootfsSHA256 != m.RootfsSHA256 || imported.Source != SourceBundle || imported.OCI == nil || imported.Kernel != "debian-6.1" {
		t.Errorf("imported manifest = %+v", imported)
	}
	if err := Verify(filepath.Join(parent, "imp-"+m.Version())); err != nil {
		t.Errorf("imported image does not verify: %v", err)
	}

	// A tampered bundle (one byte of the rootfs changed, re-packed with the same manifest) is
	// refused and leaves nothing.
	tampered := tamper(t, b)
	_, err = Import(context.Background(), bytes.NewReader(tampered), parent, ImportOptions{Dest: func(m Manifest) string { return filepath.Join(parent, "evil") }})
	if err == nil || !strings.Contains(err.Error(), "altered") {
		t.Fatalf("Import of a tampered bundle = %v; want it refused", err)
	}
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.Name() == "evil" {
			t.Errorf("a refused import left %s", e.Name())
		}
	}
}

// tamper re-packs a bundle with one byte of rootfs.ext4 flipped, keeping its manifest.
func tamper(t *testing.T, path string) []byte {
	t.Helper()
	dir := t.TempDir()
	zr, _ := zstd.NewReader(nil)
	raw, _ := os.ReadFile(path)
	plain, err := zr.DecodeAll(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "b.tar")
	os.WriteFile(tarPath, plain, 0o644)
	out, err := exec.Command("sh", "-c", `cd `+dir+` && mkdir x && tar -xf b.tar -C x && printf 'X' | dd of=x/rootfs.ext4 bs=1 seek=2000000 conv=notrunc 2>/dev/null && tar --format=pax -cf t.tar -C x manifest.json image.json rootfs.ext4`).CombinedOutput()
	if err != nil {
		t.Fatalf("tamper: %v %s", err, out)
	}
	tt, _ := os.ReadFile(filepath.Join(dir, "t.tar"))
	zw, _ := zstd.NewWriter(nil)
	return zw.EncodeAll(tt, nil)
}

// An OCI image's config environment lands where the agent and login shells read it, quoted
// so that a shell gets the values exactly; entries no shell could take are left out.
func TestWriteImageEnv(t *testing.T) {
	tree := t.TempDir()
	note, err := writeImageEnv(tree, []string{"PATH=/usr/local/go/bin:/usr/bin:/bin", "QUOTE=it's $HOME", "bad-name=x", "NOEQUALS", "MULTI=a\nb"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(note, "2 variables") || !strings.Contains(note, "3 entries") {
		t.Errorf("note = %q, want 2 kept and 3 left out", note)
	}
	plain, err := os.ReadFile(filepath.Join(tree, "etc/banger/image.env"))
	if err != nil || string(plain) != "PATH=/usr/local/go/bin:/usr/bin:/bin\nQUOTE=it's $HOME\n" {
		t.Errorf("image.env = %q, %v", plain, err)
	}
	script := filepath.Join(tree, "etc/profile.d/banger-image-env.sh")
	out, err := exec.Command("sh", "-c", `. "$1" && printf '%s|%s' "$PATH" "$QUOTE"`, "sh", script).CombinedOutput()
	if err != nil || string(out) != "/usr/local/go/bin:/usr/bin:/bin|it's $HOME" {
		t.Errorf("sourcing the profile script gave %q, %v; want the values exactly", out, err)
	}
}
