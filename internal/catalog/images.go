package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/catalog/catalogfile"
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

// VersionInfo describes one version of an image.
type VersionInfo struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	Dir       string    `json:"dir"`
	SizeBytes int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	Current   bool      `json:"current,omitempty"`
	UsedBy    []string  `json:"used_by,omitempty"` // VMs created from it
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
// collects versions no VM uses.
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

// getEntry builds, pulls or downloads a catalog entry as image name, coalesced with any other
// request for the same name; size applies to OCI entries (0: sized to the contents). Unless
// replace, an image that appeared meanwhile is kept.
func (im *Images) getEntry(ctx context.Context, e catalogfile.ImageEntry, name string, size int64, p progress.Func, replace bool) (image.Manifest, error) {
	m, _, err := im.work.Do(ctx, name, p, func(ctx context.Context, p progress.Func) (image.Manifest, error) {
		if !replace {
			if _, err := im.installedImage(ctx, name); err == nil {
				return image.Manifest{}, nil
			}
		}
		switch e.Kind {
		case image.SourceRecipe:
			return im.buildRecipe(ctx, e, name, p)
		case image.SourceOCI:
			return im.pullOCI(ctx, PullRequest{Ref: e.OCI, Name: name, Size: size, Kernel: e.Kernel}, p)
		default:
			path, err := im.fetchBundle(ctx, *e.Bundle, p)
			if err != nil {
				return image.Manifest{}, fmt.Errorf("image %s: %w", name, err)
			}
			return im.importBundle(ctx, path, name, "bundle:"+e.Bundle.URL, e.Kernel, p)
		}
	})
	return m, err
}

// Build builds the named image from its recipe as a new version. VMs created from an
// older version keep booting it.
func (im *Images) Build(ctx context.Context, name string, p progress.Func) (ImageInfo, error) {
	cat, err := im.catalog()
	if err != nil {
		return ImageInfo{}, err
	}
	e, ok := cat.Image(name)
	if !ok || e.Kind != image.SourceRecipe {
		return ImageInfo{}, failure.New(failure.NotFound, "no recipe builds image %q (images built from recipes: %s)", name, strings.Join(recipeImages(cat), ", "))
	}
	if _, err := im.getEntry(ctx, e, name, 0, p, true); err != nil {
		return ImageInfo{}, err
	}
	return im.Show(ctx, name)
}

func recipeImages(c catalogfile.Catalog) []string {
	var out []string
	for _, e := range c.Images {
		if e.Kind == image.SourceRecipe {
			out = append(out, e.Name)
		}
	}
	return out
}

func (im *Images) buildRecipe(ctx context.Context, e catalogfile.ImageEntry, name string, p progress.Func) (image.Manifest, error) {
	recipe, err := image.BuiltinRecipe(e.Recipe)
	if err != nil {
		return image.Manifest{}, failure.Wrap(failure.NotFound, err)
	}
	staged, err := im.stagingPath(name, "build")
	if err != nil {
		return image.Manifest{}, err
	}
	if err := os.MkdirAll(im.o.Layout.TmpDir(), 0o700); err != nil {
		return image.Manifest{}, err
	}
	mirror := im.mirror()
	p.Stage(image.StageBootstrap, fmt.Sprintf("building image %s from Debian packages (%s)", name, mirror))
	m, err := image.Build(ctx, image.BuildOptions{Recipe: recipe, Name: name, Mirror: mirror, Dest: staged, WorkDir: im.o.Layout.TmpDir(), Progress: p})
	if err != nil {
		return image.Manifest{}, fmt.Errorf("build image %s: %w", name, err)
	}
	m.Kernel = e.Kernel
	if err := image.WriteManifest(staged, m); err != nil {
		os.RemoveAll(staged)
		return image.Manifest{}, err
	}
	im.o.Log.Info("built image", "name", name, "size", m.RootfsSize, "seconds", m.BuildSeconds)
	return im.publish(ctx, m, staged, "recipe:"+e.Recipe)
}

// stagingPath returns a path (not yet existing) to build a new version of an image in, next to
// where its versions live.
func (im *Images) stagingPath(name, what string) (string, error) {
	dir := im.imageDir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(dir, "."+what+"-"+randomSuffix()), nil
}

