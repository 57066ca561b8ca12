package kernel

import (
	"debug/elf"
	"os"
	"testing"
)

// FuzzExtractVmlinux feeds arbitrary bytes to the bzImage parser and its decompressors.
// Whatever it returns must be an x86-64 ELF no larger than maxVmlinuxSize.
func FuzzExtractVmlinux(f *testing.F) {
	small := fakeVmlinux(4<<10, elf.EM_X86_64)
	f.Add(makeBzImage(gzipBytes(small), len(small), bzImageOpts{}))
	f.Add(makeBzImage(xzBytes(small), len(small), bzImageOpts{setupSects: 30}))
	f.Add(makeBzImage(zstdBytes(small), len(small), bzImageOpts{}))
	f.Add(makeBzImage(lz4Legacy(small, 0), len(small), bzImageOpts{version: 0x0208}))
	f.Add(makeBzImage(gzipBytes(small), maxVmlinuxSize, bzImageOpts{}))
	if bcj, err := os.ReadFile("testdata/fake-vmlinux.x86-bcj.xz"); err == nil {
		f.Add(makeBzImage(bcj, 8<<10, bzImageOpts{}))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := ExtractVmlinux(data)
		if err != nil {
			return
		}
		if len(out) > maxVmlinuxSize {
			t.Fatalf("returned %d bytes, above maxVmlinuxSize", len(out))
		}
		if err := checkX86ELF(out); err != nil {
			t.Fatalf("returned a non-ELF: %v", err)
		}
	})
}
