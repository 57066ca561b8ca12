// Package catalog owns what VMs boot: kernels and root images. It knows them by name from the
// catalog files (package catalogfile: the embedded catalog plus the user's; recipes built
// here, OCI images, bundles pinned by sha256, Debian kernels), fetches or builds them on
// first use, pulls, imports, registers, exports and deletes them, and records them in the
// store. Concurrent requests for the same one share a single download or build; a failed or
// interrupted one leaves nothing published (stage, verify, rename).
//
// Images are versioned by the sha256 of their rootfs: a VM pins the version it was created
// from, every version stays while a VM uses it, and versions no VM uses any more are
// collected.
package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/flight"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/kernel"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
)

// Kernel is a bootable kernel: the ELF vmlinux, the initramfs built for this agent and the
// disk holding its module tree ("" for a kernel without modules).
type Kernel struct {
	Name    string
	Release string
	Vmlinux string
	Initrd  string
	Modules string
}

// Image is one version of a root filesystem image.
type Image struct {
	Name    string
	Version string
	Rootfs  string
	Kernel  string // the kernel its VMs boot unless told otherwise; "" for the default
	// OlderRecipe: built from an earlier form of its built-in recipe (see
	// image.Manifest.FromOlderRecipe); set for the current version only.
	OlderRecipe bool
}

// Ref is what a VM records to boot exactly this version again: "name@version".
func (i Image) Ref() string {
	if i.Version == "" {
		return i.Name
	}
	return i.Name + "@" + i.Version
}

// SplitRef splits "name@version" (or a bare name).
func SplitRef(ref string) (name, version string) {
	name, version, _ = strings.Cut(ref, "@")
	return name, version
}

// Options configure a Service.
type Options struct {
	Store     *store.Store
	Layout    paths.Layout
	Config    func() (config.Config, error)
	AgentPath string
	Log       *slog.Logger
	// Download fetches remote bundles and Debian files; nil is a download.Client with its
	// default timeouts. OCITransport carries registry requests; nil is the default transport.
	Download     *download.Client
	OCITransport http.RoundTripper
}

// Service provides kernels and images.
type Service struct {
	o       Options
	kernels flight.Group[kernel.Manifest]
	modules flight.Group[string]
	images  flight.Group[image.Manifest]

	mu sync.Mutex
	// leases are image versions handed out to VMs being created, by "name@version": the VM's
	// record may not exist yet, so collection leaves them alone for leaseTime.
	leases map[string]time.Time
}

// leaseTime is how long a version handed out by Image is safe from collection without a VM
// recording it.
const leaseTime = 10 * time.Minute

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{o: o, leases: map[string]time.Time{}}
}

func (s *Service) mirror() string {
	if cfg, err := s.o.Config(); err == nil && cfg.DebianMirror != "" {
		return cfg.DebianMirror
	}
	return debian.DefaultMirror("/")
}

// Catalog returns the built-in catalog merged with the user's catalog files.
func (s *Service) Catalog() (catalogfile.Catalog, error) {
	c, err := catalogfile.Load(s.o.Layout.ConfigDir)
	if err != nil {
		return catalogfile.Catalog{}, failure.Default(failure.Invalid, err)
	}
	return c, nil
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// vmsUsing returns the names of the VMs whose record matches.
func (s *Service) vmsUsing(ctx context.Context, match func(store.VM) bool) ([]string, error) {
	vms, err := s.o.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, vm := range vms {
		if match(vm) {
			names = append(names, vm.Name)
		}
	}
	return names, nil
}

// Cleanup removes what interrupted pulls and builds left behind — staging directories next
// to kernels and images (and inside image directories), image build trees (with any mounts
// inside them detached first), build logs older than a day — moves images of the layout
// before versions into version directories, and collects image versions no VM uses. The
// daemon calls it at start, before any pull or build can run.
func (s *Service) Cleanup() {
	isLeftover := func(n string) bool {
		if !strings.HasPrefix(n, ".") {
			return false
		}
		for _, mark := range []string{".pull-", ".build-", ".old-", ".staging-", ".import", ".register-", ".tmp-", ".initrd-"} {
			if strings.Contains(n, mark) {
				return true
			}
		}
		return false
	}
	removeLeftovers := func(dir string) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if isLeftover(e.Name()) {
				s.o.Log.Info("removing leftover of an interrupted pull or build", "path", filepath.Join(dir, e.Name()))
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
	for _, dir := range []string{s.o.Layout.KernelsDir(), s.o.Layout.ImagesDir()} {
		removeLeftovers(dir)
		// Inside each kernel (initramfs, module disk) and image (versions being made).
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				removeLeftovers(filepath.Join(dir, e.Name()))
			}
		}
	}
	if err := image.RemoveLeftovers(s.o.Layout.TmpDir(), 24*time.Hour); err != nil {
		s.o.Log.Warn("remove image build leftovers", "err", err)
	}
	ctx := context.Background()
	if err := s.adoptLegacyImages(ctx); err != nil {
		s.o.Log.Warn("move images into version directories", "err", err)
	}
	if _, err := s.CollectVersions(ctx, false); err != nil {
		s.o.Log.Warn("collect unused image versions", "err", err)
	}
}

// adoptLegacyImages moves image directories of the layout before versions
// (images/<name>/rootfs.ext4) to images/<name>/<version>/. A VM running on one keeps its
// open file; the rename does not disturb it.
func (s *Service) adoptLegacyImages(ctx context.Context) error {
	versions, err := s.o.Store.ImageVersions(ctx, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range versions {
		legacy := filepath.Join(s.o.Layout.ImagesDir(), v.Name)
		if filepath.Clean(v.Dir) != legacy {
			continue
		}
		if _, err := os.Stat(filepath.Join(legacy, image.RootfsFile)); err != nil {
			continue
		}
		aside := filepath.Join(s.o.Layout.ImagesDir(), "."+v.Name+".old-"+randomSuffix())
		final := filepath.Join(legacy, v.Version)
		if err := os.Rename(legacy, aside); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Mkdir(legacy, 0o700); err != nil {
			errs = append(errs, err)
			_ = os.Rename(aside, legacy)
			continue
		}
		if err := os.Rename(aside, final); err != nil {
			errs = append(errs, err)
			continue
		}
		v.Dir = final
		img, err := s.o.Store.GetImage(ctx, v.Name)
		if err == nil && img.Version == v.Version {
			img.Dir = final
			err = s.o.Store.PutImage(ctx, &img)
		} else if err == nil {
			err = s.o.Store.PutImageVersion(ctx, &v)
		}
		if err != nil {
			errs = append(errs, err)
		}
		s.o.Log.Info("moved image into its version directory", "image", v.Name, "version", v.Version)
	}
	return errors.Join(errs...)
}
