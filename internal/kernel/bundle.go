package kernel

import (
	"github.com/banger-dev/banger/internal/durable"

	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/untar"
)

// Members of a kernel bundle: the ELF kernel, and optionally its module tree (a tar stream)
// and its own initramfs.
const (
	bundleVmlinux = "vmlinux"
	bundleModules = "modules.tar"
	bundleInitrd  = "initrd.img"
)

// modulesLimits bound the module tree a bundle may unpack to: a Debian kernel's is ~400 MiB
// in ~6,000 files.
var modulesLimits = untar.Limits{Bytes: 4 << 30, Entries: 100_000, EntryBytes: 1 << 30}

// ExportBundle writes the kernel as a bundle at path: vmlinux, the module tree as a tar
// stream (lib/modules/<release> with its indexes, names relative to it) and the kernel's own
// initramfs, if any.
func ExportBundle(ctx context.Context, m Manifest, path string, report progress.Func) (bundle.Result, error) {
	files := []bundle.File{{Name: bundleVmlinux, Path: m.VmlinuxPath()}}
	if m.ModulesDir != "" {
		if err := Depmod(ctx, m.ModulesPath(), m.Release); err != nil {
			return bundle.Result{}, fmt.Errorf("kernel %s: %w", m.Name, err)
		}
		tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".modules-*.tar")
		if err != nil {
			return bundle.Result{}, err
		}
		defer os.Remove(tmp.Name())
		err = writeModuleTar(ctx, tmp, m.ModulesPath())
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return bundle.Result{}, fmt.Errorf("kernel %s: pack the module tree: %w", m.Name, err)
		}
		files = append(files, bundle.File{Name: bundleModules, Path: tmp.Name()})
	}
	if m.Initrd != "" {
		files = append(files, bundle.File{Name: bundleInitrd, Path: m.InitrdPath()})
	}
	return bundle.Write(ctx, path, bundle.Manifest{Kind: bundle.KindKernel, Name: m.Name, Arch: debian.HostArch(), Release: m.Release}, files, report)
}

// writeModuleTar writes the module tree at dir as a tar stream: directories, regular files
// and the symlinks that stay inside it (build and source, which point at kernel headers
// elsewhere, are left out as imports do).
func writeModuleTar(ctx context.Context, w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: rel, Mode: int64(info.Mode().Perm()), ModTime: info.ModTime(), Format: tar.FormatPAX}
		switch {
		case d.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, rel+"/"
		case d.Type().IsRegular():
			h.Typeflag, h.Size = tar.TypeReg, info.Size()
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if untar.CheckSymlink(rel, link, untar.SymlinksInside) != nil {
				return nil // points outside the module tree
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, link
		default:
			return nil // sockets, devices: nothing a module tree needs
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, h.Size)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// ImportBundle installs a kernel bundle read from r as the kernel directory dest (which must
// not exist), named name. Every member is verified first; the module tree is extracted from its
// tar stream by package untar — names with "..", absolute names, NUL bytes, symlinks leaving
// the tree, anything written through a symlink and duplicate names are refused, naming the
// entry — and the module disk is then built from it here, as for any imported kernel. Bundles
// of older versions, which carried the module disk itself, are refused: an ext4 image from a
// bundle is never expanded on the host.
func ImportBundle(ctx context.Context, r io.Reader, name, dest string, report progress.Func) (Manifest, error) {
	if _, err := os.Lstat(dest); err == nil {
		return Manifest{}, fmt.Errorf("kernel directory %s already exists", dest)
	}
	st, err := durable.Stage(filepath.Dir(dest), filepath.Base(dest)+".pull")
	if err != nil {
		return Manifest{}, err
	}
	defer st.Discard()
	staging := st.Dir
	arch := debian.HostArch()
	bm, err := bundle.Read(ctx, r, staging, func(m bundle.Manifest) error {
		if err := m.CheckFor(bundle.KindKernel, arch); err != nil {
			return err
		}
		if _, ok := m.Member(ModulesDiskName); ok {
			return fmt.Errorf("the kernel bundle carries its modules as an ext4 image (%s), as older banger versions made them; "+
				"banger no longer expands a file system from a bundle: export the kernel again with this version", ModulesDiskName)
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
		if err := extractModules(filepath.Join(staging, bundleModules), filepath.Join(staging, filepath.FromSlash(m.ModulesDir))); err != nil {
			return Manifest{}, err
		}
		m.Dir = staging
		if _, err := EnsureModulesDisk(ctx, m); err != nil {
			return Manifest{}, err
		}
		m.Dir = ""
	}
	if err := writeManifest(staging, m); err != nil {
		return Manifest{}, err
	}
	if err := st.Publish(dest); err != nil {
		return Manifest{}, err
	}
	m.Dir = dest
	return m, nil
}

// extractModules extracts a bundle's module tar into tree (made here) and removes the tar.
func extractModules(tarPath, tree string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer os.Remove(tarPath)
	defer f.Close()
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	if _, err := untar.Dir(f, tree, untar.Options{Limits: modulesLimits, Symlinks: untar.SymlinksInside, RefuseDuplicates: true}); err != nil {
		return fmt.Errorf("the kernel bundle's module tree (%s): %w", bundleModules, err)
	}
	return nil
}
