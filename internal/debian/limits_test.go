package debian

import (
	"errors"
	"runtime"
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
