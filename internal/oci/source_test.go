package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// testImage makes a linux/arch image of the given layer tarballs (gzip-compressed by
// go-containerregistry).
func testImage(t *testing.T, arch string, layers ...[]byte) v1.Image {
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
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// writeLayout writes an OCI layout holding the images, each annotated with its ref name.
func writeLayout(t *testing.T, images map[string]v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for ref, img := range images {
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: ref})); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func pullInto(t *testing.T, ref string, limits Limits) (Result, string, error) {
	t.Helper()
	tree := t.TempDir()
	res, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: Cache{Dir: t.TempDir()}, Tree: tree, Limits: limits})
	return res, tree, err
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one saying %q", err, want)
	}
}

func TestParseSource(t *testing.T) {
	for _, c := range []struct {
		in, str, repo, id, err string
	}{
		{in: "debian:bookworm", str: "index.docker.io/library/debian:bookworm", repo: "library/debian", id: "bookworm"},
		{in: "oci:/srv/img", str: "oci:/srv/img", repo: "img"},
		{in: "oci:/srv/img:1.2", str: "oci:/srv/img:1.2", repo: "img", id: "1.2"},
		{in: "oci:/srv/./img/:v1:x", str: "oci:/srv/img:v1:x", repo: "img", id: "v1:x"},
		{in: "docker-archive:/tmp/devbox.tar", str: "docker-archive:/tmp/devbox.tar", repo: "devbox"},
		{in: "docker-archive:/tmp/a.tar:team/devbox:2", str: "docker-archive:/tmp/a.tar:team/devbox:2", repo: "team/devbox", id: "2"},
		{in: "oci:relative/dir", err: "must be absolute"},
		{in: "oci:", err: "names no path"},
		{in: "docker-archive::x:1", err: "names no path"},
		{in: "docker-archive:/a.tar:Not A Tag", err: "is not NAME:TAG"},
		{in: "Bad Ref", err: "not an image reference"},
	} {
		s, err := ParseSource(c.in)
		if c.err != "" {
			wantErr(t, err, c.err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		repo, id := s.NameParts()
		if s.String() != c.str || repo != c.repo || id != c.id {
			t.Errorf("%s: String %q NameParts %q %q; want %q %q %q", c.in, s.String(), repo, id, c.str, c.repo, c.id)
		}
		if s.IsLocal() != !strings.HasPrefix(c.str, "index.docker.io") {
			t.Errorf("%s: IsLocal %v", c.in, s.IsLocal())
		}
	}
}

func TestPullFromLayout(t *testing.T) {
	// umoci names the root directory "/" in its layers.
	one := testImage(t, "amd64", layerTar(t, dir("/"), dir("etc/"), file("etc/marker", "one\n")), layerTar(t, file("etc/motd", "hi")))
	two := testImage(t, "amd64", layerTar(t, dir("etc/"), file("etc/marker", "two\n")))
	dir := writeLayout(t, map[string]v1.Image{"1": one, "2": two})

	res, tree, err := pullInto(t, "oci:"+dir+":2", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "etc/marker")); string(b) != "two\n" {
		t.Fatalf("etc/marker is %q, want the image named 2's", b)
	}
	if res.Digest != digestOf(t, two) || res.Reference != "oci:"+dir+":2" || len(res.Layers) != 1 || res.Config.Cmd[0] != "/bin/sh" {
		t.Fatalf("result %+v; want image 2's digest %s", res, digestOf(t, two))
	}

	_, _, err = pullInto(t, "oci:"+dir, Limits{})
	wantErr(t, err, "holds 2 images; name one with oci:"+dir+":REF (its names: 1, 2)")
	_, _, err = pullInto(t, "oci:"+dir+":3", Limits{})
	wantErr(t, err, `has no image named "3" (its names: 1, 2)`)
	_, _, err = pullInto(t, "oci:"+filepath.Join(dir, "missing"), Limits{})
	wantErr(t, err, "no such file or directory")

	// One image needs no name; "latest" is the default among several.
	single := writeLayout(t, map[string]v1.Image{"1": one})
	if res, _, err := pullInto(t, "oci:"+single, Limits{}); err != nil || res.Digest != digestOf(t, one) {
		t.Fatalf("single-image layout: %+v, %v", res, err)
	}
	latest := writeLayout(t, map[string]v1.Image{"latest": one, "2": two})
	if res, _, err := pullInto(t, "oci:"+latest, Limits{}); err != nil || res.Digest != digestOf(t, one) {
		t.Fatalf("layout with latest: %+v, %v", res, err)
	}
}

func TestPullFromLayoutPicksLinuxAmd64(t *testing.T) {
	amd := testImage(t, "amd64", layerTar(t, file("arch", "amd64")))
	arm := testImage(t, "arm64", layerTar(t, file("arch", "arm64")))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	dir := filepath.Join(t.TempDir(), "multi")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: "multi"})); err != nil {
		t.Fatal(err)
	}
	res, tree, err := pullInto(t, "oci:"+dir+":multi", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "arch")); string(b) != "amd64" || res.Digest != digestOf(t, amd) {
		t.Fatalf("got %q (%s), want the amd64 image %s", b, res.Digest, digestOf(t, amd))
	}

	armOnly := filepath.Join(t.TempDir(), "arm")
	p, _ = layout.Write(armOnly, empty.Index)
	p.AppendIndex(mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}}))
	_, _, err = pullInto(t, "oci:"+armOnly, Limits{})
	wantErr(t, err, "no linux/amd64 image among 1 (platforms: linux/arm64)")
}

