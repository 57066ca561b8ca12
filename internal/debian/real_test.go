package debian

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/download"
)

// realArchive returns an Archive on the host's mirror, or skips the test when running with
// -short or when the mirror cannot be reached.
func realArchive(t *testing.T, suite string) *Archive {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping real-mirror test in -short mode")
	}
	mirror := DefaultMirror("/")
	client := &http.Client{Timeout: 2 * time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, mirror+"/dists/"+suite+"/InRelease", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Skipf("mirror %s unreachable, skipping real-mirror test: %v", mirror, err)
	}
	resp.Body.Close()
	return &Archive{Mirror: mirror, Suite: suite, Client: &download.Client{HTTP: client}, CacheDir: t.TempDir()}
}

func TestRealBookwormInRelease(t *testing.T) {
	a := realArchive(t, "bookworm")
	ctx := context.Background()
	start := time.Now()
	rel, err := a.Release(ctx)
	if err != nil {
		t.Fatalf("verify real bookworm InRelease with the embedded keys: %v", err)
	}
	t.Logf("%s: InRelease for %s/%s dated %s verified in %v, signed by %s",
		a.Mirror, rel.Suite, rel.Codename, rel.Date.Format(time.RFC3339), time.Since(start).Round(time.Millisecond), rel.SignedBy)

	start = time.Now()
	pkg, err := a.ResolveMetapackage(ctx, "linux-image-cloud-amd64")
	if err != nil {
		t.Fatalf("resolve linux-image-cloud-amd64: %v", err)
	}
	t.Logf("Packages index fetched, verified and parsed in %v", time.Since(start).Round(time.Millisecond))
	if !strings.HasPrefix(pkg.Name, "linux-image-6.1.") || !strings.HasSuffix(pkg.Name, "-cloud-amd64") {
		t.Fatalf("linux-image-cloud-amd64 resolved to %q; want linux-image-6.1.*-cloud-amd64", pkg.Name)
	}
	t.Logf("linux-image-cloud-amd64 → %s %s (%s, %d bytes, sha256 %s)", pkg.Name, pkg.Version, pkg.Filename, pkg.Size, pkg.SHA256)
}
