package untar

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzNames are the pieces fuzzed names and link targets are made of: the tricks that try to
// leave the root ("..", absolute paths to the outside directory, a symlink planted before)
// and ordinary names for them to collide with.
var fuzzNames = []string{"a", "b", "..", ".", "", "lower", "lower/passwd", "OUT", "OUT/passwd", "a/b", ".wh.a", ".wh..wh..opq", "x/../..", "/", "passwd"}

// fuzzTar turns fuzz bytes into a tar stream: each entry takes a type, a name and a link
// target from the bytes. OUT in a name stands for the absolute path of the outside directory.
func fuzzTar(data []byte, outside string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	pick := func(i int) string {
		if i >= len(data) {
			return "a"
		}
		return fuzzNames[int(data[i])%len(fuzzNames)]
	}
	name := func(i int) string {
		n := pick(i)
		if i+1 < len(data) && data[i+1]&1 == 1 {
			n += "/" + pick(i+2)
		}
		return strings.ReplaceAll(n, "OUT", outside)
	}
	types := []byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo, tar.TypeChar, tar.TypeReg}
	for i := 1; i+5 <= len(data); i += 5 {
		typ := types[int(data[i])%len(types)]
		h := &tar.Header{Name: name(i + 1), Linkname: name(i + 3), Typeflag: typ, Mode: int64(data[i+4]) | 0o600, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(data[i+4] % 5)
		}
		if typ == tar.TypeDir {
			h.Mode |= 0o700
		}
		if tw.WriteHeader(h) != nil {
			continue
		}
		tw.Write(bytes.Repeat([]byte{'x'}, int(h.Size)))
	}
	tw.Close()
	return b.Bytes()
}

// FuzzExtract checks the extractor's one promise: whatever the archive (crafted from the fuzz
// bytes, or the bytes themselves taken as a tar stream) and whatever the options, nothing is
// created, removed or changed outside the root, even with a symlink to the outside planted in
// the root beforehand.
func FuzzExtract(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 2, 7, 0, 5, 0, 0, 8, 1, 0, 0, 0})         // symlink OUT, then a file below it
	f.Add([]byte{0x07, 0, 6, 0, 0, 0, 3, 9, 0, 7, 0})            // a file under lower, a hard link to OUT/passwd
	f.Add([]byte{0x1f, 2, 0, 1, 2, 0, 0, 0, 1, 0, 0, 1, 3, 0})   // a symlink to .., then a file through it
	f.Add([]byte{0x10, 0, 10, 0, 0, 0, 0, 11, 0, 0, 0, 1, 6, 0}) // whiteouts
	s := newSandbox(f)
	f.Add(append([]byte{0x01}, tarOf(f, sym("l", ".."), reg("l/outside/passwd", "x"))...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		s = newSandbox(t)
		os.Symlink(s.outside, filepath.Join(s.root, "lower"))
		var stream []byte
		if data[0]&1 == 1 {
			stream = data[1:] // the bytes themselves as an archive
		} else {
			stream = fuzzTar(data, s.outside)
		}
		opts := Options{
			Symlinks:         SymlinkRule(data[0] >> 1 % 3),
			HardLinks:        data[0]&8 != 0,
			Fifos:            data[0]&16 != 0,
			Whiteouts:        data[0]&32 != 0,
			Ownership:        data[0]&64 != 0,
			RefuseDuplicates: data[0]&128 != 0,
			Limits:           Limits{Bytes: 1 << 20, Entries: 1000, EntryBytes: 1 << 20},
		}
		x, err := New(s.root, opts)
		if err != nil {
			t.Fatal(err)
		}
		_ = x.Extract(bytes.NewReader(stream))
		_ = x.Extract(bytes.NewReader(stream)) // a second layer on top of the first
		_ = x.Finish()
		x.Close()
		if msg := s.check(); msg != "" {
			t.Fatal(msg)
		}
	})
}
