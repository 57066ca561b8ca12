package oci

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// FuzzParseSource: any string either parses into a source whose String parses back to the
// same source, or is refused; it never panics.
func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"debian:bookworm", "oci:/srv/img:1", "oci:/a/../b", "docker-archive:/x.tar:team/x:1",
		"docker-archive:/x.tar", "oci:", "oci:rel", "docker-archive:/x:Bad Tag", "localhost:5000/a@sha256:" + strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSource(in)
		if err != nil {
			return
		}
		s.NameParts()
		again, err := ParseSource(s.String())
		if err != nil || again.String() != s.String() {
			t.Fatalf("%q: String %q parses to %q, %v", in, s.String(), again.String(), err)
		}
	})
}

// FuzzPickFromIndex feeds index.json as a layout holds it: it is chosen from or refused,
// never a panic.
func FuzzPickFromIndex(f *testing.F) {
	d := v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 10, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)},
		Annotations: map[string]string{refNameAnnotation: "1"}}
	one, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{d}})
	d2 := d
	d2.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	two, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{d, d2}})
	f.Add(one, "")
	f.Add(one, "1")
	f.Add(two, "1")
	f.Add([]byte(`{"manifests":[{"digest":"sha256:zz"}]}`), "")
	f.Fuzz(func(t *testing.T, raw []byte, ref string) {
		d, err := pickFromIndex(raw, ref, "/l")
		if err == nil && ref != "" && d.Annotations[refNameAnnotation] != ref {
			t.Fatalf("asked for %q, picked %q", ref, d.Annotations[refNameAnnotation])
		}
	})
}

// FuzzOpenArchive feeds readArchive random bytes as an archive (seeded with real ones): it
// opens an image or refuses, never panics, and no layer is larger than the archive.
func FuzzOpenArchive(f *testing.F) {
	f.Add(mustRead(f, handArchive(f, "x/y:z", layerTar(f, file("f", "data")))))
	base := layerTar(f, file("a", "a"))
	f.Add(mustRead(f, handArchive(f, "x/y:z", base, base)))
	f.Add([]byte("not a tar"))
	limits := DefaultLimits
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := readArchive("fuzz.tar", bytes.NewReader(data), func() (io.ReaderAt, io.Closer, error) {
			return bytes.NewReader(data), io.NopCloser(nil), nil
		}, "", limits)
		if err != nil {
			return
		}
		ls, err := img.Layers()
		if err != nil {
			return
		}
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				continue
			}
			var b bytes.Buffer
			b.ReadFrom(rc)
			rc.Close()
			if int64(b.Len()) > int64(len(data)) {
				t.Fatalf("a layer of %d bytes from a %d-byte archive", b.Len(), len(data))
			}
		}
	})
}

func mustRead(t testing.TB, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
