package kernel

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/guestinit"
)

// bannerVmlinux is a fake x86-64 ELF kernel carrying the version banner of release.
func bannerVmlinux(release string) []byte {
	b := fakeVmlinux(64<<10, elf.EM_X86_64)
	copy(b[4096:], "Linux version "+release+" (builder@host) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP\x00")
	return b
}

func TestKernelRelease(t *testing.T) {
	tests := []struct{ name, data, want, err string }{
		{"debian", "xx\x00Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12", "6.1.0-28-cloud-amd64", ""},
		{"local build", "Linux version 6.12.7-fc+ (me@box) #3", "6.12.7-fc+", ""},
		{"format string only", "Linux version %s (%s)", "", "no \"Linux version"},
		{"no banner", "nothing here", "", "no \"Linux version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := KernelRelease([]byte(tt.data))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("KernelRelease = %q, %v; want error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("KernelRelease = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestImportBuiltInKernelWithoutModules(t *testing.T) {
	dir := t.TempDir()
	vmlinux := bannerVmlinux("6.12.7-fc")
	src := filepath.Join(dir, "vmlinux")
	os.WriteFile(src, vmlinux, 0o644)
	dst := filepath.Join(dir, "kernels", "fc")
	os.MkdirAll(filepath.Dir(dst), 0o755)

	m, err := Import(context.Background(), ImportOptions{Name: "fc", Vmlinux: src, Dest: dst})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if m.Release != "6.12.7-fc" || m.Source != SourceImport || m.ModulesDir != "" || m.ModulesDiskPath() != "" {
		t.Fatalf("manifest = %+v; want release 6.12.7-fc, source import, no modules", m)
	}
	loaded, err := Load(dst)
	if err != nil {
		t.Fatalf("Load of an imported kernel: %v", err)
	}
	if got, _ := os.ReadFile(loaded.VmlinuxPath()); !bytes.Equal(got, vmlinux) {
		t.Fatal("imported vmlinux differs from the source")
	}

	// It boots with banger's initramfs: the agent as /init and an empty module list.
	data := bootInitramfs(t, loaded)
	members := rawNewc(t, data)
	var init, list bool
	for _, m := range members {
		init = init || m.name == "init" && bytes.Equal(m.data, testAgent())
		list = list || m.name == "lib/modules/6.12.7-fc/"+guestinit.ModuleList && len(m.data) == 0
	}
	if !init || !list {
		t.Errorf("initramfs of a built-in kernel: /init from the agent %v, empty module list %v; want both", init, list)
	}
	if md, err := EnsureModulesDisk(context.Background(), loaded); md != "" || err != nil {
		t.Errorf("EnsureModulesDisk without modules = %q, %v; want nothing to do", md, err)
	}
}

func TestImportWithInitrdAndModules(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "bzImage")
	os.WriteFile(src, makeBzImage(gzipBytes(bannerVmlinux("6.1.0-test")), 64<<10, bzImageOpts{}), 0o644)
	own := filepath.Join(dir, "own.cpio")
	os.WriteFile(own, []byte("0707010000-their-archive!"), 0o644) // 25 bytes: padded to 28
	modules := fakeModuleTree(t)                                  // <tmp>/lib/modules/6.1.0-test
	os.Symlink("/usr/src/linux", filepath.Join(modules, "build"))
	dst := filepath.Join(dir, "k")

	// --modules may name lib/modules/<release> or the INSTALL_MOD_PATH above it.
	for i, modArg := range []string{modules, filepath.Dir(filepath.Dir(filepath.Dir(modules)))} {
		d := dst + string(rune('a'+i))
		m, err := Import(context.Background(), ImportOptions{Name: "k", Vmlinux: src, Initrd: own, Modules: modArg, Dest: d})
		if err != nil {
			t.Fatalf("Import(--modules %s): %v", modArg, err)
		}
		if m.ModulesDir != "lib/modules/6.1.0-test" || m.Initrd == "" {
			t.Fatalf("manifest = %+v; want modules and initrd", m)
		}
		if _, err := os.Lstat(filepath.Join(m.ModulesPath(), "build")); err == nil {
			t.Error("the build link into the source tree was copied")
		}
		data := bootInitramfs(t, m)
		if !bytes.HasPrefix(data, []byte("0707010000-their-archive!\x00\x00\x00")) {
			t.Fatalf("boot initramfs does not start with the kernel's own, padded to 4 bytes: %q", data[:32])
		}
		if want := buildTestInitramfs(t, modules, false); !bytes.Equal(data[28:], want) {
			t.Error("banger's archive after the kernel's own differs from BuildInitramfs with GuestModules")
		}
	}
}

func TestImportRejects(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "vmlinux")
	os.WriteFile(good, bannerVmlinux("6.1.0-test"), 0o644)
	arm := filepath.Join(dir, "arm")
	b := fakeVmlinux(64<<10, elf.EM_AARCH64)
	copy(b[4096:], "Linux version 6.1.0-test (x@y)")
	os.WriteFile(arm, b, 0o644)
	nobanner := filepath.Join(dir, "nobanner")
	os.WriteFile(nobanner, fakeVmlinux(64<<10, elf.EM_X86_64), 0o644)
	text := filepath.Join(dir, "text")
	os.WriteFile(text, []byte("hello"), 0o644)
	otherMods := filepath.Join(dir, "lib/modules/5.10.0-other")
	writeFile(t, otherMods, "kernel/x.ko", fakeModule("depends="))

	tests := []struct {
		name string
		opts ImportOptions
		want string
	}{
		{"no kernel", ImportOptions{}, "no kernel file"},
		{"missing file", ImportOptions{Vmlinux: filepath.Join(dir, "nope")}, "no such file"},
		{"not a kernel", ImportOptions{Vmlinux: text}, "neither an ELF vmlinux nor a bzImage"},
		{"other architecture", ImportOptions{Vmlinux: arm}, "x86-64"},
		{"no banner", ImportOptions{Vmlinux: nobanner}, "Linux version"},
		{"modules of another release", ImportOptions{Vmlinux: good, Modules: otherMods}, "is for kernel 5.10.0-other, but the kernel is 6.1.0-test"},
		{"modules dir without modules", ImportOptions{Vmlinux: good, Modules: t.TempDir()}, "neither lib/modules/6.1.0-test nor kernel modules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Name = "k"
			tt.opts.Dest = filepath.Join(dir, "out")
			_, err := Import(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Import error = %v; want one containing %q", err, tt.want)
			}
			if _, err := os.Stat(tt.opts.Dest); err == nil {
				t.Fatal("a failed import left its directory")
			}
		})
	}
}

