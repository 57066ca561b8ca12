package catalog

// Where images come from and go to: their catalog entries (recipes built here, OCI images,
// remote bundles), OCI references, host ext4 files, and bundle files in and out.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/oci"
	"github.com/banger-dev/banger/internal/progress"
)

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
	// Without root the tree holds files of the user's subordinate ids, which only the user
	// namespace they were made in can remove.
	defer image.RemoveTree(tree)
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