// publish moves a staged image directory to images/<name>/<version>, makes it the image's
// current version and collects versions no VM uses any more.
func (im *Images) publish(ctx context.Context, m image.Manifest, staged, source string) (image.Manifest, error) {
	final := filepath.Join(im.imageDir(m.Name), m.Version())
	if _, err := os.Stat(final); err == nil {
		os.RemoveAll(staged) // the same contents are already here
	} else if err := os.Rename(staged, final); err != nil {
		os.RemoveAll(staged)
		return image.Manifest{}, fmt.Errorf("publish image %s: %w", m.Name, err)
	}
	raw, _ := json.Marshal(m)
	rec := store.Image{Name: m.Name, Version: m.Version(), Dir: final, Manifest: raw, SizeBytes: m.RootfsSize, Kernel: m.Kernel, Source: source}
	if err := im.o.Store.PutImage(ctx, &rec); err != nil {
		return image.Manifest{}, fmt.Errorf("record image %s: %w", m.Name, err)
	}
	if _, err := im.CollectVersions(ctx, false); err != nil {
		im.o.Log.Warn("collect unused image versions", "err", err)
	}
	return m, nil
}

// PullRequest asks for an image: a catalog name or an OCI reference.
type PullRequest struct {
	Ref    string
	Name   string // the image's name; derived from Ref when empty
	Size   int64  // rootfs size in bytes; 0 sizes it to the contents
	Kernel string // the image's default kernel
}

// Pull gets an image: a catalog entry by name (built, pulled or downloaded as the entry
// says), or any OCI image source (oci.ParseSource: a registry reference, an OCI layout
// directory, a docker-archive file), pulled for linux/amd64 and turned into an ext4 image. It
// becomes a new version of the image; concurrent pulls of the same image share one run.
func (im *Images) Pull(ctx context.Context, req PullRequest, p progress.Func) (ImageInfo, error) {
	cat, err := im.catalog()
	if err != nil {
		return ImageInfo{}, err
	}
	if e, ok := cat.Image(req.Ref); ok {
		name := req.Name
		if name == "" {
			name = e.Name
		}
		if req.Kernel != "" {
			e.Kernel = req.Kernel
		}
		if req.Size != 0 && e.Kind != image.SourceOCI {
			return ImageInfo{}, failure.New(failure.Invalid, "--size applies to OCI images; %s is a %s", e.Name, e.Kind)
		}
		if _, err := im.getEntry(ctx, e, name, req.Size, p, true); err != nil {
			return ImageInfo{}, err
		}
		return im.Show(ctx, name)
	}
	src, err := oci.ParseSource(req.Ref)
	if err != nil {
		return ImageInfo{}, failure.New(failure.Invalid, "%q is neither a catalog image (%s) nor an OCI image source: %v", req.Ref, cat.ImageNames(), err)
	}
	if req.Name == "" {
		req.Name = NameFromReference(src.NameParts())
		// A derived name never replaces an image of another origin (pulling debian:bookworm
		// must not replace the debian-bookworm built from the recipe).
		if cur, err := im.o.Store.GetImage(ctx, req.Name); err == nil && !strings.HasPrefix(cur.Source, "oci:"+src.String()+"@") {
			return ImageInfo{}, failure.New(failure.Conflict, "an image named %q already exists (%s); give this one another name with --name", req.Name, describeSource(cur.Source))
		}
	} else if !catalogfile.ValidName(req.Name) {
		return ImageInfo{}, failure.New(failure.Invalid, "image name %q must be lower-case letters, digits, '.' and '-'", req.Name)
	}
	if _, _, err := im.work.Do(ctx, req.Name, p, func(ctx context.Context, p progress.Func) (image.Manifest, error) {
		return im.pullOCI(ctx, req, p)
	}); err != nil {
		return ImageInfo{}, err
	}
	return im.Show(ctx, req.Name)
}

