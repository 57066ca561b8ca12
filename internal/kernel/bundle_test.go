package kernel

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernelBundleRoundTrip exports an imported kernel with modules and an initramfs of its
// own, and installs the bundle under another name: the module tree comes back from the module
// disk (debugfs rdump) and the boot initramfs is built from it.
func TestKernelBundleRoundTrip(t *testing.T) {
	for _, tool := range []string{"depmod", "mkfs.ext4", "debugfs"} {
		if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
			if _, err := os.Stat("/sbin/" + tool); err != nil {
				t.Skipf("%s not installed", tool)
			}
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "vmlinux")
	os.WriteFile(src, bannerVmlinux("6.1.0-test"), 0o644)
	own := filepath.Join(dir, "own.cpio")
	os.WriteFile(own, []byte("0707010000-their-archive"), 0o644)
	m, err := Import(context.Background(), ImportOptions{Name: "k", Vmlinux: src, Initrd: own, Modules: fakeModuleTree(t), Dest: filepath.Join(dir, "k")})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "k.bundle")
	res, err := ExportBundle(context.Background(), m, out, nil)
	if err != nil {
		t.Fatalf("ExportBundle: %v", err)
	}
	if res.Manifest.Release != "6.1.0-test" || len(res.Manifest.Members) != 3 {
		t.Errorf("bundle manifest = %+v; want release 6.1.0-test and vmlinux, modules.ext4, initrd.img", res.Manifest)
	}
	f, _ := os.Open(out)
	defer f.Close()
	got, err := ImportBundle(context.Background(), f, "copy", filepath.Join(dir, "copy"), nil)
	if err != nil {
		t.Fatalf("ImportBundle: %v", err)
	}
	loaded, err := Load(got.Dir)
	if err != nil || loaded.Source != SourceBundle || loaded.Name != "copy" || loaded.Initrd == "" {
		t.Fatalf("Load = %+v, %v", loaded, err)
	}
	if _, err := os.Stat(filepath.Join(loaded.ModulesPath(), "kernel/fs/overlayfs/overlay.ko")); err != nil {
		t.Errorf("module tree not restored: %v", err)
	}
	agent := filepath.Join(dir, "agent")
	os.WriteFile(agent, testAgent(), 0o755)
	initrd, err := loaded.BootInitramfs(agent)
	if err != nil {
		t.Fatalf("BootInitramfs: %v", err)
	}
	data, _ := os.ReadFile(initrd)
	if !bytes.HasPrefix(data, []byte("0707010000-their-archive")) || !bytes.Contains(data, []byte("overlay.ko")) {
		t.Error("boot initramfs lacks the kernel's own archive or the overlay module")
	}

	// A kernel bundle is not an image, and vice versa.
	f.Seek(0, 0)
	if _, err := ImportBundle(context.Background(), f, "x", filepath.Join(dir, "x"), nil); err != nil {
		t.Fatalf("second import: %v", err)
	}
	if _, err := ImportBundle(context.Background(), strings.NewReader("junk"), "y", filepath.Join(dir, "y"), nil); err == nil {
		t.Error("junk imported")
	}
	if _, err := os.Stat(filepath.Join(dir, "y")); err == nil {
		t.Error("a failed import left its directory")
	}
}
