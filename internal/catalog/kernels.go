package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/durable"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/flight"
	"github.com/banger-dev/banger/internal/kernel"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/snapshot"
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
	Modules   bool            `json:"modules"`             // it has a module tree (and a module disk for VMs)
	Initrd    bool            `json:"initrd"`              // it came with an initramfs of its own
	UsedBy    []string        `json:"used_by,omitempty"`   // VMs that boot it
	Snapshots []string        `json:"snapshots,omitempty"` // user snapshots taken with it (boot ones go with it)
	CreatedAt time.Time       `json:"created_at"`
	Manifest  json.RawMessage `json:"manifest,omitempty"` // in Show
}

// Kernels owns the installed kernels: their directories under <state dir>/kernels/<name>,
// their records, and the work that makes them (pulls, imports; one at a time per kernel
// name) and their module disks (one at a time per kernel).
type Kernels struct {
	*sources
	work    flight.Group[kernel.Manifest]
	modules flight.Group[string]
}

// cleanup removes what interrupted kernel pulls and imports left.
func (ks *Kernels) cleanup() { ks.removeLeftovers(ks.o.Layout.KernelsDir()) }

// Get returns the named kernel ready to boot — its initramfs for this agent and its
// module disk made if needed — getting it from its catalog entry first if it is not here.
func (ks *Kernels) Get(ctx context.Context, name string, p progress.Func) (Kernel, error) {
	m, err := ks.installedKernel(ctx, name)
	if err != nil {
		if m, err = ks.getKernel(ctx, name, p, false); err != nil {
			return Kernel{}, err
		}
	}
	initrd, err := m.BootInitramfs(ks.o.AgentPath)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %s: build initramfs: %w", name, err)
	}
	modules, err := ks.modulesDisk(ctx, m, p)
	if err != nil {
		return Kernel{}, err
	}
	return Kernel{Name: m.Name, Release: m.Release, Vmlinux: m.VmlinuxPath(), Initrd: initrd, Modules: modules}, nil
}

// modulesDisk makes the kernel's module disk once, however many VMs start at the same time.
func (ks *Kernels) modulesDisk(ctx context.Context, m kernel.Manifest, p progress.Func) (string, error) {
	if m.ModulesDir == "" {
		return "", nil
	}
	if fi, err := os.Stat(m.ModulesDiskPath()); err == nil && fi.Mode().IsRegular() {
		return m.ModulesDiskPath(), nil
	}
	disk, _, err := ks.modules.Do(ctx, m.Dir, p, func(ctx context.Context, p progress.Func) (string, error) {
		p.Stage("kernel.modules", fmt.Sprintf("packing the modules of %s into a read-only disk", m.Release))
		return kernel.EnsureModulesDisk(ctx, m)
	})
	return disk, err
}

// installedKernel returns the manifest of an installed kernel whose files are all present.
func (ks *Kernels) installedKernel(ctx context.Context, name string) (kernel.Manifest, error) {
	rec, err := ks.o.Store.GetKernel(ctx, name)
	if err != nil {
		return kernel.Manifest{}, err
	}
	return kernel.Load(rec.Dir)
}

// Pull gets the named kernel from its catalog entry, replacing an older copy, and
// returns what it installed.
func (ks *Kernels) Pull(ctx context.Context, name string, p progress.Func) (KernelInfo, error) {
	m, err := ks.getKernel(ctx, name, p, true)
	if err != nil {
		return KernelInfo{}, err
	}
	if _, err := m.BootInitramfs(ks.o.AgentPath); err != nil {
		return KernelInfo{}, fmt.Errorf("kernel %s: build initramfs: %w", name, err)
	}
	if _, err := ks.modulesDisk(ctx, m, p); err != nil {
		return KernelInfo{}, err
	}
	return ks.Show(ctx, name)
}

func (ks *Kernels) getKernel(ctx context.Context, name string, p progress.Func, replace bool) (kernel.Manifest, error) {
	cat, err := ks.catalog()
	if err != nil {
		return kernel.Manifest{}, err
	}
	e, ok := cat.Kernel(name)
	if !ok {
		if _, err := ks.o.Store.GetKernel(ctx, name); err == nil {
			return kernel.Manifest{}, failure.New(failure.Invalid, "kernel %s was imported, not pulled: no catalog has it; import it again with `banger kernel import`", name)
		}
		return kernel.Manifest{}, failure.New(failure.NotFound, "unknown kernel %q; known kernels: %s (or import one with `banger kernel import`)", name, cat.KernelNames())
	}
	m, _, err := ks.work.Do(ctx, name, p, func(ctx context.Context, p progress.Func) (kernel.Manifest, error) {
		if !replace {
			// Another caller may have finished a pull while this one waited to start.
			if m, err := ks.installedKernel(ctx, name); err == nil {
				return m, nil
			}
		}
		return ks.fetchKernel(ctx, e, p)
	})
	return m, err
}

