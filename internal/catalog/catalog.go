// Package catalog owns what VMs boot: kernels (pulled from Debian's archive) and root images
// (built from a recipe), each fetched or built on first use, recorded in the store, and
// coalesced so that concurrent requests for the same one share a single download or build.
package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/flight"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/kernel"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/store"
)

// Kernel is a bootable kernel: the ELF vmlinux and the initramfs built for this agent.
type Kernel struct {
	Name    string
	Release string
	Vmlinux string
	Initrd  string
}

// Image is a root filesystem image.
type Image struct {
	Name   string
	Rootfs string
}

// KernelInfo describes a pulled kernel for listings.
type KernelInfo struct {
	Name      string    `json:"name"`
	Release   string    `json:"release"`
	Package   string    `json:"package"`
	Version   string    `json:"version"`
	Dir       string    `json:"dir"`
	CreatedAt time.Time `json:"created_at"`
}

// Options configure a Service.
type Options struct {
	Store     *store.Store
	Layout    paths.Layout
	Config    func() (config.Config, error)
	AgentPath string
	Log       *slog.Logger
}

// Service provides kernels and images.
type Service struct {
	o       Options
	kernels flight.Group[kernel.Manifest]
	images  flight.Group[image.Manifest]
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{o: o}
}

func (s *Service) mirror() string {
	if cfg, err := s.o.Config(); err == nil && cfg.DebianMirror != "" {
		return cfg.DebianMirror
	}
	return debian.DefaultMirror("/")
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Kernel returns the named kernel ready to boot, pulling it first if it is not here.
func (s *Service) Kernel(ctx context.Context, name string, p progress.Func) (Kernel, error) {
	m, err := s.installedKernel(ctx, name)
	if err != nil {
		m, err = s.pullKernel(ctx, name, p, false)
		if err != nil {
			return Kernel{}, err
		}
	}
	initrd, err := kernel.EnsureInitramfs(m.Dir, m.Release, s.o.AgentPath)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %s: build initramfs: %w", name, err)
	}
	return Kernel{Name: m.Name, Release: m.Release, Vmlinux: m.VmlinuxPath(), Initrd: initrd}, nil
}

// installedKernel returns the manifest of a pulled kernel whose files are all present.
func (s *Service) installedKernel(ctx context.Context, name string) (kernel.Manifest, error) {
	rec, err := s.o.Store.GetKernel(ctx, name)
	if err != nil {
		return kernel.Manifest{}, err
	}
	m, err := kernel.Load(rec.Dir)
	if err != nil {
		return kernel.Manifest{}, err
	}
	if _, err := os.Stat(m.VmlinuxPath()); err != nil {
		return kernel.Manifest{}, err
	}
	return m, nil
}

// PullKernel downloads the named kernel, replacing an older copy, and returns what it pulled.
func (s *Service) PullKernel(ctx context.Context, name string, p progress.Func) (KernelInfo, error) {
	m, err := s.pullKernel(ctx, name, p, true)
	if err != nil {
		return KernelInfo{}, err
	}
	if _, err := kernel.EnsureInitramfs(m.Dir, m.Release, s.o.AgentPath); err != nil {
		return KernelInfo{}, fmt.Errorf("kernel %s: build initramfs: %w", name, err)
	}
	return KernelInfo{Name: m.Name, Release: m.Release, Package: m.Package, Version: m.Version, Dir: m.Dir, CreatedAt: m.PulledAt}, nil
}

func (s *Service) pullKernel(ctx context.Context, name string, p progress.Func, replace bool) (kernel.Manifest, error) {
	entry, err := kernel.Lookup(name)
	if err != nil {
		return kernel.Manifest{}, failure.Wrap(failure.NotFound, err)
	}
	m, _, err := s.kernels.Do(ctx, name, p, func(ctx context.Context, p progress.Func) (kernel.Manifest, error) {
		if !replace {
			// Another caller may have finished a pull while this one waited to start.
			if m, err := s.installedKernel(ctx, name); err == nil {
				return m, nil
			}
		}
		return s.doPullKernel(ctx, entry, p)
	})
	return m, err
}

