package daemon

import (
	"context"
	"net/http"
	"path/filepath"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/catalog"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/progress"
)

// Handlers for kernels and images. Long work (pull, build, import, export) runs as an
// operation that goes on when its client leaves: coalesced pulls may have other waiters, and
// a half-done pull is undone by its own staging anyway.

func toAPIImage(img catalog.ImageInfo) api.Image {
	out := api.Image{Name: img.Name, Version: img.Version, Dir: img.Dir, SizeBytes: img.SizeBytes, Kernel: img.Kernel,
		Source: img.Source, CreatedAt: img.CreatedAt, Manifest: img.Manifest}
	for _, v := range img.Versions {
		out.Versions = append(out.Versions, toAPIVersion(v))
	}
	return out
}

func toAPIVersion(v catalog.VersionInfo) api.ImageVersion {
	return api.ImageVersion{Version: v.Version, Dir: v.Dir, SizeBytes: v.SizeBytes, CreatedAt: v.CreatedAt, Current: v.Current, UsedBy: v.UsedBy,
		Snapshots: v.Snapshots}
}

func toAPIKernel(k catalog.KernelInfo) api.Kernel {
	return api.Kernel{Name: k.Name, Release: k.Release, Source: k.Source, Package: k.Package, Version: k.Version, Dir: k.Dir,
		Modules: k.Modules, Initrd: k.Initrd, UsedBy: k.UsedBy, Snapshots: k.Snapshots,
		CreatedAt: k.CreatedAt, Manifest: k.Manifest}
}

func toAPIBundle(b bundle.Result) *api.Bundle {
	return &api.Bundle{Path: b.Path, Size: b.Size, SHA256: b.SHA256}
}

// writeOne writes v as the API shows it, or err.
func writeOne[T, A any](w http.ResponseWriter, v T, err error, toAPI func(T) A) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toAPI(v))
}

// writeList writes vs as the API shows them (none as []), or err.
func writeList[T, A any](w http.ResponseWriter, vs []T, err error, toAPI func(T) A) {
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]A, 0, len(vs))
	for _, v := range vs {
		out = append(out, toAPI(v))
	}
	writeJSON(w, http.StatusOK, out)
}

// resultOp runs fn as an operation whose result event result makes from what fn returns.
func resultOp[T any](d *Daemon, w http.ResponseWriter, r *http.Request, kind, target string,
	fn func(ctx context.Context, op *operation) (T, error), result func(T) api.Event) {
	d.runOp(w, r, kind, target, false, func(ctx context.Context, op *operation) {
		v, err := fn(ctx, op)
		if err != nil {
			op.fail(err)
			return
		}
		op.publish(result(v))
	})
}

func imageResult(img catalog.ImageInfo) api.Event {
	out := toAPIImage(img)
	return api.Event{Type: api.EventResult, Image: &out}
}

func kernelResult(k catalog.KernelInfo) api.Event {
	out := toAPIKernel(k)
	return api.Event{Type: api.EventResult, Kernel: &out}
}

func bundleResult(b bundle.Result) api.Event {
	return api.Event{Type: api.EventResult, Bundle: toAPIBundle(b)}
}

// exportOp runs the export of the image or kernel named in the path to the request's output.
func (d *Daemon) exportOp(w http.ResponseWriter, r *http.Request, kind string,
	export func(ctx context.Context, name, path string, p progress.Func) (bundle.Result, error)) {
	name := r.PathValue("name")
	var req api.ExportRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := absolute("output", req.Path); err != nil {
		writeError(w, err)
		return
	}
	resultOp(d, w, r, kind, name, func(ctx context.Context, op *operation) (bundle.Result, error) {
		return export(ctx, name, req.Path, op.progress())
	}, bundleResult)
}

func (d *Daemon) handleListImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := d.catalog.Images.List(r.Context())
	writeList(w, imgs, err, toAPIImage)
}

func (d *Daemon) handleShowImage(w http.ResponseWriter, r *http.Request) {
	img, err := d.catalog.Images.Show(r.Context(), r.PathValue("name"))
	writeOne(w, img, err, toAPIImage)
}

func (d *Daemon) handleDeleteImage(w http.ResponseWriter, r *http.Request) {
	img, err := d.catalog.Images.Delete(context.WithoutCancel(r.Context()), r.PathValue("name"))
	writeOne(w, img, err, toAPIImage)
}

func (d *Daemon) handleBuildImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	resultOp(d, w, r, "image.build", name, func(ctx context.Context, op *operation) (catalog.ImageInfo, error) {
		return d.catalog.Images.Build(ctx, name, op.progress())
	}, imageResult)
}

func (d *Daemon) handlePullImage(w http.ResponseWriter, r *http.Request) {
	var req api.ImagePullRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	target := req.Name
	if target == "" {
		target = req.Ref
	}
	resultOp(d, w, r, "image.pull", target, func(ctx context.Context, op *operation) (catalog.ImageInfo, error) {
		return d.catalog.Images.Pull(ctx, catalog.PullRequest{Ref: req.Ref, Name: req.Name, Size: req.SizeBytes, Kernel: req.Kernel}, op.progress())
	}, imageResult)
}

func (d *Daemon) handleRegisterImage(w http.ResponseWriter, r *http.Request) {
	var req api.ImageRegisterRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := absolute("rootfs", req.Rootfs); err != nil {
		writeError(w, err)
		return
	}
	resultOp(d, w, r, "image.register", req.Name, func(ctx context.Context, op *operation) (catalog.ImageInfo, error) {
		return d.catalog.Images.Register(ctx, catalog.RegisterRequest{Name: req.Name, Rootfs: req.Rootfs, Kernel: req.Kernel}, op.progress())
	}, imageResult)
}