// manifestOf returns the digest of the only manifest of a layout and the manifest.
func manifestOf(t *testing.T, dir string) (v1.Hash, *v1.Manifest) {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := p.ImageIndex()
	im, _ := idx.IndexManifest()
	img, err := p.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	return im.Manifests[0].Digest, m
}

func blobFile(dir string, h v1.Hash) string { return filepath.Join(dir, "blobs", h.Algorithm, h.Hex) }

func TestPullFromLayoutRefusesTampering(t *testing.T) {
	img := testImage(t, "amd64", layerTar(t, file("f", "data")))

	t.Run("symlinked blob out of the layout", func(t *testing.T) {
		dir := writeLayout(t, map[string]v1.Image{"1": img})
		_, m := manifestOf(t, dir)
		// The same bytes, but outside: a layout may not point at files elsewhere.
		blob := blobFile(dir, m.Layers[0].Digest)
		outside := filepath.Join(t.TempDir(), "outside")
		if err := os.Rename(blob, outside); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, blob); err != nil {
			t.Fatal(err)
		}
		_, _, err := pullInto(t, "oci:"+dir, Limits{})
		wantErr(t, err, "path escapes from parent")
	})
	t.Run("symlinked index.json out of the layout", func(t *testing.T) {
		dir := writeLayout(t, map[string]v1.Image{"1": img})
		outside := filepath.Join(t.TempDir(), "index.json")
		os.Rename(filepath.Join(dir, "index.json"), outside)
		os.Symlink(outside, filepath.Join(dir, "index.json"))
		_, _, err := pullInto(t, "oci:"+dir, Limits{})
		wantErr(t, err, "path escapes from parent")
	})
	t.Run("manifest does not match its digest", func(t *testing.T) {
		dir := writeLayout(t, map[string]v1.Image{"1": img})
		d, _ := manifestOf(t, dir)
		b, _ := os.ReadFile(blobFile(dir, d))
		os.WriteFile(blobFile(dir, d), bytes.Replace(b, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":3`), 1), 0o644)
		_, _, err := pullInto(t, "oci:"+dir, Limits{})
		wantErr(t, err, "does not match its digest")
	})
	t.Run("config does not match its digest", func(t *testing.T) {
		dir := writeLayout(t, map[string]v1.Image{"1": img})
		_, m := manifestOf(t, dir)
		b, _ := os.ReadFile(blobFile(dir, m.Config.Digest))
		os.WriteFile(blobFile(dir, m.Config.Digest), bytes.Replace(b, []byte("/bin/sh"), []byte("/bin/xx"), 1), 0o644)
		_, _, err := pullInto(t, "oci:"+dir, Limits{})
		wantErr(t, err, "does not match its digest")
	})
	t.Run("layer does not match its digest", func(t *testing.T) {
		dir := writeLayout(t, map[string]v1.Image{"1": img})
		_, m := manifestOf(t, dir)
		other := testImage(t, "amd64", layerTar(t, file("f", "evil")))
		ol, _ := other.Layers()
		rc, _ := ol[0].Compressed()
		b, _ := io.ReadAll(rc)
		os.WriteFile(blobFile(dir, m.Layers[0].Digest), b, 0o644)
		_, tree, err := pullInto(t, "oci:"+dir, Limits{})
		wantErr(t, err, "has digest sha256:")
		if entries, _ := os.ReadDir(tree); len(entries) != 0 {
			t.Fatalf("the tree holds %d entries after a refused pull", len(entries))
		}
	})
	t.Run("index.json over the manifest cap", func(t *testing.T) {
		dir := writeLayout(t, map[string]v1.Image{"1": img})
		b, _ := os.ReadFile(filepath.Join(dir, "index.json"))
		_, _, err := pullInto(t, "oci:"+dir, Limits{ManifestBytes: int64(len(b)) - 1})
		wantErr(t, err, "index.json is larger than the limit")
	})
	t.Run("configuration over its cap", func(t *testing.T) {
		dir := writeLayout(t, map[string]v1.Image{"1": img})
		_, m := manifestOf(t, dir)
		_, _, err := pullInto(t, "oci:"+dir, Limits{ConfigBytes: m.Config.Size - 1})
		wantErr(t, err, "its configuration")
	})
	t.Run("not a layout", func(t *testing.T) {
		_, _, err := pullInto(t, "oci:"+t.TempDir(), Limits{})
		wantErr(t, err, "has no oci-layout: is it an OCI image layout?")
	})
	t.Run("blob that is not a regular file", func(t *testing.T) {
		dir := writeLayout(t, map[string]v1.Image{"1": img})
		d, _ := manifestOf(t, dir)
		os.Remove(blobFile(dir, d))
		os.Mkdir(blobFile(dir, d), 0o755)
		_, _, err := pullInto(t, "oci:"+dir, Limits{})
		wantErr(t, err, "is not a regular file")
	})
}

func writeArchive(t *testing.T, images map[string]v1.Image) string {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for tag, img := range images {
		ref, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[ref] = img
	}
	f := filepath.Join(t.TempDir(), "images.tar")
	if err := tarball.MultiRefWriteToFile(f, refs); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestPullFromDockerArchive(t *testing.T) {
	one := testImage(t, "amd64", layerTar(t, dir("etc/"), file("etc/marker", "one\n")), layerTar(t, file("etc/motd", "hi")))
	two := testImage(t, "amd64", layerTar(t, dir("etc/"), file("etc/marker", "two\n")))
	f := writeArchive(t, map[string]v1.Image{"team/one:1": one, "localhost:5000/team/two:2": two})

	res, tree, err := pullInto(t, "docker-archive:"+f+":localhost:5000/team/two:2", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "etc/marker")); string(b) != "two\n" {
		t.Fatalf("etc/marker is %q, want image two's", b)
	}
	// go-containerregistry writes the layers compressed: their digests are the image's.
	ls, _ := two.Layers()
	ld, _ := ls[0].Digest()
	if len(res.Layers) != 1 || res.Layers[0].Digest != ld.String() || res.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Fatalf("layers %+v, want %s", res.Layers, ld)
	}
	res1, tree, err := pullInto(t, "docker-archive:"+f+":team/one:1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "etc/motd")); string(b) != "hi" || len(res1.Layers) != 2 {
		t.Fatalf("image one: motd %q, %d layers", b, len(res1.Layers))
	}

	_, _, err = pullInto(t, "docker-archive:"+f, Limits{})
	wantErr(t, err, "holds 2 images; name one with docker-archive:"+f+":NAME:TAG")
	_, _, err = pullInto(t, "docker-archive:"+f+":team/three:1", Limits{})
	wantErr(t, err, "has no image tagged team/three:1")
	_, _, err = pullInto(t, "docker-archive:"+filepath.Join(t.TempDir(), "none.tar"), Limits{})
	wantErr(t, err, "no such file or directory")
	_, _, err = pullInto(t, "docker-archive:"+f, Limits{ManifestBytes: 10})
	wantErr(t, err, "manifest.json is")
	_, _, err = pullInto(t, "docker-archive:"+f+":team/one:1", Limits{Layers: 1})
	wantErr(t, err, "has 2 layers; the limit is 1")

	single := writeArchive(t, map[string]v1.Image{"x/y:z": one})
	if res, _, err := pullInto(t, "docker-archive:"+single, Limits{}); err != nil || len(res.Layers) != 2 {
		t.Fatalf("single-image archive: %+v, %v", res, err)
	}
}

