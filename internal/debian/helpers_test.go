package debian

import (
	"archive/tar"
	"bytes"
	"fmt"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// arFile is one member for buildAr.
type arFile struct {
	name string
	data []byte
}

// buildAr writes a Unix ar archive the way dpkg-deb does (GNU names ending in '/').
func buildAr(files ...arFile) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, f := range files {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", f.name+"/", 1700000000, 0, 0, 0o100644, len(f.data))
		b.Write(f.data)
		if len(f.data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// tarEntry is one entry for buildTar; typ defaults to a regular file.
type tarEntry struct {
	name     string
	typ      byte
	body     string
	linkname string
	mode     int64
}

func buildTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.linkname, Mode: e.mode}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// compress compresses data for a data.tar member name suffix: "xz", "zst", "gz" or "".
func compress(t testing.TB, codec string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch codec {
	case "":
		return data
	case "xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case "zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case "gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown codec %q", codec)
	}
	return b.Bytes()
}

// buildDeb returns a .deb whose data.tar.<codec> holds entries.
func buildDeb(t testing.TB, codec string, entries ...tarEntry) []byte {
	t.Helper()
	dataName := "data.tar"
	if codec != "" {
		dataName += "." + codec
	}
	control := compress(t, "xz", buildTar(t, tarEntry{name: "./control", body: "Package: test\n"}))
	return buildAr(
		arFile{"debian-binary", []byte("2.0\n")},
		arFile{"control.tar.xz", control},
		arFile{dataName, compress(t, codec, buildTar(t, entries...))},
	)
}