// TestEnsureModulesDisk runs the real depmod and mkfs.ext4 on a fake module tree.
func TestEnsureModulesDisk(t *testing.T) {
	for _, tool := range []string{"depmod", "mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				t.Skipf("%s not installed", tool)
			}
		}
	}
	modules := fakeModuleTree(t)
	kernelDir := filepath.Dir(filepath.Dir(filepath.Dir(modules)))
	m := Manifest{Name: "k", Dir: kernelDir, Release: "6.1.0-test", ModulesDir: "lib/modules/6.1.0-test"}
	p, err := EnsureModulesDisk(context.Background(), m)
	if err != nil {
		t.Fatalf("EnsureModulesDisk: %v", err)
	}
	if p != filepath.Join(kernelDir, ModulesDiskName) {
		t.Fatalf("path = %s", p)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("modules disk: %v, mode %v; want a read-only file", err, fi.Mode())
	}
	out, err := exec.Command("/usr/sbin/debugfs", "-R", "ls -l /", p).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	for _, want := range []string{"modules.dep", "kernel", "modules.builtin"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("modules disk root lacks %s:\n%s", want, out)
		}
	}
	// Present: reused.
	if again, err := EnsureModulesDisk(context.Background(), m); err != nil || again != p {
		t.Fatalf("second EnsureModulesDisk = %s, %v", again, err)
	}
	entries, _ := os.ReadDir(kernelDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover staging file %s", e.Name())
		}
	}
}
