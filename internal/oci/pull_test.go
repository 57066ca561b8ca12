package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/klauspost/compress/gzip"

	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/untar"
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
	img := testImage(t, arch, layers...)
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
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

// sparseLayer is a gzipped layer holding one PAX GNU sparse 1.0 file of size bytes, all hole
// but its last byte: a couple of hundred bytes that expand to size.
func sparseLayer(t *testing.T, name string, size int64) []byte {
	t.Helper()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(sparseLayerRaw(t, name, size))
	zw.Close()
	return gz.Bytes()
}

// sparseLayerRaw is sparseLayer uncompressed.
func sparseLayerRaw(t testing.TB, name string, size int64) []byte {
	var out bytes.Buffer
	block := func(name string, typ byte, n int) {
		var h [512]byte
		copy(h[0:], name)
		copy(h[100:], "0000644\x00")
		copy(h[108:], "0000000\x00")
		copy(h[116:], "0000000\x00")
		copy(h[124:], fmt.Sprintf("%011o\x00", n))
		copy(h[136:], fmt.Sprintf("%011o\x00", 1700000000))
		h[156] = typ
		copy(h[257:], "ustar\x0000")
		copy(h[148:], "        ")
		sum := 0
		for _, c := range h {
			sum += int(c)
		}
		copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
		out.Write(h[:])
	}
	pad := func() {
		if n := out.Len() % 512; n != 0 {
			out.Write(make([]byte, 512-n))
		}
	}
	rec := func(k, v string) string {
		body := " " + k + "=" + v + "\n"
		n := len(body) + 1
		for len(fmt.Sprint(n))+len(body) != n {
			n++
		}
		return fmt.Sprint(n) + body
	}
	pax := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") + rec("GNU.sparse.name", name) + rec("GNU.sparse.realsize", fmt.Sprint(size))
	block("PaxHeaders/"+name, 'x', len(pax))
	out.WriteString(pax)
	pad()
	block("GNUSparseFile.0/"+name, '0', 513)
	out.WriteString("1\n" + fmt.Sprint(size-1) + "\n1\n")
	pad()
	out.WriteString("z")
	pad()
	out.Write(make([]byte, 1024))
	return out.Bytes()
}

// A layer of a few hundred bytes holding a 1 GiB sparse file is written sparse, not as 1 GiB
// of zeros on the host's disk.
func TestPullWritesSparseFilesSparse(t *testing.T) {
	const size = 1 << 30
	layer := sparseLayer(t, "var/log/lastlog", size)
	ref, _ := testRegistry(t, "test/sparse:1", "amd64", layer)
	tree := t.TempDir()
	if _, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: Cache{Dir: t.TempDir()}, Tree: tree, Keychain: authn.NewMultiKeychain()}); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	fi, err := os.Stat(filepath.Join(tree, "var/log/lastlog"))
	if err != nil || fi.Size() != size {
		t.Fatalf("lastlog: %v, %v", fi, err)
	}
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 1<<20 {
		t.Errorf("a %d-byte layer made a file taking %d bytes on disk; want it sparse", len(layer), used)
	}
}

// Each limit refuses the image with an error naming what is over it, and leaves the tree
// empty.
func TestPullLimits(t *testing.T) {
	big := layerTar(t, file("a", strings.Repeat("x", 3000)), file("b", strings.Repeat("y", 3000)))
	small := layerTar(t, file("c", "z"))
	ref, _ := testRegistry(t, "test/limits:1", "amd64", big, small)
	bigDigest := layerDigest(t, big)
	for _, tt := range []struct {
		limits Limits
		want   []string
	}{
		{Limits{Bytes: 5000}, []string{"layer " + bigDigest, `entry "b"`, "total size"}},
		{Limits{Entries: 2}, []string{"layer sha256:", `entry "c"`, "entry count"}},
		{Limits{Layers: 1}, []string{"2 layers", "limit is 1"}},
		{Limits{ConfigBytes: 64}, []string{"configuration", "limit is 64"}},
		{Limits{ManifestBytes: 100}, []string{"manifest", "the limit is 100"}},
	} {
		tree := t.TempDir()
		os.WriteFile(filepath.Join(tree, "before"), nil, 0o644)
		_, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: Cache{Dir: t.TempDir()}, Tree: tree, Keychain: authn.NewMultiKeychain(), Limits: tt.limits})
		if err == nil {
			t.Errorf("%+v: pulled", tt.limits)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q lacks %q", tt.limits, err, w)
			}
		}
		if entries, _ := os.ReadDir(tree); len(entries) != 0 {
			t.Errorf("%+v: a refused pull left %d entries in the tree", tt.limits, len(entries))
		}
	}
	// The sparse file counts at the size it expands to.
	ref2, _ := testRegistry(t, "test/sparse-limit:1", "amd64", sparseLayer(t, "big", 1<<30))
	_, err := Pull(context.Background(), PullOptions{Ref: ref2, Cache: Cache{Dir: t.TempDir()}, Tree: t.TempDir(), Keychain: authn.NewMultiKeychain(), Limits: Limits{Bytes: 1 << 29}})
	var le *untar.LimitError
	if !errors.As(err, &le) || le.Entry != "big" {
		t.Errorf("sparse layer over the limit: %v; want an untar.LimitError naming big", err)
	}
}

func layerDigest(t *testing.T, data []byte) string {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// A manifest sent without a length is cut at the cap as it is read.
func TestCappedBody(t *testing.T) {
	for _, tt := range []struct {
		body string
		ok   bool
	}{{"12345", true}, {"123456", false}, {"", true}} {
		c := &cappedBody{rc: io.NopCloser(strings.NewReader(tt.body)), left: 5, what: "the manifest"}
		b, err := io.ReadAll(c)
		if tt.ok && (err != nil || string(b) != tt.body) || !tt.ok && (err == nil || len(b) > 5) {
			t.Errorf("%q: read %q, %v", tt.body, b, err)
		}
	}
}
