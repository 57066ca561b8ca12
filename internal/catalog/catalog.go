// Package catalog owns what VMs boot: kernels and root images. It knows them by name from the
// catalog files (package catalogfile: the embedded catalog plus the user's; recipes built
// here, OCI images, bundles pinned by sha256, Debian kernels), fetches or builds them on
// first use, pulls, imports, registers, exports and deletes them, and records them in the
// store. Concurrent requests for the same one share a single download or build; a failed or
// interrupted one leaves nothing published (stage, verify, rename).
//
// A Service has two halves, each owning its kind of artifact, its directory and its records:
// Images (versions, leases to VMs being created, OCI pulls, recipe builds) and Kernels
// (initramfs and module disks). What they share is the Service's: the catalog files naming
// what can be had, the cache of remote bundles their entries pin, and the options.
//
// Images are versioned by the sha256 of their rootfs: a VM pins the version it was created
// from, every version stays while a VM or a snapshot uses it, and versions nothing uses any
// more are collected. Snapshots (package snapshot) restore onto the image version and kernel
// they were taken with: images and kernels are not deleted under user snapshots, and boot
// snapshots, banger's cache of warm starts, are dropped when what they were made from is
// rebuilt, replaced or deleted (snapshots.go).
package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"

	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/snapshot"
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
	// Snapshots is the store of saved guests, shared with the VM service (one store, one set
	// of locks): the image versions and kernels they were taken with stay while user
	// snapshots use them, and boot snapshots go when what they were made from is replaced or
	// deleted. nil: the store in Layout.SnapshotsDir().
	Snapshots *snapshot.Store
	// BootSnapshotsDropped, when set, is told the names of the boot snapshots the catalog
	// removed (the VM service deletes the spare VMs made from them).
	BootSnapshotsDropped func(names []string)
}

// Service provides kernels and images: Images and Kernels own theirs. What VMs need of it is
// Kernel, Image and Release (vmservice.Artifacts).
type Service struct {
	*sources
	Images  *Images
	Kernels *Kernels
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Snapshots == nil {
		o.Snapshots = snapshot.NewStore(o.Layout.SnapshotsDir())
	}
	src := &sources{o: o}
	return &Service{sources: src, Images: newImages(src), Kernels: &Kernels{sources: src}}
}

// Catalog returns the built-in catalog merged with the user's catalog files.
func (s *Service) Catalog() (catalogfile.Catalog, error) { return s.catalog() }

// Kernel returns the named kernel ready to boot; see Kernels.Get.
func (s *Service) Kernel(ctx context.Context, name string, p progress.Func) (Kernel, error) {
	return s.Kernels.Get(ctx, name, p)
}

// Image returns an image ready to boot, leased to the VM being created; see Images.Get.
func (s *Service) Image(ctx context.Context, ref string, p progress.Func) (Image, error) {
	return s.Images.Get(ctx, ref, p)
}

// Release ends the lease Image took; see Images.Release.
func (s *Service) Release(img Image) { s.Images.Release(img) }

// Cleanup removes what interrupted pulls and builds left behind — staging directories next
// to kernels and images (and inside their directories), image build trees (with any mounts
// inside them detached first), build logs older than a day — moves images of the layout
// before versions into version directories, and collects image versions no VM or snapshot
// uses. The daemon calls it at start, before any pull or build can run.
func (s *Service) Cleanup() {
	s.Kernels.cleanup()
	s.Images.cleanup()
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