func describeSource(src string) string {
	switch {
	case src == "":
		return "built from a recipe"
	case strings.HasPrefix(src, "recipe:"):
		return "built from recipe " + strings.TrimPrefix(src, "recipe:")
	case strings.HasPrefix(src, "oci:"):
		return "pulled from " + strings.TrimPrefix(src, "oci:")
	}
	return src
}

var nameJunk = regexp.MustCompile(`[^a-z0-9.-]+`)

// NameFromReference derives an image name from an OCI repository and tag or digest:
// "library/debian" "bookworm" → "debian-bookworm"; "test/busybox" "latest" → "busybox".
func NameFromReference(repo, id string) string {
	name := repo[strings.LastIndex(repo, "/")+1:]
	switch {
	case strings.HasPrefix(id, "sha256:"):
		name += "-" + id[7:19]
	case id != "" && id != "latest":
		name += "-" + id
	}
	name = strings.Trim(nameJunk.ReplaceAllString(strings.ToLower(name), "-"), "-.")
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-.")
	}
	if name == "" {
		name = "image"
	}
	return name
}

func (im *Images) pullOCI(ctx context.Context, req PullRequest, p progress.Func) (image.Manifest, error) {
	if err := os.MkdirAll(im.o.Layout.TmpDir(), 0o700); err != nil {
		return image.Manifest{}, err
	}
	tree, err := os.MkdirTemp(im.o.Layout.TmpDir(), "oci-"+req.Name+"-tree-")
	if err != nil {
		return image.Manifest{}, err
	}
	defer os.RemoveAll(tree)
	if err := os.Chmod(tree, 0o755); err != nil { // becomes the image's /
		return image.Manifest{}, err
	}
	started := time.Now()
	// The image may unpack to no more than the disk it is asked to fit (when a size is given;
	// oci's default otherwise).
	res, err := oci.Pull(ctx, oci.PullOptions{Ref: req.Ref, Cache: im.ociCache(), Tree: tree, Progress: p, Transport: im.o.OCITransport,
		Limits: oci.Limits{Bytes: req.Size}})
	if err != nil {
		return image.Manifest{}, fmt.Errorf("pull %s: %w", req.Ref, err)
	}
	pulled := time.Since(started)
	var layers []string
	for _, l := range res.Layers {
		layers = append(layers, l.Digest)
	}
	m := image.Manifest{
		Source: image.SourceOCI, Kernel: req.Kernel,
		OCI: &image.OCIOrigin{Reference: res.Reference, Digest: res.Digest, Layers: layers, Env: res.Config.Env,
			Entrypoint: res.Config.Entrypoint, Cmd: res.Config.Cmd, WorkingDir: res.Config.WorkingDir, User: res.Config.User},
		StageSeconds: map[string]float64{"oci.pull": round3(pulled.Seconds())},
	}
	st := res.Stats
	m.Notes = append(m.Notes, fmt.Sprintf("flattened %d layers: %d files, %d directories, %d symlinks, %d hard links; %d whiteouts, %d opaque directories applied",
		len(res.Layers), st.Files, st.Dirs, st.Symlinks, st.Hardlinks, st.Whiteouts, st.OpaqueDirs))
	if st.DevicesSkipped > 0 {
		m.Notes = append(m.Notes, fmt.Sprintf("left out %d device nodes under /dev (the guest mounts a devtmpfs there)", st.DevicesSkipped))
	}
	if st.XattrsSkipped > 0 {
		m.Notes = append(m.Notes, fmt.Sprintf("left out %d extended attributes the file system refused", st.XattrsSkipped))
	}
	staged, err := im.stagingPath(req.Name, "pull")
	if err != nil {
		return image.Manifest{}, err
	}
	t0 := time.Now()
	m, err = image.FromTree(ctx, image.TreeOptions{Tree: tree, Dest: staged, Name: req.Name, Size: req.Size, Manifest: m, Progress: p})
	if err != nil {
		return image.Manifest{}, err
	}
	m.StageSeconds["image.mkfs"] = round3(time.Since(t0).Seconds())
	m.BuildSeconds = round3(time.Since(started).Seconds())
	if err := image.WriteManifest(staged, m); err != nil {
		os.RemoveAll(staged)
		return image.Manifest{}, err
	}
	im.o.Log.Info("pulled image", "name", req.Name, "ref", res.Reference, "digest", res.Digest, "downloaded", res.Downloaded,
		"pull_seconds", pulled.Seconds(), "total_seconds", m.BuildSeconds)
	return im.publish(ctx, m, staged, "oci:"+res.Reference+"@"+res.Digest)
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// RegisterRequest asks to adopt a host ext4 file as an image.
type RegisterRequest struct {
	Name   string
	Rootfs string
	Kernel string
}

// Register adopts a host ext4 file (copied, sparse) as a new version of an image.
func (im *Images) Register(ctx context.Context, req RegisterRequest, p progress.Func) (ImageInfo, error) {
	if !catalogfile.ValidName(req.Name) {
		return ImageInfo{}, failure.New(failure.Invalid, "image name %q must be lower-case letters, digits, '.' and '-'", req.Name)
	}
	abs, err := filepath.Abs(req.Rootfs)
	if err != nil {
		return ImageInfo{}, err
	}
	_, _, err = im.work.Do(ctx, req.Name, p, func(ctx context.Context, p progress.Func) (image.Manifest, error) {
		staged, err := im.stagingPath(req.Name, "register")
		if err != nil {
			return image.Manifest{}, err
		}
		m, err := image.Register(ctx, image.RegisterOptions{Rootfs: abs, Dest: staged, Name: req.Name, Kernel: req.Kernel, Progress: p})
		if err != nil {
			return image.Manifest{}, failure.Default(failure.Invalid, err)
		}
		return im.publish(ctx, m, staged, "register:"+abs)
	})
	if err != nil {
		return ImageInfo{}, err
	}
	return im.Show(ctx, req.Name)
}

// Export writes an image (its current version, or "name@version") as a bundle at path.
func (im *Images) Export(ctx context.Context, ref, path string, p progress.Func) (bundle.Result, error) {
	name, version := SplitRef(ref)
	dir := ""
	if version == "" {
		rec, err := im.o.Store.GetImage(ctx, name)
		if err != nil {
			return bundle.Result{}, err
		}
		dir = rec.Dir
	} else {
		v, err := im.o.Store.GetImageVersion(ctx, name, version)
		if err != nil {
			return bundle.Result{}, err
		}
		dir = v.Dir
	}
	if !filepath.IsAbs(path) {
		return bundle.Result{}, failure.New(failure.Invalid, "export path %q must be absolute", path)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return bundle.Result{}, failure.New(failure.Invalid, "cannot write %s: its directory does not exist", path)
	}
	started := time.Now()
	res, err := image.Export(ctx, dir, path, p)
	if err != nil {
		return bundle.Result{}, fmt.Errorf("export image %s: %w", ref, err)
	}
	im.o.Log.Info("exported image", "image", ref, "path", path, "bytes", res.Size, "seconds", time.Since(started).Seconds())
	return res, nil
}

// Import installs an image bundle file as a new version of the image it holds (or of
// name). The bundle is verified completely before anything is published.
func (im *Images) Import(ctx context.Context, path, name string, p progress.Func) (ImageInfo, error) {
	if name != "" && !catalogfile.ValidName(name) {
		return ImageInfo{}, failure.New(failure.Invalid, "image name %q must be lower-case letters, digits, '.' and '-'", name)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return ImageInfo{}, err
	}
	m, err := im.importBundle(ctx, abs, name, "bundle:"+abs, "", p)
	if err != nil {
		return ImageInfo{}, err
	}
	return im.Show(ctx, m.Name)
}

func (im *Images) importBundle(ctx context.Context, path, name, source, kernelName string, p progress.Func) (image.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return image.Manifest{}, failure.Default(failure.Invalid, err)
	}
	defer f.Close()
	if err := os.MkdirAll(im.o.Layout.ImagesDir(), 0o700); err != nil {
		return image.Manifest{}, err
	}
	started := time.Now()
	var staged string
	m, err := image.Import(ctx, f, im.o.Layout.ImagesDir(), image.ImportOptions{Name: name, Progress: p, Dest: func(m image.Manifest) string {
		staged, _ = im.stagingPath(m.Name, "import")
		return staged
	}})
	if err != nil {
		return image.Manifest{}, failure.Default(failure.Invalid, fmt.Errorf("import %s: %w", path, err))
	}
	if kernelName != "" && m.Kernel == "" {
		m.Kernel = kernelName
		_ = image.WriteManifest(staged, m)
	}
	im.o.Log.Info("imported image", "name", m.Name, "version", m.Version(), "path", path, "seconds", time.Since(started).Seconds())
	return im.publish(ctx, m, staged, source)
}

