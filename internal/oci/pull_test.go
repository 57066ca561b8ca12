package oci

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/banger-dev/banger/internal/progress"
)

// testRegistry runs go-containerregistry's in-memory registry on loopback and pushes an
// image made of the given layer tarballs.
func testRegistry(t *testing.T, repo, arch string, layers ...[]byte) (ref string, host string) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host = strings.TrimPrefix(srv.URL, "http://")
	pushImage(t, host+"/"+repo, arch, layers...)
	return host + "/" + repo, host
}

func pushImage(t *testing.T, ref, arch string, layers ...[]byte) {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		data := l
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Config.Cmd = []string{"/bin/sh"}
	cfg.Config.Env = []string{"PATH=/bin"}
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuth(authn.Anonymous)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func TestPullCachesLayersAndFlattens(t *testing.T) {
	base := layerTar(t, dir("bin/"), withMode(file("bin/sh", "#!fake"), 0o755), file("etc/os-release", "ID=test\n"), file("etc/old", "o"))
	top := layerTar(t, file("etc/.wh.old", ""), file("etc/motd", "hi"))
	ref, _ := testRegistry(t, "test/small:1", "amd64", base, top)
	cache := Cache{Dir: t.TempDir()}

	tree := t.TempDir()
	var stages []string
	res, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: cache, Tree: tree, Keychain: authn.NewMultiKeychain(),
		Progress: func(u progress.Update) { stages = append(stages, u.Stage) }})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if len(res.Layers) != 2 || res.Downloaded == 0 || !strings.HasPrefix(res.Digest, "sha256:") || res.Config.Cmd[0] != "/bin/sh" {
		t.Fatalf("result = %+v", res)
	}
	if got := listTree(t, tree); strings.Join(got, " ") != "bin bin/sh etc etc/motd etc/os-release" {
		t.Errorf("tree = %v", got)
	}
	for _, l := range res.Layers {
		if !cache.Has(l.Digest, l.Size) {
			t.Errorf("layer %s not cached", l.Digest)
		}
	}
	if !strings.Contains(strings.Join(stages, " "), StageDownload) {
		t.Errorf("stages %v lack %s", stages, StageDownload)
	}

	// Again: nothing to download.
	tree2 := t.TempDir()
	res2, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: cache, Tree: tree2, Keychain: authn.NewMultiKeychain()})
	if err != nil || res2.Downloaded != 0 || res2.Digest != res.Digest {
		t.Fatalf("second pull = %+v, %v; want the same digest with nothing downloaded", res2, err)
	}

	// Prune keeps what is asked for and reports the rest.
	keep := map[string]bool{res.Layers[0].Digest: true}
	would, err := cache.Prune(keep, true)
	if err != nil || len(would) != 1 || would[0].Digest != res.Layers[1].Digest {
		t.Fatalf("Prune dry run = %+v, %v", would, err)
	}
	if !cache.Has(res.Layers[1].Digest, res.Layers[1].Size) {
		t.Fatal("a dry run removed a blob")
	}
	if gone, err := cache.Prune(keep, false); err != nil || len(gone) != 1 || cache.Has(res.Layers[1].Digest, res.Layers[1].Size) {
		t.Fatalf("Prune = %+v, %v", gone, err)
	}
}

func TestPullRefusesOtherArchitectures(t *testing.T) {
	ref, _ := testRegistry(t, "test/arm:1", "arm64", layerTar(t, file("x", "y")))
	_, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: Cache{Dir: t.TempDir()}, Tree: t.TempDir(), Keychain: authn.NewMultiKeychain()})
	if err == nil || !strings.Contains(err.Error(), "linux/amd64") {
		t.Fatalf("err = %v; want a refusal naming linux/amd64", err)
	}
}

func TestPullCorruptCachedBlobIsNotTrusted(t *testing.T) {
	ref, _ := testRegistry(t, "test/c:1", "amd64", layerTar(t, file("a", "b")))
	cache := Cache{Dir: t.TempDir()}
	res, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: cache, Tree: t.TempDir(), Keychain: authn.NewMultiKeychain()})
	if err != nil {
		t.Fatal(err)
	}
	// A truncated blob (an interrupted copy by hand, a full disk) is fetched again.
	p, _ := cache.path(res.Layers[0].Digest)
	os.Truncate(p, 10)
	res2, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: cache, Tree: t.TempDir(), Keychain: authn.NewMultiKeychain()})
	if err != nil || res2.Downloaded == 0 {
		t.Fatalf("pull over a truncated blob = %+v, %v; want it downloaded again", res2, err)
	}
	if _, err := Pull(context.Background(), PullOptions{Ref: "Not A Ref!", Cache: cache, Tree: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not an image reference") {
		t.Fatalf("bad reference: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(cache.Dir, "blobs", "sha256"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".part") {
			t.Errorf("partial download left: %s", e.Name())
		}
	}
}