func (ks *Kernels) fetchKernel(ctx context.Context, e catalogfile.KernelEntry, p progress.Func) (kernel.Manifest, error) {
	dir := ks.o.Layout.KernelsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return kernel.Manifest{}, err
	}
	fresh := filepath.Join(dir, "."+e.Name+".pull-"+randomSuffix())
	var m kernel.Manifest
	var err error
	switch e.Kind {
	case kernel.SourceDebian:
		if err := os.MkdirAll(ks.o.Layout.DownloadsDir(), 0o700); err != nil {
			return kernel.Manifest{}, err
		}
		mirror := ks.mirror()
		archive := &debian.Archive{Mirror: mirror, Suite: e.Debian.Suite, CacheDir: ks.o.Layout.DownloadsDir(), Client: ks.o.Download}
		if ks.o.Store != nil {
			archive.History = ks.o.Store // refuse a Release older than one accepted before
		}
		p.Stage(kernel.StageResolve, fmt.Sprintf("fetching kernel %s from %s", e.Name, mirror))
		m, err = kernel.Pull(ctx, kernel.Entry{Name: e.Name, Suite: e.Debian.Suite, Package: e.Debian.Package}, archive, fresh, p)
	default:
		var path string
		if path, err = ks.fetchBundle(ctx, *e.Bundle, p); err == nil {
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
	if err := ks.install(ctx, m, fresh); err != nil {
		return kernel.Manifest{}, err
	}
	ks.o.Log.Info("pulled kernel", "name", e.Name, "release", m.Release, "package", m.Package, "version", m.Version)
	return kernel.Load(filepath.Join(dir, e.Name))
}

// install swaps a staged kernel directory into place, records it and removes the boot
// snapshots of the kernel it replaced. A running VM keeps the files it already opened; a
// stopped one boots the new kernel next time (its disk does not depend on the kernel).
func (ks *Kernels) install(ctx context.Context, m kernel.Manifest, fresh string) error {
	final := filepath.Join(ks.o.Layout.KernelsDir(), m.Name)
	old := filepath.Join(ks.o.Layout.KernelsDir(), "."+m.Name+".old-"+randomSuffix())
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
	if err := ks.o.Store.PutKernel(ctx, &store.Kernel{Name: m.Name, Release: m.Release, Dir: final, Manifest: manifest}); err != nil {
		return fmt.Errorf("record kernel %s: %w", m.Name, err)
	}
	// New VMs boot the new files: no warm start restores the boot snapshots of the old ones.
	if _, err := ks.dropBootSnapshots("kernel "+m.Name+" is replaced", ofKernel(m.Name)); err != nil {
		ks.o.Log.Warn("remove boot snapshots of a replaced kernel", "kernel", m.Name, "err", err)
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

// Import adopts a locally built kernel under a new name; see kernel.Import for what it
// takes and how such a kernel boots banger images.
func (ks *Kernels) Import(ctx context.Context, req ImportKernelRequest, p progress.Func) (KernelInfo, error) {
	if !catalogfile.ValidName(req.Name) {
		return KernelInfo{}, failure.New(failure.Invalid, "kernel name %q must be lower-case letters, digits, '.' and '-'", req.Name)
	}
	if _, err := ks.o.Store.GetKernel(ctx, req.Name); err == nil {
		return KernelInfo{}, failure.New(failure.Conflict, "a kernel named %s exists; remove it first with `banger kernel rm %s`, or choose another name", req.Name, req.Name)
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		a, _ := filepath.Abs(p)
		return a
	}
	_, _, err := ks.work.Do(ctx, req.Name, p, func(ctx context.Context, p progress.Func) (kernel.Manifest, error) {
		if err := os.MkdirAll(ks.o.Layout.KernelsDir(), 0o700); err != nil {
			return kernel.Manifest{}, err
		}
		fresh := filepath.Join(ks.o.Layout.KernelsDir(), "."+req.Name+".pull-"+randomSuffix())
		p.Stage("kernel.import", "importing "+req.Vmlinux)
		m, err := kernel.Import(ctx, kernel.ImportOptions{Name: req.Name, Vmlinux: abs(req.Vmlinux), Initrd: abs(req.Initrd), Modules: abs(req.Modules), Dest: fresh})
		if err != nil {
			return kernel.Manifest{}, failure.Default(failure.Invalid, fmt.Errorf("import kernel %s: %w", req.Name, err))
		}
		if err := ks.install(ctx, m, fresh); err != nil {
			return kernel.Manifest{}, err
		}
		m, err = kernel.Load(filepath.Join(ks.o.Layout.KernelsDir(), req.Name))
		if err != nil {
			return kernel.Manifest{}, err
		}
		if _, err := m.BootInitramfs(ks.o.AgentPath); err != nil {
			return kernel.Manifest{}, fmt.Errorf("kernel %s: build initramfs: %w", req.Name, err)
		}
		if _, err := ks.modulesDisk(ctx, m, p); err != nil {
			return kernel.Manifest{}, err
		}
		return m, nil
	})
	if err != nil {
		return KernelInfo{}, err
	}
	return ks.Show(ctx, req.Name)
}

// Export writes an installed kernel as a bundle at path (for a catalog entry elsewhere).
func (ks *Kernels) Export(ctx context.Context, name, path string, p progress.Func) (bundle.Result, error) {
	m, err := ks.installedKernel(ctx, name)
	if err != nil {
		return bundle.Result{}, err
	}
	if !filepath.IsAbs(path) {
		return bundle.Result{}, failure.New(failure.Invalid, "export path %q must be absolute", path)
	}
	return kernel.ExportBundle(ctx, m, path, p)
}

// Delete removes an installed kernel and its boot snapshots. It is refused while any VM,
// running or not, boots it, and while user snapshots were taken with it.
func (ks *Kernels) Delete(ctx context.Context, name string) (KernelInfo, error) {
	info, err := ks.Show(ctx, name)
	if err != nil {
		return KernelInfo{}, err
	}
	if len(info.UsedBy) > 0 {
		return KernelInfo{}, failure.New(failure.Conflict, "kernel %s is used by %s %s; delete %s first with `banger vm delete %s`",
			name, plural(len(info.UsedBy), "VM", "VMs"), strings.Join(info.UsedBy, ", "), plural(len(info.UsedBy), "it", "them"), strings.Join(info.UsedBy, " "))
	}
	snaps, _, err := ks.snapshotsUsing(ofKernel(name))
	if err != nil {
		return KernelInfo{}, fmt.Errorf("kernel %s: %w", name, err)
	}
	if len(snaps) > 0 {
		return KernelInfo{}, usedBySnapshots("kernel "+name, snaps)
	}
	if _, err := ks.dropBootSnapshots("kernel "+name+" is deleted", ofKernel(name)); err != nil {
		return KernelInfo{}, fmt.Errorf("kernel %s is kept: removing its boot snapshots failed: %w", name, err)
	}
	if err := ks.o.Store.DeleteKernel(ctx, name); err != nil {
		return KernelInfo{}, err
	}
	if err := os.RemoveAll(info.Dir); err != nil {
		return info, fmt.Errorf("kernel %s is forgotten, but removing its files failed: %w", name, err)
	}
	ks.o.Log.Info("deleted kernel", "name", name)
	return info, nil
}

// List lists installed kernels.
func (ks *Kernels) List(ctx context.Context) ([]KernelInfo, error) {
	recs, err := ks.o.Store.ListKernels(ctx)
	if err != nil {
		return nil, err
	}
	vms, err := ks.o.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	snaps, err := ks.o.Snapshots.List()
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
			if vm.Kernel == r.Name && !vm.Spare() { // a spare goes with its boot snapshot
				ki.UsedBy = append(ki.UsedBy, vm.Name)
			}
		}
		for _, sn := range snaps {
			if sn.Kernel == r.Name && sn.Kind == snapshot.User {
				ki.Snapshots = append(ki.Snapshots, sn.Name)
			}
		}
		slices.Sort(ki.Snapshots)
		out = append(out, ki)
	}
	return out, nil
}

// Show describes one installed kernel, with its manifest.
func (ks *Kernels) Show(ctx context.Context, name string) (KernelInfo, error) {
	installed, err := ks.List(ctx)
	if err != nil {
		return KernelInfo{}, err
	}
	for _, k := range installed {
		if k.Name == name {
			if rec, err := ks.o.Store.GetKernel(ctx, name); err == nil {
				k.Manifest = rec.Manifest
			}
			return k, nil
		}
	}
	return KernelInfo{}, failure.New(failure.NotFound, "kernel %q is not installed; `banger kernel list --available` shows what can be pulled", name)
}