func (d *Daemon) handleImportImage(w http.ResponseWriter, r *http.Request) {
	var req api.ImageImportRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := absolute("bundle", req.Path); err != nil {
		writeError(w, err)
		return
	}
	resultOp(d, w, r, "image.import", req.Path, func(ctx context.Context, op *operation) (catalog.ImageInfo, error) {
		return d.catalog.Images.Import(ctx, req.Path, req.Name, op.progress())
	}, imageResult)
}

func (d *Daemon) handleExportImage(w http.ResponseWriter, r *http.Request) {
	d.exportOp(w, r, "image.export", d.catalog.Images.Export)
}

func (d *Daemon) handlePruneImageCache(w http.ResponseWriter, r *http.Request) {
	var req api.PruneRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	res, err := d.catalog.PruneCache(context.WithoutCancel(r.Context()), req.DryRun)
	if err != nil {
		writeError(w, err)
		return
	}
	out := api.PruneResult{DryRun: res.DryRun, Freed: res.Freed, Layers: []api.CachedFile{}, Bundles: []api.CachedFile{}, Versions: []api.ImageVersion{}}
	for _, b := range res.Layers {
		out.Layers = append(out.Layers, api.CachedFile{Name: b.Digest, Size: b.Size})
	}
	for _, b := range res.Bundles {
		out.Bundles = append(out.Bundles, api.CachedFile{Name: b.Path, Size: b.Size})
	}
	for _, v := range res.Versions {
		av := toAPIVersion(v)
		av.Version = v.Name + "@" + v.Version
		out.Versions = append(out.Versions, av)
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleCatalog(w http.ResponseWriter, r *http.Request) {
	cat, err := d.catalog.Catalog()
	if err != nil {
		writeError(w, err)
		return
	}
	imgs, err := d.catalog.Images.List(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	ks, err := d.catalog.Kernels.List(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	have := map[string]bool{}
	for _, img := range imgs {
		have["image:"+img.Name] = true
	}
	for _, k := range ks {
		have["kernel:"+k.Name] = true
	}
	out := api.Catalog{Images: []api.CatalogEntry{}, Kernels: []api.CatalogEntry{}}
	for _, e := range cat.Images {
		origin := e.Recipe
		switch {
		case e.OCI != "":
			origin = e.OCI
		case e.Bundle != nil:
			origin = e.Bundle.URL
		}
		out.Images = append(out.Images, api.CatalogEntry{Name: e.Name, Description: e.Description, Kind: e.Kind, Origin: origin,
			Kernel: e.Kernel, From: e.From, Installed: have["image:"+e.Name]})
	}
	for _, e := range cat.Kernels {
		origin := ""
		if e.Debian != nil {
			origin = e.Debian.Package + " (Debian " + e.Debian.Suite + ")"
		} else if e.Bundle != nil {
			origin = e.Bundle.URL
		}
		out.Kernels = append(out.Kernels, api.CatalogEntry{Name: e.Name, Description: e.Description, Kind: e.Kind, Origin: origin,
			From: e.From, Installed: have["kernel:"+e.Name]})
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleListKernels(w http.ResponseWriter, r *http.Request) {
	ks, err := d.catalog.Kernels.List(r.Context())
	writeList(w, ks, err, toAPIKernel)
}

func (d *Daemon) handleShowKernel(w http.ResponseWriter, r *http.Request) {
	k, err := d.catalog.Kernels.Show(r.Context(), r.PathValue("name"))
	writeOne(w, k, err, toAPIKernel)
}

func (d *Daemon) handleDeleteKernel(w http.ResponseWriter, r *http.Request) {
	k, err := d.catalog.Kernels.Delete(context.WithoutCancel(r.Context()), r.PathValue("name"))
	writeOne(w, k, err, toAPIKernel)
}

func (d *Daemon) handlePullKernel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	resultOp(d, w, r, "kernel.pull", name, func(ctx context.Context, op *operation) (catalog.KernelInfo, error) {
		return d.catalog.Kernels.Pull(ctx, name, op.progress())
	}, kernelResult)
}

func (d *Daemon) handleImportKernel(w http.ResponseWriter, r *http.Request) {
	var req api.KernelImportRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	for _, p := range [][2]string{{"vmlinux", req.Vmlinux}, {"initrd", req.Initrd}, {"modules", req.Modules}} {
		if p[1] != "" {
			if err := absolute(p[0], p[1]); err != nil {
				writeError(w, err)
				return
			}
		}
	}
	resultOp(d, w, r, "kernel.import", req.Name, func(ctx context.Context, op *operation) (catalog.KernelInfo, error) {
		return d.catalog.Kernels.Import(ctx, catalog.ImportKernelRequest{Name: req.Name, Vmlinux: req.Vmlinux, Initrd: req.Initrd, Modules: req.Modules}, op.progress())
	}, kernelResult)
}

func (d *Daemon) handleExportKernel(w http.ResponseWriter, r *http.Request) {
	d.exportOp(w, r, "kernel.export", d.catalog.Kernels.Export)
}

// absolute refuses relative host paths: the daemon's working directory is not the user's.
func absolute(what, p string) error {
	if p == "" || !filepath.IsAbs(p) {
		return failure.New(failure.Invalid, "%s path %q must be absolute (the CLI makes paths absolute)", what, p)
	}
	return nil
}