// Delete removes an image with all its versions. It is refused while any VM, running or
// not, was created from the image: the VM's disk is an overlay on it.
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

// versionInfos lists every image version with the VMs created from it.
func (im *Images) versionInfos(ctx context.Context) ([]VersionInfo, error) {
	versions, err := im.o.Store.ImageVersions(ctx, "")
	if err != nil {
		return nil, err
	}
	vms, err := im.o.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	images, err := im.o.Store.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	current := map[string]string{}
	for _, img := range images {
		current[img.Name] = img.Version
	}
	out := make([]VersionInfo, 0, len(versions))
	for _, v := range versions {
		info := VersionInfo{Name: v.Name, Version: v.Version, Dir: v.Dir, SizeBytes: v.SizeBytes, CreatedAt: v.CreatedAt, Current: current[v.Name] == v.Version}
		for _, vm := range vms {
			n, ver := SplitRef(vm.Image)
			if n == v.Name && (ver == v.Version || ver == "" && info.Current) {
				info.UsedBy = append(info.UsedBy, vm.Name)
			}
		}
		sort.Strings(info.UsedBy)
		out = append(out, info)
	}
	return out, nil
}

// CollectVersions removes image versions that are not current, that no VM was created from
// and that were not just handed out to a VM being created, and returns them. With dryRun it
// only says which.
func (im *Images) CollectVersions(ctx context.Context, dryRun bool) ([]VersionInfo, error) {
	versions, err := im.versionInfos(ctx)
	if err != nil {
		return nil, err
	}
	var removed []VersionInfo
	var errs []error
	for _, v := range versions {
		if v.Current || len(v.UsedBy) > 0 || im.leased(v.Name+"@"+v.Version) {
			continue
		}
		if !dryRun {
			if err := im.o.Store.DeleteImageVersion(ctx, v.Name, v.Version); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := os.RemoveAll(v.Dir); err != nil {
				errs = append(errs, err)
			}
			im.o.Log.Info("removed unused image version", "image", v.Name, "version", v.Version)
		}
		removed = append(removed, v)
	}
	return removed, errors.Join(errs...)
}

