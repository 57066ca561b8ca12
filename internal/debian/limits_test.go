package debian

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// A data.tar.zst whose frame declares a 512 MiB window is refused before the decoder
// allocates that window.
func TestExtractDebRefusesHugeZstdWindow(t *testing.T) {
	const windowExp = 29 - 10
	header := uint32(1) | 1<<1 | 1<<3 // last block, RLE, one byte
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, windowExp << 3, byte(header), byte(header >> 8), byte(header >> 16), 'A'}
	deb := writeTemp(t, "p.deb", buildAr(arFile{"debian-binary", []byte("2.0\n")}, arFile{"data.tar.zst", frame}))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := ExtractDeb(deb, t.TempDir(), nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, zstd.ErrWindowSizeExceeded) {
		t.Errorf("ExtractDeb: %v; want ErrWindowSizeExceeded", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Errorf("ExtractDeb allocated %d MiB for a 10-byte zstd frame", n>>20)
	}
}

// A field of many continuation lines costs memory linear in its size: appending each line to
// the value so far copied it every time (a 300 KB field allocated gigabytes).
func TestReadParagraphsLongFieldIsLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString("Package: x\nDescription: long\n")
	const lines = 100_000
	for range lines {
		b.WriteString(" .\n")
	}
	input := b.String()
	var got string
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := readParagraphs(strings.NewReader(input), func(p paragraph) error { got = p.get("Description"); return nil })
	runtime.ReadMemStats(&after)
	if err != nil || strings.Count(got, "\n") != lines {
		t.Fatalf("readParagraphs: %d lines, %v; want %d continuation lines", strings.Count(got, "\n"), err, lines)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64*uint64(len(input)) {
		t.Fatalf("parsing a %d-byte paragraph allocated %d MiB", len(input), n>>20)
	}
}
