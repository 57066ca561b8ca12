package daemon

import (
	"context"
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
	name := r.PathValue("name")
	// A build goes on when its client leaves (coalesced builds may have other waiters).
	d.runOp(w, r, "image.build", name, false, func(ctx context.Context, op *operation) {
		img, err := d.catalog.BuildImage(ctx, name, op.progress())
		if err != nil {
			op.fail(err)
			return
		}
		op.publish(api.Event{Type: api.EventResult, Image: &api.Image{Name: img.Name, Dir: img.Dir, SizeBytes: img.SizeBytes, CreatedAt: img.CreatedAt}})
	})
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
	name := r.PathValue("name")
	d.runOp(w, r, "kernel.pull", name, false, func(ctx context.Context, op *operation) {
		k, err := d.catalog.PullKernel(ctx, name, op.progress())
		if err != nil {
			op.fail(err)
			return
		}
		out := toAPIKernel(k)
		op.publish(api.Event{Type: api.EventResult, Kernel: &out})
	})
}
