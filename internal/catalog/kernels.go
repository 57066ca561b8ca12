package catalog

import (
	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/durable"

	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/kernel"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/store"
)

// KernelInfo describes an installed kernel.
type KernelInfo struct {
	Name      string          `json:"name"`
	Release   string          `json:"release"`
	Source    string          `json:"source"` // "debian", "import" or "bundle"
	Package   string          `json:"package,omitempty"`
	Version   string          `json:"version,omitempty"`
	Dir       string          `json:"dir"`
	Modules   bool            `json:"modules"` // it has a module tree (and a module disk for VMs)
	Initrd    bool            `json:"initrd"`  // it came with an initramfs of its own
	UsedBy    []string        `json:"used_by,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	Manifest  json.RawMessage `json:"manifest,omitempty"` // in ShowKernel
}

// Kernel returns the named kernel ready to boot — its initramfs for this agent and its
// module disk made if needed — getting it from its catalog entry first if it is not here.
func (s *Service) Kernel(ctx context.Context, name string, p progress.Func) (Kernel, error) {
	m, err := s.installedKernel(ctx, name)
	if err != nil {
		if m, err = s.getKernel(ctx, name, p, false); err != nil {
			return Kernel{}, err
		}
	}
	initrd, err := m.BootInitramfs(s.o.AgentPath)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %s: build initramfs: %w", name, err)
	}
	modules, err := s.modulesDisk(ctx, m, p)
	if err != nil {
		return Kernel{}, err
	}
	return Kernel{Name: m.Name, Release: m.Release, Vmlinux: m.VmlinuxPath(), Initrd: initrd, Modules: modules}, nil
}

// modulesDisk makes the kernel's module disk once, however many VMs start at the same time.
func (s *Service) modulesDisk(ctx context.Context, m kernel.Manifest, p progress.Func) (string, error) {
	if m.ModulesDir == "" {
		return "", nil
	}
	if fi, err := os.Stat(m.ModulesDiskPath()); err == nil && fi.Mode().IsRegular() {
		return m.ModulesDiskPath(), nil
	}
	disk, _, err := s.modules.Do(ctx, m.Dir, p, func(ctx context.Context, p progress.Func) (string, error) {
		p.Stage("kernel.modules", fmt.Sprintf("packing the modules of %s into a read-only disk", m.Release))
		return kernel.EnsureModulesDisk(ctx, m)
	})
	return disk, err
}

// installedKernel returns the manifest of an installed kernel whose files are all present.
func (s *Service) installedKernel(ctx context.Context, name string) (kernel.Manifest, error) {
	rec, err := s.o.Store.GetKernel(ctx, name)
	if err != nil {
		return kernel.Manifest{}, err
	}
	return kernel.Load(rec.Dir)
}

// PullKernel gets the named kernel from its catalog entry, replacing an older copy, and
// returns what it installed.
func (s *Service) PullKernel(ctx context.Context, name string, p progress.Func) (KernelInfo, error) {
	m, err := s.getKernel(ctx, name, p, true)
	if err != nil {
		return KernelInfo{}, err
	}
	if _, err := m.BootInitramfs(s.o.AgentPath); err != nil {
		return KernelInfo{}, fmt.Errorf("kernel %s: build initramfs: %w", name, err)
	}
	if _, err := s.modulesDisk(ctx, m, p); err != nil {
		return KernelInfo{}, err
	}
	return s.ShowKernel(ctx, name)
}

func (s *Service) getKernel(ctx context.Context, name string, p progress.Func, replace bool) (kernel.Manifest, error) {
	cat, err := s.Catalog()
	if err != nil {
		return kernel.Manifest{}, err
	}
	e, ok := cat.Kernel(name)
	if !ok {
		if _, err := s.o.Store.GetKernel(ctx, name); err == nil {
			return kernel.Manifest{}, failure.New(failure.Invalid, "kernel %s was imported, not pulled: no catalog has it; import it again with `banger kernel import`", name)
		}
		return kernel.Manifest{}, failure.New(failure.NotFound, "unknown kernel %q; known kernels: %s (or import one with `banger kernel import`)", name, cat.KernelNames())
	}
	m, _, err := s.kernels.Do(ctx, name, p, func(ctx context.Context, p progress.Func) (kernel.Manifest, error) {
		if !replace {
			// Another caller may have finished a pull while this one waited to start.
			if m, err := s.installedKernel(ctx, name); err == nil {
				return m, nil
			}
		}
		return s.fetchKernel(ctx, e, p)
	})
	return m, err
}

func (s *Service) fetchKernel(ctx context.Context, e catalogfile.KernelEntry, p progress.Func) (kernel.Manifest, error) {
	dir := s.o.Layout.KernelsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return kernel.Manifest{}, err
	}
	fresh := filepath.Join(dir, "."+e.Name+".pull-"+randomSuffix())
	var m kernel.Manifest
	var err error
	switch e.Kind {
	case kernel.SourceDebian:
		if err := os.MkdirAll(s.o.Layout.DownloadsDir(), 0o700); err != nil {
			return kernel.Manifest{}, err
		}
		mirror := s.mirror()
		archive := &debian.Archive{Mirror: mirror, Suite: e.Debian.Suite, CacheDir: s.o.Layout.DownloadsDir(), Client: s.o.Download}
		if s.o.Store != nil {
			archive.History = s.o.Store // refuse a Release older than one accepted before
		}
		p.Stage(kernel.StageResolve, fmt.Sprintf("fetching kernel %s from %s", e.Name, mirror))
		m, err = kernel.Pull(ctx, kernel.Entry{Name: e.Name, Suite: e.Debian.Suite, Package: e.Debian.Package}, archive, fresh, p)
	default:
		var path string
		if path, err = s.fetchBundle(ctx, *e.Bundle, p); err == nil {
			var f *os.File
			if f, err = os.Open(path); err == nil {
				m, err = kernel.ImportBundle(ctx, f, e.Name, fresh, p)
				f.Close()
			}
		}
	}
	if err != nil {
		return kernel.Manifest{}, fmt.Errorf("pull kernel %s: %w", e.Name, err)
	}
	if err := s.install(ctx, m, fresh); err != nil {
		return kernel.Manifest{}, err
	}
	s.o.Log.Info("pulled kernel", "name", e.Name, "release", m.Release, "package", m.Package, "version", m.Version)
	return kernel.Load(filepath.Join(dir, e.Name))
}

// install swaps a staged kernel directory into place and records it. A running VM keeps the
// files it already opened; a stopped one boots the new kernel next time (its disk does not
// depend on the kernel).
func (s *Service) install(ctx context.Context, m kernel.Manifest, fresh string) error {
	final := filepath.Join(s.o.Layout.KernelsDir(), m.Name)
	old := filepath.Join(s.o.Layout.KernelsDir(), "."+m.Name+".old-"+randomSuffix())
	// Staged, fsynced, renamed, and the directory fsynced: after a crash the kernel is the
	// old one or the new one, complete.
	moved, err := durable.Replace(fresh, final, old)
	if err != nil {
		os.RemoveAll(fresh)
		return fmt.Errorf("install kernel %s: %w", m.Name, err)
	}
	if moved != "" {
		os.RemoveAll(moved)
	}
	m.Dir = final
	manifest, _ := json.Marshal(m)
	if err := s.o.Store.PutKernel(ctx, &store.Kernel{Name: m.Name, Release: m.Release, Dir: final, Manifest: manifest}); err != nil {
		return fmt.Errorf("record kernel %s: %w", m.Name, err)
	}
	return nil
}

// ImportKernelRequest asks to adopt a locally built kernel.
type ImportKernelRequest struct {
	Name    string
	Vmlinux string
	Initrd  string
	Modules string
}

// ImportKernel adopts a locally built kernel under a new name; see kernel.Import for what it
// takes and how such a kernel boots banger images.
func (s *Service) ImportKernel(ctx context.Context, req ImportKernelRequest, p progress.Func) (KernelInfo, error) {
	if !catalogfile.ValidName(req.Name) {
		return KernelInfo{}, failure.New(failure.Invalid, "kernel name %q must be lower-case letters, digits, '.' and '-'", req.Name)
	}
	if _, err := s.o.Store.GetKernel(ctx, req.Name); err == nil {
		return KernelInfo{}, failure.New(failure.Conflict, "a kernel named %s exists; remove it first with `banger kernel rm %s`, or choose another name", req.Name, req.Name)
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		a, _ := filepath.Abs(p)
		return a
	}
	_, _, err := s.kernels.Do(ctx, req.Name, p, func(ctx context.Context, p progress.Func) (kernel.Manifest, error) {
		if err := os.MkdirAll(s.o.Layout.KernelsDir(), 0o700); err != nil {
			return kernel.Manifest{}, err
		}
		fresh := filepath.Join(s.o.Layout.KernelsDir(), "."+req.Name+".pull-"+randomSuffix())
		p.Stage("kernel.import", "importing "+req.Vmlinux)
		m, err := kernel.Import(ctx, kernel.ImportOptions{Name: req.Name, Vmlinux: abs(req.Vmlinux), Initrd: abs(req.Initrd), Modules: abs(req.Modules), Dest: fresh})
		if err != nil {
			return kernel.Manifest{}, failure.Default(failure.Invalid, fmt.Errorf("import kernel %s: %w", req.Name, err))
		}
		if err := s.install(ctx, m, fresh); err != nil {
			return kernel.Manifest{}, err
		}
		m, err = kernel.Load(filepath.Join(s.o.Layout.KernelsDir(), req.Name))
		if err != nil {
			return kernel.Manifest{}, err
		}
		if _, err := m.BootInitramfs(s.o.AgentPath); err != nil {
			return kernel.Manifest{}, fmt.Errorf("kernel %s: build initramfs: %w", req.Name, err)
		}
		if _, err := s.modulesDisk(ctx, m, p); err != nil {
			return kernel.Manifest{}, err
		}
		return m, nil
	})
	if err != nil {
		return KernelInfo{}, err
	}
	return s.ShowKernel(ctx, req.Name)
}

// ExportKernel writes an installed kernel as a bundle at path (for a catalog entry elsewhere).
func (s *Service) ExportKernel(ctx context.Context, name, path string, p progress.Func) (bundle.Result, error) {
	m, err := s.installedKernel(ctx, name)
	if err != nil {
		return bundle.Result{}, err
	}
	if !filepath.IsAbs(path) {
		return bundle.Result{}, failure.New(failure.Invalid, "export path %q must be absolute", path)
	}
	return kernel.ExportBundle(ctx, m, path, p)
}

// DeleteKernel removes an installed kernel. It is refused while any VM, running or not, boots
// it.
func (s *Service) DeleteKernel(ctx context.Context, name string) (KernelInfo, error) {
	info, err := s.ShowKernel(ctx, name)
	if err != nil {
		return KernelInfo{}, err
	}
	if len(info.UsedBy) > 0 {
		return KernelInfo{}, failure.New(failure.Conflict, "kernel %s is used by %s %s; delete %s first with `banger vm delete %s`",
			name, plural(len(info.UsedBy), "VM", "VMs"), strings.Join(info.UsedBy, ", "), plural(len(info.UsedBy), "it", "them"), strings.Join(info.UsedBy, " "))
	}
	if err := s.o.Store.DeleteKernel(ctx, name); err != nil {
		return KernelInfo{}, err
	}
	if err := os.RemoveAll(info.Dir); err != nil {
		return info, fmt.Errorf("kernel %s is forgotten, but removing its files failed: %w", name, err)
	}
	s.o.Log.Info("deleted kernel", "name", name)
	return info, nil
}

// Kernels lists installed kernels.
func (s *Service) Kernels(ctx context.Context) ([]KernelInfo, error) {
	recs, err := s.o.Store.ListKernels(ctx)
	if err != nil {
		return nil, err
	}
	vms, err := s.o.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]KernelInfo, 0, len(recs))
	for _, r := range recs {
		ki := KernelInfo{Name: r.Name, Release: r.Release, Dir: r.Dir, CreatedAt: r.CreatedAt, Source: kernel.SourceDebian}
		var m kernel.Manifest
		if json.Unmarshal(r.Manifest, &m) == nil {
			ki.Package, ki.Version, ki.Modules, ki.Initrd = m.Package, m.Version, m.ModulesDir != "", m.Initrd != ""
			if m.Source != "" {
				ki.Source = m.Source
			}
		}
		for _, vm := range vms {
			if vm.Kernel == r.Name {
				ki.UsedBy = append(ki.UsedBy, vm.Name)
			}
		}
		out = append(out, ki)
	}
	return out, nil
}

// ShowKernel describes one installed kernel, with its manifest.
func (s *Service) ShowKernel(ctx context.Context, name string) (KernelInfo, error) {
	ks, err := s.Kernels(ctx)
	if err != nil {
		return KernelInfo{}, err
	}
	for _, k := range ks {
		if k.Name == name {
			if rec, err := s.o.Store.GetKernel(ctx, name); err == nil {
				k.Manifest = rec.Manifest
			}
			return k, nil
		}
	}
	return KernelInfo{}, failure.New(failure.NotFound, "kernel %q is not installed; `banger kernel list --available` shows what can be pulled", name)
}