func (s *Service) doPullKernel(ctx context.Context, entry kernel.Entry, p progress.Func) (kernel.Manifest, error) {
	dir := s.o.Layout.KernelsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return kernel.Manifest{}, err
	}
	if err := os.MkdirAll(s.o.Layout.DownloadsDir(), 0o700); err != nil {
		return kernel.Manifest{}, err
	}
	mirror := s.mirror()
	archive := &debian.Archive{Mirror: mirror, Suite: entry.Suite, CacheDir: s.o.Layout.DownloadsDir()}
	p.Stage("kernel.resolve", fmt.Sprintf("fetching kernel %s from %s", entry.Name, mirror))
	fresh := filepath.Join(dir, "."+entry.Name+".pull-"+randomSuffix())
	m, err := kernel.Pull(ctx, entry, archive, fresh, p)
	if err != nil {
		return kernel.Manifest{}, fmt.Errorf("pull kernel %s: %w", entry.Name, err)
	}
	// Swap the new kernel into place; a running VM keeps the files it already opened.
	final := filepath.Join(dir, entry.Name)
	old := filepath.Join(dir, "."+entry.Name+".old-"+randomSuffix())
	if err := os.Rename(final, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.RemoveAll(fresh)
		return kernel.Manifest{}, fmt.Errorf("replace kernel %s: %w", entry.Name, err)
	}
	if err := os.Rename(fresh, final); err != nil {
		os.RemoveAll(fresh)
		return kernel.Manifest{}, fmt.Errorf("install kernel %s: %w", entry.Name, err)
	}
	os.RemoveAll(old)
	m.Dir = final
	manifest, _ := json.Marshal(m)
	if err := s.o.Store.PutKernel(ctx, &store.Kernel{Name: entry.Name, Release: m.Release, Dir: final, Manifest: manifest}); err != nil {
		return kernel.Manifest{}, fmt.Errorf("record kernel %s: %w", entry.Name, err)
	}
	s.o.Log.Info("pulled kernel", "name", entry.Name, "release", m.Release, "package", m.Package, "version", m.Version)
	return m, nil
}

// Kernels lists pulled kernels.
func (s *Service) Kernels(ctx context.Context) ([]KernelInfo, error) {
	recs, err := s.o.Store.ListKernels(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]KernelInfo, 0, len(recs))
	for _, r := range recs {
		ki := KernelInfo{Name: r.Name, Release: r.Release, Dir: r.Dir, CreatedAt: r.CreatedAt}
		var m kernel.Manifest
		if json.Unmarshal(r.Manifest, &m) == nil {
			ki.Package, ki.Version = m.Package, m.Version
		}
		out = append(out, ki)
	}
	return out, nil
}

// Image returns the named image, building it first from its recipe if it is not here.
func (s *Service) Image(ctx context.Context, name string, p progress.Func) (Image, error) {
	if img, err := s.installedImage(ctx, name); err == nil {
		return img, nil
	}
	if err := s.build(ctx, name, p, false); err != nil {
		return Image{}, err
	}
	return s.installedImage(ctx, name)
}

// BuildImage builds the named image from its recipe, replacing an installed one. VMs that run
// on the old image keep it: the new one is built aside and swapped in.
func (s *Service) BuildImage(ctx context.Context, name string, p progress.Func) (ImageInfo, error) {
	if err := s.build(ctx, name, p, true); err != nil {
		return ImageInfo{}, err
	}
	rec, err := s.o.Store.GetImage(ctx, name)
	if err != nil {
		return ImageInfo{}, err
	}
	return ImageInfo{Name: rec.Name, Dir: rec.Dir, SizeBytes: rec.SizeBytes, CreatedAt: rec.CreatedAt}, nil
}

// ImageInfo describes an installed image for listings.
type ImageInfo struct {
	Name      string
	Dir       string
	SizeBytes int64
	CreatedAt time.Time
}

