package kernel

import (
	"debug/elf"
	"runtime"
	"strings"
	"testing"
)

// A small payload whose trailer claims maxVmlinuxSize is refused (its data decodes to far
// less) without allocating the claimed size first, whatever the codec.
func TestExtractVmlinuxDoesNotTrustTheClaimedSize(t *testing.T) {
	small := fakeVmlinux(8<<10, elf.EM_X86_64)
	for name, stream := range map[string][]byte{
		"gzip": gzipBytes(small),
		"xz":   xzBytes(small),
		"zstd": zstdBytes(small),
		"lz4":  lz4Legacy(small, 0),
	} {
		t.Run(name, func(t *testing.T) {
			img := makeBzImage(stream, maxVmlinuxSize, bzImageOpts{})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := ExtractVmlinux(img)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), "bytes") {
				t.Errorf("ExtractVmlinux of a payload claiming %d bytes: %v; want an error", maxVmlinuxSize, err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 32<<20 {
				t.Errorf("ExtractVmlinux allocated %d MiB for a %d-byte payload claiming %d MiB", n>>20, len(stream), maxVmlinuxSize>>20)
			}
		})
	}
}