// vmsUsing returns the names of the VMs whose record matches.
func (im *Images) vmsUsing(ctx context.Context, match func(store.VM) bool) ([]string, error) {
	vms, err := im.o.Store.ListVMs(ctx)
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

// adoptLegacyImages moves image directories of the layout before versions
// (images/<name>/rootfs.ext4) to images/<name>/<version>/. A VM running on one keeps its
// open file; the rename does not disturb it.
func (im *Images) adoptLegacyImages(ctx context.Context) error {
	versions, err := im.o.Store.ImageVersions(ctx, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range versions {
		legacy := filepath.Join(im.o.Layout.ImagesDir(), v.Name)
		if filepath.Clean(v.Dir) != legacy {
			continue
		}
		if _, err := os.Stat(filepath.Join(legacy, image.RootfsFile)); err != nil {
			continue
		}
		aside := filepath.Join(im.o.Layout.ImagesDir(), "."+v.Name+".old-"+randomSuffix())
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
		img, err := im.o.Store.GetImage(ctx, v.Name)
		if err == nil && img.Version == v.Version {
			img.Dir = final
			err = im.o.Store.PutImage(ctx, &img)
		} else if err == nil {
			err = im.o.Store.PutImageVersion(ctx, &v)
		}
		if err != nil {
			errs = append(errs, err)
		}
		im.o.Log.Info("moved image into its version directory", "image", v.Name, "version", v.Version)
	}
	return errors.Join(errs...)
}