func (s *Service) build(ctx context.Context, name string, p progress.Func, replace bool) error {
	recipe, err := image.BuiltinRecipe(name)
	if err != nil {
		return failure.New(failure.NotFound, "image %q is not installed and there is no recipe for it (buildable: %s)", name, strings.Join(image.BuiltinRecipes(), ", "))
	}
	_, _, err = s.images.Do(ctx, name, p, func(ctx context.Context, p progress.Func) (image.Manifest, error) {
		if !replace {
			// Another caller may have finished the build while this one waited to start.
			if _, err := s.installedImage(ctx, name); err == nil {
				return image.Manifest{}, nil
			}
		}
		return s.buildImage(ctx, recipe, name, p)
	})
	return err
}

func (s *Service) installedImage(ctx context.Context, name string) (Image, error) {
	rec, err := s.o.Store.GetImage(ctx, name)
	if err != nil {
		return Image{}, err
	}
	rootfs := filepath.Join(rec.Dir, image.RootfsFile)
	if _, err := os.Stat(rootfs); err != nil {
		return Image{}, err
	}
	return Image{Name: name, Rootfs: rootfs}, nil
}

func (s *Service) buildImage(ctx context.Context, recipe image.Recipe, name string, p progress.Func) (image.Manifest, error) {
	dir := s.o.Layout.ImagesDir()
	for _, d := range []string{dir, s.o.Layout.TmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return image.Manifest{}, err
		}
	}
	mirror := s.mirror()
	p.Stage(image.StageBootstrap, fmt.Sprintf("building image %s from Debian packages (%s)", name, mirror))
	fresh := filepath.Join(dir, "."+name+".build-"+randomSuffix())
	m, err := image.Build(ctx, image.BuildOptions{Recipe: recipe, Name: name, Mirror: mirror, Dest: fresh, WorkDir: s.o.Layout.TmpDir(), Progress: p})
	if err != nil {
		return image.Manifest{}, fmt.Errorf("build image %s: %w", name, err)
	}
	// Swap it into place. A running VM keeps the old file open (its inode lives on until the
	// VM stops), so replacing an image never disturbs running VMs.
	final := filepath.Join(dir, name)
	old := filepath.Join(dir, "."+name+".old-"+randomSuffix())
	if err := os.Rename(final, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.RemoveAll(fresh)
		return image.Manifest{}, fmt.Errorf("replace image %s: %w", name, err)
	}
	if err := os.Rename(fresh, final); err != nil {
		os.RemoveAll(fresh)
		return image.Manifest{}, fmt.Errorf("install image %s: %w", name, err)
	}
	os.RemoveAll(old)
	manifest, _ := json.Marshal(m)
	if err := s.o.Store.PutImage(ctx, &store.Image{Name: name, Version: m.RootfsSHA256[:12], Dir: final, Manifest: manifest, SizeBytes: m.RootfsSize}); err != nil {
		return image.Manifest{}, fmt.Errorf("record image %s: %w", name, err)
	}
	s.o.Log.Info("built image", "name", name, "size", m.RootfsSize, "seconds", m.BuildSeconds)
	return m, nil
}

// Cleanup removes what interrupted pulls and builds left behind: staging directories next to
// kernels and images, image build trees (with any mounts inside them detached first), and
// build logs older than a day. The daemon calls it at
// start, before any pull or build can run.
func (s *Service) Cleanup() {
	for _, dir := range []string{s.o.Layout.KernelsDir(), s.o.Layout.ImagesDir()} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			n := e.Name()
			if strings.HasPrefix(n, ".") && (strings.Contains(n, ".pull-") || strings.Contains(n, ".build-") || strings.Contains(n, ".old-") || strings.Contains(n, ".staging-")) {
				s.o.Log.Info("removing leftover of an interrupted pull or build", "path", filepath.Join(dir, n))
				_ = os.RemoveAll(filepath.Join(dir, n))
			}
		}
	}
	if err := image.RemoveLeftovers(s.o.Layout.TmpDir(), 24*time.Hour); err != nil {
		s.o.Log.Warn("remove image build leftovers", "err", err)
	}
}
