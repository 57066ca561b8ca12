package daemon

import (
	"net/http"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/catalog"
)

// Handlers for kernels and images.

func (d *Daemon) handleListImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := d.store.ListImages(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]api.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, api.Image{Name: img.Name, Dir: img.Dir, SizeBytes: img.SizeBytes, CreatedAt: img.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleBuildImage(w http.ResponseWriter, r *http.Request) {
	es := newEventStream(w)
	img, err := d.catalog.BuildImage(r.Context(), r.PathValue("name"), es.progress())
	if err != nil {
		es.fail(err)
		return
	}
	es.send(api.Event{Type: api.EventResult, Image: &api.Image{Name: img.Name, Dir: img.Dir, SizeBytes: img.SizeBytes, CreatedAt: img.CreatedAt}})
}

func (d *Daemon) handleListKernels(w http.ResponseWriter, r *http.Request) {
	ks, err := d.catalog.Kernels(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]api.Kernel, 0, len(ks))
	for _, k := range ks {
		out = append(out, toAPIKernel(k))
	}
	writeJSON(w, http.StatusOK, out)
}

func toAPIKernel(k catalog.KernelInfo) api.Kernel {
	return api.Kernel{Name: k.Name, Release: k.Release, Package: k.Package, Version: k.Version, Dir: k.Dir, CreatedAt: k.CreatedAt}
}

func (d *Daemon) handlePullKernel(w http.ResponseWriter, r *http.Request) {
	es := newEventStream(w)
	k, err := d.catalog.PullKernel(r.Context(), r.PathValue("name"), es.progress())
	if err != nil {
		es.fail(err)
		return
	}
	out := toAPIKernel(k)
	es.send(api.Event{Type: api.EventResult, Kernel: &out})
}
