package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/flight"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/oci"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/store"
)

// ImageInfo describes an installed image.
type ImageInfo struct {
	Name      string          `json:"name"`
	Version   string          `json:"version"` // the current version
	Dir       string          `json:"dir"`
	SizeBytes int64           `json:"size_bytes"`
	Kernel    string          `json:"kernel,omitempty"`
	Source    string          `json:"source,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	Versions  []VersionInfo   `json:"versions,omitempty"`
	Manifest  json.RawMessage `json:"manifest,omitempty"` // the current version's, in Show
}

// Images owns the installed images: their versions under <state dir>/images/<name>, their
// records, the leases on versions handed out to VMs being created, and the work that makes
// new versions (recipe builds, OCI pulls, bundle imports, registrations), one at a time per
// image name.
type Images struct {
	*sources
	work flight.Group[image.Manifest]

	mu sync.Mutex
	// leases are image versions handed out to VMs being created, by "name@version": the VM's
	// record may not exist yet, so collection leaves them alone for leaseTime.
	leases map[string]time.Time
}

// leaseTime is how long a version handed out by Get is safe from collection without a VM
// recording it.
const leaseTime = 10 * time.Minute

func newImages(src *sources) *Images {
	return &Images{sources: src, leases: map[string]time.Time{}}
}

// cleanup removes what interrupted image work left (staging directories, build trees, old
// build logs), moves images of the layout before versions into version directories and
// collects versions no VM or snapshot uses.
func (im *Images) cleanup() {
	im.removeLeftovers(im.o.Layout.ImagesDir())
	if err := image.RemoveLeftovers(im.o.Layout.TmpDir(), 24*time.Hour); err != nil {
		im.o.Log.Warn("remove image build leftovers", "err", err)
	}
	ctx := context.Background()
	if err := im.adoptLegacyImages(ctx); err != nil {
		im.o.Log.Warn("move images into version directories", "err", err)
	}
	if _, err := im.CollectVersions(ctx, false); err != nil {
		im.o.Log.Warn("collect unused image versions", "err", err)
	}
}

// ociCache is the OCI layer cache: <cache dir>/oci.
func (im *Images) ociCache() oci.Cache {
	return oci.Cache{Dir: filepath.Join(im.o.Layout.CacheDir, "oci")}
}

// imageDir is where an image's versions live: <state dir>/images/<name>.
func (im *Images) imageDir(name string) string { return filepath.Join(im.o.Layout.ImagesDir(), name) }

// Get returns an image ready to boot: "name@version" is exactly that version (what a VM
// recorded); a bare name is the current version, fetched or built from its catalog entry
// first if it is not installed, and leased (safe from collection) until Release or leaseTime
// passes, for the VM being created from it.
func (im *Images) Get(ctx context.Context, ref string, p progress.Func) (Image, error) {
	name, version := SplitRef(ref)
	if version != "" {
		v, err := im.o.Store.GetImageVersion(ctx, name, version)
		if errors.Is(err, failure.NotFound) {
			return Image{}, failure.New(failure.NotFound, "image %s version %s no longer exists (the image was deleted)", name, version)
		}
		if err != nil {
			return Image{}, err
		}
		img := Image{Name: name, Version: version, Rootfs: filepath.Join(v.Dir, image.RootfsFile), Kernel: manifestKernel(v.Manifest)}
		if _, err := os.Stat(img.Rootfs); err != nil {
			return Image{}, fmt.Errorf("image %s: %w", ref, err)
		}
		return img, nil // the VM that recorded it keeps it
	}
	if img, err := im.installedImage(ctx, name); err == nil {
		im.lease(img)
		return img, nil
	}
	cat, err := im.catalog()
	if err != nil {
		return Image{}, err
	}
	e, ok := cat.Image(name)
	if !ok {
		return Image{}, failure.New(failure.NotFound, "image %q is not installed and no catalog has it (available: %s); pull an OCI image with `banger image pull REF --name %s`",
			name, cat.ImageNames(), name)
	}
	if _, err := im.getEntry(ctx, e, e.Name, 0, p, false); err != nil {
		return Image{}, err
	}
	img, err := im.installedImage(ctx, name)
	if err == nil {
		im.lease(img)
	}
	return img, err
}

func manifestKernel(raw json.RawMessage) string {
	var m struct {
		Kernel string `json:"kernel"`
	}
	_ = json.Unmarshal(raw, &m)
	return m.Kernel
}

func (im *Images) lease(img Image) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.leases[img.Ref()] = time.Now()
}

// Release ends the lease Get took on a version for a VM being created: once the VM is
// recorded (or its create undone) the record decides whether the version stays.
func (im *Images) Release(img Image) {
	im.mu.Lock()
	defer im.mu.Unlock()
	delete(im.leases, img.Ref())
}

func (im *Images) leased(ref string) bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	for r, t := range im.leases {
		if time.Since(t) > leaseTime {
			delete(im.leases, r)
		}
	}
	_, ok := im.leases[ref]
	return ok
}

func (im *Images) installedImage(ctx context.Context, name string) (Image, error) {
	rec, err := im.o.Store.GetImage(ctx, name)
	if err != nil {
		return Image{}, err
	}
	rootfs := filepath.Join(rec.Dir, image.RootfsFile)
	if _, err := os.Stat(rootfs); err != nil {
		return Image{}, err
	}
	img := Image{Name: name, Version: rec.Version, Rootfs: rootfs, Kernel: rec.Kernel}
	var m image.Manifest
	if json.Unmarshal(rec.Manifest, &m) == nil {
		img.OlderRecipe = m.FromOlderRecipe()
	}
	return img, nil
}

// Delete removes an image with all its versions and its boot snapshots. It is refused while
// any VM, running or not, was created from the image (the VM's disk is an overlay on it) and
// while user snapshots were taken on it (restoring one needs it).
func (im *Images) Delete(ctx context.Context, name string) (ImageInfo, error) {
	info, err := im.Show(ctx, name)
	if err != nil {
		return ImageInfo{}, err
	}
	users, err := im.vmsUsing(ctx, func(vm store.VM) bool { n, _ := SplitRef(vm.Image); return n == name })
	if err != nil {
		return ImageInfo{}, err
	}
	if len(users) > 0 {
		return ImageInfo{}, failure.New(failure.Conflict, "image %s is used by %s %s (their disks are overlays on it); delete %s first with `banger vm delete %s`",
			name, plural(len(users), "VM", "VMs"), strings.Join(users, ", "), plural(len(users), "it", "them"), strings.Join(users, " "))
	}
	snaps, _, err := im.snapshotsUsing(ofImage(name))
	if err != nil {
		return ImageInfo{}, fmt.Errorf("image %s: %w", name, err)
	}
	if len(snaps) > 0 {
		return ImageInfo{}, usedBySnapshots("image "+name, snaps)
	}
	if _, err := im.dropBootSnapshots("image "+name+" is deleted", ofImage(name)); err != nil {
		return ImageInfo{}, fmt.Errorf("image %s is kept: removing its boot snapshots failed: %w", name, err)
	}
	if err := im.o.Store.DeleteImage(ctx, name); err != nil {
		return ImageInfo{}, err
	}
	if err := os.RemoveAll(im.imageDir(name)); err != nil {
		return info, fmt.Errorf("image %s is forgotten, but removing its files failed: %w", name, err)
	}
	im.o.Log.Info("deleted image", "name", name)
	return info, nil
}

// List lists the installed images with their versions.
func (im *Images) List(ctx context.Context) ([]ImageInfo, error) {
	recs, err := im.o.Store.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	versions, err := im.versionInfos(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ImageInfo, 0, len(recs))
	for _, r := range recs {
		info := ImageInfo{Name: r.Name, Version: r.Version, Dir: r.Dir, SizeBytes: r.SizeBytes, Kernel: r.Kernel, Source: r.Source, CreatedAt: r.CreatedAt}
		for _, v := range versions {
			if v.Name == r.Name {
				v.Current = v.Version == r.Version
				info.Versions = append(info.Versions, v)
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// Show describes one image, with its current manifest.
func (im *Images) Show(ctx context.Context, name string) (ImageInfo, error) {
	name, _ = SplitRef(name)
	imgs, err := im.List(ctx)
	if err != nil {
		return ImageInfo{}, err
	}
	for _, img := range imgs {
		if img.Name == name {
			if rec, err := im.o.Store.GetImage(ctx, name); err == nil {
				img.Manifest = rec.Manifest
			}
			return img, nil
		}
	}
	return ImageInfo{}, failure.New(failure.NotFound, "image %q is not installed; `banger image list` shows the installed ones, `banger image list --available` what can be had", name)
}

// vmsUsing returns the names of the VMs whose record matches.
func (im *Images) vmsUsing(ctx context.Context, match func(store.VM) bool) ([]string, error) {
	vms, err := im.o.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, vm := range vms {
		if match(vm) && !vm.Spare() { // a spare goes with its boot snapshot
			names = append(names, vm.Name)
		}
	}
	return names, nil
}
