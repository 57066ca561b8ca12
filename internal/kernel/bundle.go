package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/ext4"
	"github.com/banger-dev/banger/internal/progress"
)

// Members of a kernel bundle: the ELF kernel, and optionally its module disk and its own
// initramfs.
const (
	bundleVmlinux = "vmlinux"
	bundleModules = ModulesDiskName
	bundleInitrd  = "initrd.img"
)

// ExportBundle writes the kernel as a bundle at path: vmlinux, the module disk (made first
// when missing) and the kernel's own initramfs, if any.
func ExportBundle(ctx context.Context, m Manifest, path string, report progress.Func) (bundle.Result, error) {
	files := []bundle.File{{Name: bundleVmlinux, Path: m.VmlinuxPath()}}
	if m.ModulesDir != "" {
		disk, err := EnsureModulesDisk(ctx, m)
		if err != nil {
			return bundle.Result{}, err
		}
		files = append(files, bundle.File{Name: bundleModules, Path: disk})
	}
	if m.Initrd != "" {
		files = append(files, bundle.File{Name: bundleInitrd, Path: m.InitrdPath()})
	}
	return bundle.Write(ctx, path, bundle.Manifest{Kind: bundle.KindKernel, Name: m.Name, Arch: debian.HostArch(), Release: m.Release}, files, report)
}

// ImportBundle installs a kernel bundle read from r as the kernel directory dest (which must
// not exist), named name. Every member is verified first; the module tree is restored from
// the module disk with debugfs (no mounting), so the initramfs can be built from it.
func ImportBundle(ctx context.Context, r io.Reader, name, dest string, report progress.Func) (Manifest, error) {
	if _, err := os.Lstat(dest); err == nil {
		return Manifest{}, fmt.Errorf("kernel directory %s already exists", dest)
	}
	staging, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".pull-*")
	if err != nil {
		return Manifest{}, err
	}
	published := false
	defer func() {
		if !published {
			os.RemoveAll(staging)
		}
	}()
	arch := debian.HostArch()
	bm, err := bundle.Read(ctx, r, staging, func(m bundle.Manifest) error {
		if err := m.CheckFor(bundle.KindKernel, arch); err != nil {
			return err
		}
		if _, ok := m.Member(bundleVmlinux); !ok {
			return errors.New("the kernel bundle has no vmlinux")
		}
		if err := m.CheckMembers(bundleVmlinux, bundleModules, bundleInitrd); err != nil {
			return err
		}
		if m.Release == "" || m.Release == "." || m.Release == ".." || filepath.Base(m.Release) != m.Release {
			return fmt.Errorf("the bundle names an invalid kernel release %q", m.Release)
		}
		return nil
	}, report)
	if err != nil {
		return Manifest{}, err
	}
	vmlinux, _ := bm.Member(bundleVmlinux)
	data, err := os.ReadFile(filepath.Join(staging, bundleVmlinux))
	if err != nil {
		return Manifest{}, err
	}
	if err := checkELFKernel(data); err != nil {
		return Manifest{}, err
	}
	if rel, err := KernelRelease(data); err != nil || rel != bm.Release {
		return Manifest{}, fmt.Errorf("the bundle says kernel %s, but its vmlinux is %q (%v)", bm.Release, rel, err)
	}
	m := Manifest{Name: name, Release: bm.Release, Source: SourceBundle, Vmlinux: bundleVmlinux, VmlinuxSize: vmlinux.Size,
		PulledAt: time.Now().UTC().Truncate(time.Second)}
	if _, ok := bm.Member(bundleInitrd); ok {
		m.Initrd = bundleInitrd
	}
	if _, ok := bm.Member(bundleModules); ok {
		m.ModulesDir = "lib/modules/" + bm.Release
		tree := filepath.Join(staging, filepath.FromSlash(m.ModulesDir))
		if err := os.MkdirAll(tree, 0o755); err != nil {
			return Manifest{}, err
		}
		debugfs, err := ext4.LookTool("debugfs")
		if err != nil {
			return Manifest{}, fmt.Errorf("%w; install e2fsprogs", err)
		}
		if err := ext4.Run(ctx, debugfs, "-R", "rdump / "+tree, filepath.Join(staging, bundleModules)); err != nil {
			return Manifest{}, fmt.Errorf("restore the module tree: %w", err)
		}
		_ = os.RemoveAll(filepath.Join(tree, "lost+found"))
	}
	if err := writeManifest(staging, m); err != nil {
		return Manifest{}, err
	}
	if err := os.Rename(staging, dest); err != nil {
		return Manifest{}, err
	}
	published = true
	m.Dir = dest
	return m, nil
}
