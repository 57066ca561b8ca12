package daemon

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/catalog"
)

func TestArtifactHandlersWithNothingInstalled(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	for _, p := range []string{api.RouteListImages.Path(), api.RouteListKernels.Path()} {
		if code, body := h.raw(t, "GET", p, "", nil); code != 200 || strings.TrimSpace(body) != "[]" {
			t.Errorf("GET %s = %d %q, want 200 []", p, code, body)
		}
	}
	if _, err := h.c.GetImage(ctx, "missing"); apiErr(t, err).Code != "not_found" {
		t.Errorf("show missing image: %v", err)
	}
	if _, err := h.c.DeleteKernel(ctx, "missing"); apiErr(t, err).Code != "not_found" {
		t.Errorf("delete missing kernel: %v", err)
	}
	out := filepath.Join(t.TempDir(), "x.bundle")
	if _, err := h.c.ExportImage(ctx, "missing", out, nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("export missing image: %v", err)
	}
	if _, err := h.c.ExportKernel(ctx, "missing", out, nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("export missing kernel: %v", err)
	}
	if code, body := h.raw(t, "POST", api.RouteExportKernel.Path("missing"), `{"path":"rel.bundle"}`, nil); code != 400 || !strings.Contains(body, `output path \"rel.bundle\" must be absolute`) {
		t.Errorf("relative export path: %d %s", code, body)
	}
}

// The API shows the user snapshots that keep an image version or a kernel beside its VMs.
func TestArtifactsShowTheirSnapshots(t *testing.T) {
	img := toAPIImage(catalog.ImageInfo{Name: "img", Versions: []catalog.VersionInfo{{Version: "v1", UsedBy: []string{"vm1"}, Snapshots: []string{"s1"}}}})
	if v := img.Versions[0]; !slices.Equal(v.UsedBy, []string{"vm1"}) || !slices.Equal(v.Snapshots, []string{"s1"}) {
		t.Errorf("image version = %+v; want used by vm1 and snapshot s1", v)
	}
	k := toAPIKernel(catalog.KernelInfo{Name: "k", UsedBy: []string{"vm1"}, Snapshots: []string{"s1"}})
	if !slices.Equal(k.UsedBy, []string{"vm1"}) || !slices.Equal(k.Snapshots, []string{"s1"}) {
		t.Errorf("kernel = %+v; want used by vm1 and snapshot s1", k)
	}
}