// handArchive writes a docker-archive the way docker save does: uncompressed layers in
// <id>/layer.tar, the configuration as <hex>.json, a repeated layer as a symlink to the first.
func handArchive(t testing.TB, tag string, layers ...[]byte) string {
	t.Helper()
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	put := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	var paths []string
	seen := map[string]string{}
	for i, l := range layers {
		h := sha256Hex(l)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, v1.Hash{Algorithm: "sha256", Hex: h})
		p := fmt.Sprintf("l%d/layer.tar", i)
		if first, ok := seen[h]; ok {
			tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeSymlink, Linkname: "../" + first})
		} else {
			put(p, l)
			seen[h] = p
		}
		paths = append(paths, p)
	}
	cb, _ := json.Marshal(cfg)
	put(sha256Hex(cb)+".json", cb)
	mb, _ := json.Marshal([]map[string]any{{"Config": sha256Hex(cb) + ".json", "RepoTags": []string{tag}, "Layers": paths}})
	put("manifest.json", mb)
	tw.Close()
	f := filepath.Join(t.TempDir(), "saved.tar")
	if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestPullFromDockerSaveArchive(t *testing.T) {
	base := layerTar(t, dir("etc/"), file("etc/marker", "saved\n"))
	f := handArchive(t, "team/saved:1", base, layerTar(t, file("etc/motd", "m")), base)
	res, tree, err := pullInto(t, "docker-archive:"+f+":team/saved:1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "etc/marker")); string(b) != "saved\n" {
		t.Fatalf("etc/marker is %q", b)
	}
	// Uncompressed layers are cached under their diff IDs, which the cache verifies.
	if len(res.Layers) != 3 || res.Layers[0].Digest != "sha256:"+sha256Hex(base) || res.Layers[2].Digest != res.Layers[0].Digest ||
		res.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar" {
		t.Fatalf("layers %+v", res.Layers)
	}
}

