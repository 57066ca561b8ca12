package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/debian"
)

// TestKernelBundleRoundTrip exports an imported kernel with modules and an initramfs of its
// own, and installs the bundle under another name: the module tree comes back from its tar
// stream, the module disk is built from it and the boot initramfs too.
func TestKernelBundleRoundTrip(t *testing.T) {
	for _, tool := range []string{"depmod", "mkfs.ext4"} {
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
		t.Errorf("bundle manifest = %+v; want release 6.1.0-test and vmlinux, modules.tar, initrd.img", res.Manifest)
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
	if _, err := os.Stat(filepath.Join(loaded.ModulesPath(), "modules.dep")); err != nil {
		t.Errorf("module indexes not there: %v", err)
	}
	if fi, err := os.Stat(loaded.ModulesDiskPath()); err != nil || fi.Size() == 0 {
		t.Errorf("module disk not built on import: %v", err)
	}
	if _, err := os.Stat(filepath.Join(got.Dir, bundleModules)); err == nil {
		t.Error("the module tar was left in the kernel directory")
	}
	data := bootInitramfs(t, loaded)
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

// kernelBundle writes a kernel bundle for release 6.1.0-test with vmlinux and the given
// extra members (name -> file path).
func kernelBundle(t *testing.T, dir string, members map[string]string) string {
	t.Helper()
	vm := filepath.Join(dir, "vmlinux")
	os.WriteFile(vm, bannerVmlinux("6.1.0-test"), 0o644)
	files := []bundle.File{{Name: bundleVmlinux, Path: vm}}
	for name, p := range members {
		files = append(files, bundle.File{Name: name, Path: p})
	}
	out := filepath.Join(dir, "k.bundle")
	if _, err := bundle.Write(context.Background(), out, bundle.Manifest{Kind: bundle.KindKernel, Name: "k", Arch: debian.HostArch(), Release: "6.1.0-test"}, files, nil); err != nil {
		t.Fatal(err)
	}
	return out
}

// outsideTarget is a file that no bundle may change, next to the kernels directory.
func outsideTarget(t *testing.T) (kernels, target string) {
	t.Helper()
	dir := t.TempDir()
	kernels = filepath.Join(dir, "kernels")
	os.Mkdir(kernels, 0o700)
	target = filepath.Join(dir, "outside", "target")
	os.Mkdir(filepath.Dir(target), 0o755)
	os.WriteFile(target, []byte("orig\n"), 0o644)
	return kernels, target
}

func checkNothingLeft(t *testing.T, kernels, target string) {
	t.Helper()
	if b, _ := os.ReadFile(target); string(b) != "orig\n" {
		t.Errorf("a file outside the kernel directory now holds %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(target)); len(entries) != 1 {
		t.Errorf("something was created outside: %v", entries)
	}
	if entries, _ := os.ReadDir(kernels); len(entries) != 0 {
		t.Errorf("a refused bundle left %v in the kernels directory", entries)
	}
}

// A bundle carrying its modules as an ext4 image (older versions made them) is refused
// without the image being expanded: debugfs rdump followed a symlink in it and wrote outside
// the tree (here: a symlink named AAAAAAAA to a host file, then a file of the same name).
func TestImportBundleNeverExpandsAModuleDisk(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	kernels, target := outsideTarget(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	os.Symlink(target, filepath.Join(tree, "AAAAAAAA"))
	os.WriteFile(filepath.Join(tree, "f"), []byte("pwned\n"), 0o644)
	img := filepath.Join(dir, "modules.ext4")
	for _, cmd := range [][]string{{"mkfs.ext4", "-q", "-F", "-O", "^metadata_csum", "-d", tree, img, "4M"}, {"debugfs", "-w", "-R", "ln f BBBBBBBB", img}} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", cmd, err, out)
		}
	}
	data, _ := os.ReadFile(img)
	os.WriteFile(img, bytes.Replace(data, []byte("BBBBBBBB"), []byte("AAAAAAAA"), 1), 0o644) // a second entry named AAAAAAAA
	f, _ := os.Open(kernelBundle(t, dir, map[string]string{"modules.ext4": img}))
	defer f.Close()
	_, err := ImportBundle(context.Background(), f, "k", filepath.Join(kernels, "k"), nil)
	if err == nil || !strings.Contains(err.Error(), "export the kernel again") {
		t.Errorf("err = %v; want the old bundle refused, saying to export it again", err)
	}
	checkNothingLeft(t, kernels, target)
}

// A module tree trying to leave its directory is refused, naming the entry, and nothing is
// written anywhere.
func TestImportBundleRefusesBadModuleTrees(t *testing.T) {
	type ent struct {
		name, link, data string
		typ              byte
	}
	for _, tt := range []struct {
		name  string
		es    func(target string) []ent
		entry string
		why   string
	}{
		{"dot-dot", func(string) []ent { return []ent{{name: "../../../outside/target", data: "pwned", typ: tar.TypeReg}} }, "../../../outside/target", `".."`},
		{"absolute", func(target string) []ent { return []ent{{name: target, data: "pwned", typ: tar.TypeReg}} }, "/", "absolute"},
		{"symlink then file", func(target string) []ent {
			return []ent{{name: "x", link: target, typ: tar.TypeSymlink}, {name: "x", data: "pwned", typ: tar.TypeReg}}
		}, "x", "absolute"},
		{"inside symlink then file", func(string) []ent {
			return []ent{{name: "kernel/", typ: tar.TypeDir}, {name: "x", link: "kernel", typ: tar.TypeSymlink}, {name: "x", data: "m", typ: tar.TypeReg}}
		}, "x", "duplicate"},
		{"symlink climbing out", func(string) []ent {
			return []ent{{name: "kernel/up", link: "../../../../../outside", typ: tar.TypeSymlink}}
		}, "kernel/up", "escapes"},
		{"file through an inside symlink", func(string) []ent {
			return []ent{{name: "sub/", typ: tar.TypeDir}, {name: "s", link: "sub", typ: tar.TypeSymlink}, {name: "s/x.ko", data: "m", typ: tar.TypeReg}}
		}, "s/x.ko", "symlink"},
		{"duplicate", func(string) []ent {
			return []ent{{name: "kernel/a.ko", data: "1", typ: tar.TypeReg}, {name: "kernel/a.ko", data: "2", typ: tar.TypeReg}}
		}, "kernel/a.ko", "duplicate"},
		{"device", func(string) []ent { return []ent{{name: "null", typ: tar.TypeChar}} }, "null", "device"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kernels, target := outsideTarget(t)
			dir := t.TempDir()
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			for _, e := range tt.es(target) {
				tw.WriteHeader(&tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data))})
				tw.Write([]byte(e.data))
			}
			tw.Close()
			mt := filepath.Join(dir, "modules.tar")
			os.WriteFile(mt, b.Bytes(), 0o644)
			f, _ := os.Open(kernelBundle(t, dir, map[string]string{"modules.tar": mt}))
			defer f.Close()
			_, err := ImportBundle(context.Background(), f, "k", filepath.Join(kernels, "k"), nil)
			if err == nil || !strings.Contains(err.Error(), `entry "`+tt.entry) || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("err = %v; want a refusal naming entry %q and saying %q", err, tt.entry, tt.why)
			}
			checkNothingLeft(t, kernels, target)
		})
	}
}
