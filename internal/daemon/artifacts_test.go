package daemon

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
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