func TestPullFromDockerArchiveRefusesATamperedLayer(t *testing.T) {
	f := handArchive(t, "x/y:z", layerTar(t, file("f", "good")))
	b, _ := os.ReadFile(f)
	// Change the layer's content in place (same length): its diff ID no longer matches.
	i := bytes.Index(b, []byte("good"))
	if i < 0 || bytes.Contains(b[i+1:], []byte("good")) {
		t.Fatal("the layer's content is not in the archive once")
	}
	copy(b[i:], "evil")
	os.WriteFile(f, b, 0o644)
	_, tree, err := pullInto(t, "docker-archive:"+f, Limits{})
	wantErr(t, err, "has digest sha256:")
	if entries, _ := os.ReadDir(tree); len(entries) != 0 {
		t.Fatalf("the tree holds %d entries after a refused pull", len(entries))
	}
}

func TestPickFromIndexRefusals(t *testing.T) {
	ix := func(ds ...v1.Descriptor) []byte {
		b, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: ds})
		return b
	}
	_, err := pickFromIndex(ix(), "", "/l")
	wantErr(t, err, "holds no image")
	_, err = pickFromIndex([]byte("{"), "", "/l")
	wantErr(t, err, "index.json")
	d := v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 1, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}}
	_, err = pickFromIndex(ix(d, d), "", "/l")
	wantErr(t, err, "holds 2 images; name one with oci:/l:REF (its names: none)")
}

// An archive's index is bounded: one with more entries than docker save ever writes is refused
// before anything is parsed.
func TestDockerArchiveEntriesAreBounded(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range maxArchiveEntries + 1 {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/", i), Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.Close()
	f := filepath.Join(t.TempDir(), "many.tar")
	os.WriteFile(f, buf.Bytes(), 0o644)
	_, _, err := pullInto(t, "docker-archive:"+f, Limits{})
	wantErr(t, err, fmt.Sprintf("has more than %d entries", maxArchiveEntries))
}
