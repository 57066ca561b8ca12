package oci

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// FuzzFlatten feeds the flattener random layers: the fuzz bytes split into up to three
// layers, each taken as a tar stream (gzipped or not, as the first byte says), applied over a
// root holding a symlink to the outside planted by an "earlier layer". Whatever they hold, the
// flattener must not panic and nothing outside the root may appear or change.
func FuzzFlatten(f *testing.F) {
	s := newSandbox(f)
	seed := func(flags byte, layers ...[]byte) {
		data := []byte{flags}
		for i, l := range layers {
			if i > 0 {
				data = append(data, sep...)
			}
			data = append(data, l...)
		}
		f.Add(data)
	}
	seed(0, layerTar(f, dir("etc/"), file("etc/a", "a"), symlink("etc/l", "a"), hardlink("etc/h", "etc/a")))
	seed(1, layerTar(f, file("lower/passwd", "pwned")), layerTar(f, file("etc/.wh.a", ""), file("etc/.wh..wh..opq", "")))
	seed(0, layerTar(f, symlink("up", "../outside")), layerTar(f, file("up/passwd", "x"), hardlink("pw", "lower/passwd")))
	seed(2, layerTar(f, symlink("evil", s.outside), file("evil/passwd", "x"), device("dev/null", 'c'), e{name: "p", typ: '6', mode: 0o600}))
	seed(0, sparseLayerRaw(f, "big", 1<<20))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		s := newSandbox(t)
		os.Symlink(s.outside, filepath.Join(s.tree, "lower"))
		fl, err := NewFlattener(s.tree, Limits{Bytes: 4 << 20, Entries: 2000})
		if err != nil {
			t.Fatal(err)
		}
		for i, layer := range bytes.SplitN(data[1:], sep, 3) {
			if data[0]>>i&1 == 1 {
				var gz bytes.Buffer
				zw := gzip.NewWriter(&gz)
				zw.Write(layer)
				zw.Close()
				layer = gz.Bytes()
			}
			if fl.Apply(bytes.NewReader(layer), "sha256:fuzz") != nil {
				break
			}
		}
		_ = fl.Finish()
		s.untouched(t)
	})
}

// sep separates layers in FuzzFlatten's input.
var sep = []byte("--LAYER--")
