package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// bzImageOpts shapes a crafted bzImage.
type bzImageOpts struct {
	setupSects byte   // 0 means the legacy default of 4
	version    uint16 // boot protocol; 0 means 2.15
	sizeDelta  int    // added to the appended uncompressed size
}

// makeBzImage wraps a compressed stream the way arch/x86/boot does: setup sectors with the
// boot header, then a decompressor stub, then the payload (stream + uint32 LE uncompressed
// size), then more code. The stub holds decoy gzip/xz magics so that a scanner would pick the
// wrong payload.
func makeBzImage(stream []byte, uncompressed int, o bzImageOpts) []byte {
	sects := int(o.setupSects)
	if sects == 0 {
		sects = 4
	}
	if o.version == 0 {
		o.version = 0x020f
	}
	stub := bytes.Repeat([]byte{0x1f, 0x8b, 0x08, 0xfd, '7', 'z', 'X', 'Z', 0x00, 0x90}, 40)
	payload := binary.LittleEndian.AppendUint32(append([]byte(nil), stream...), uint32(uncompressed+o.sizeDelta))
	img := make([]byte, (sects+1)*512)
	img[0x1f1] = o.setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], o.version)
	binary.LittleEndian.PutUint32(img[0x248:], uint32(len(stub)))
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	img = append(img, stub...)
	img = append(img, payload...)
	return append(img, bytes.Repeat([]byte{0xcc}, 300)...)
}

func gzipBytes(data []byte) []byte {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func xzBytes(data []byte) []byte {
	var b bytes.Buffer
	w, _ := xz.NewWriter(&b)
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func zstdBytes(data []byte) []byte {
	e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	defer e.Close()
	return e.EncodeAll(data, nil)
}

// lz4Legacy writes the legacy lz4 frame ("lz4 -l"): magic, then [size][block] per 8 MiB of
// input. restartAfter > 0 inserts a second frame magic after that many blocks.
func lz4Legacy(data []byte, restartAfter int) []byte {
	out := binary.LittleEndian.AppendUint32(nil, lz4LegacyMagic)
	for i, n := 0, 0; i < len(data); i, n = i+lz4LegacyMaxBlock, n+1 {
		if restartAfter > 0 && n == restartAfter {
			out = binary.LittleEndian.AppendUint32(out, lz4LegacyMagic)
		}
		src := data[i:min(len(data), i+lz4LegacyMaxBlock)]
		dst := make([]byte, lz4.CompressBlockBound(len(src)))
		m, err := lz4.CompressBlock(src, dst, nil)
		if err != nil || m == 0 {
			panic("lz4 test compression failed")
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(m))
		out = append(out, dst[:m]...)
	}
	return out
}

func TestExtractVmlinuxCodecs(t *testing.T) {
	small := fakeVmlinux(8<<10, elf.EM_X86_64)
	big := fakeVmlinux(lz4LegacyMaxBlock*2+12345, elf.EM_X86_64) // three lz4 blocks
	// The fixture is fakeVmlinux(8<<10, elf.EM_X86_64) compressed by XZ Utils 5.4.1 the way
	// scripts/xz_wrap.sh does for x86: xz --x86 --check=crc32 --lzma2=dict=1MiB -T1.
	// It proves compatibility with real xz output, which ulikunitz's writer cannot produce.
	bcjFixture, err := os.ReadFile("testdata/fake-vmlinux.x86-bcj.xz")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		elf    []byte
		stream []byte
		opts   bzImageOpts
	}{
		{"gzip", small, gzipBytes(small), bzImageOpts{}},
		{"xz (LZMA2 only, ulikunitz writer)", small, xzBytes(small), bzImageOpts{setupSects: 30}},
		{"xz with x86 BCJ filter (xz --x86, as the kernel build does)", small, bcjFixture, bzImageOpts{}},
		{"zstd", small, zstdBytes(small), bzImageOpts{setupSects: 39}},
		{"lz4 legacy, one block", small, lz4Legacy(small, 0), bzImageOpts{}},
		{"lz4 legacy, three blocks", big, lz4Legacy(big, 0), bzImageOpts{setupSects: 27}},
		{"lz4 legacy, restarted frame", big, lz4Legacy(big, 2), bzImageOpts{}},
		{"boot protocol 2.08", small, gzipBytes(small), bzImageOpts{version: 0x0208}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExtractVmlinux(makeBzImage(tt.stream, len(tt.elf), tt.opts))
			if err != nil {
				t.Fatalf("ExtractVmlinux: %v", err)
			}
			if !bytes.Equal(got, tt.elf) {
				t.Fatalf("ExtractVmlinux returned %d bytes that differ from the %d-byte ELF", len(got), len(tt.elf))
			}
		})
	}
}

func TestExtractVmlinuxRejects(t *testing.T) {
	good := fakeVmlinux(8<<10, elf.EM_X86_64)
	lz := lz4Legacy(good, 0)
	valid := makeBzImage(lz, len(good), bzImageOpts{})
	withHeader := func(off int, v []byte) []byte {
		b := bytes.Clone(valid)
		copy(b[off:], v)
		return b
	}
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	// Legacy lz4 has no checksum (the .deb's SHA-256 protects the file), so only structural
	// damage is detectable: here the first block's first token claims far too many literals.
	corruptLZ := bytes.Clone(lz)
	corruptLZ[8] = 0xff
	corruptLZ[9] = 0xff
	tests := []struct {
		name    string
		image   []byte
		wantErr string
	}{
		{"empty", nil, "too short"},
		{"garbage", bytes.Repeat([]byte("garbage!"), 200), `no "HdrS"`},
		{"old boot protocol", withHeader(0x206, []byte{0x06, 0x02}), "older than 2.08"},
		{"payload beyond the file", withHeader(0x24c, le32(1<<30)), "outside"},
		{"payload offset beyond the file", withHeader(0x248, le32(1<<30)), "outside"},
		{"truncated file", valid[:len(valid)-400], "outside"},
		{"bzip2 payload", makeBzImage([]byte("BZh91AY&SY...."), 10, bzImageOpts{}), "bzip2 is unsupported"},
		{"lzma payload", makeBzImage([]byte{0x5d, 0, 0, 0x80, 0, 1, 2, 3}, 10, bzImageOpts{}), "lzma is unsupported"},
		{"unknown payload", makeBzImage([]byte("\x00\x01\x02\x03 not compressed"), 10, bzImageOpts{}), "unknown"},
		{"lz4 block cut short", makeBzImage(lz[:len(lz)-100], len(good), bzImageOpts{}), "truncated"},
		{"lz4 corrupt block", makeBzImage(corruptLZ, len(good), bzImageOpts{}), "lz4 block at offset 4"},
		{"lz4 bad block size", makeBzImage(append(bytes.Clone(lz), 0xff, 0xff, 0xff, 0x7f), len(good), bzImageOpts{}), "invalid size"},
		{"recorded size too small", makeBzImage(lz, len(good), bzImageOpts{sizeDelta: -1}), ""},
		{"recorded size too large", makeBzImage(gzipBytes(good), len(good), bzImageOpts{sizeDelta: 1}), ""},
		{"recorded size absurd", makeBzImage(lz, maxVmlinuxSize, bzImageOpts{sizeDelta: 1}), "uncompressed size"},
		{"gzip corrupt", makeBzImage(append(gzipBytes(good)[:200], make([]byte, 100)...), len(good), bzImageOpts{}), "gzip"},
		{"xz corrupt", makeBzImage(append(xzBytes(good)[:300], make([]byte, 50)...), len(good), bzImageOpts{}), "xz"},
		{"zstd corrupt", makeBzImage(zstdBytes(good)[:100], len(good), bzImageOpts{}), "zstd"},
		{"payload is not ELF", makeBzImage(gzipBytes([]byte(strings.Repeat("not an elf ", 100))), 1100, bzImageOpts{}), "not an ELF"},
		{"payload is an arm64 ELF", makeBzImage(gzipBytes(fakeVmlinux(4096, elf.EM_AARCH64)), 4096, bzImageOpts{}), "EM_AARCH64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExtractVmlinux(tt.image)
			if err == nil {
				t.Fatalf("ExtractVmlinux returned %d bytes and no error; want an error containing %q", len(got), tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %q; want it to contain %q", err, tt.wantErr)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

func TestXZRejectsCorruptChecks(t *testing.T) {
	fixture, err := os.ReadFile("testdata/fake-vmlinux.x86-bcj.xz")
	if err != nil {
		t.Fatal(err)
	}
	want := fakeVmlinux(8<<10, elf.EM_X86_64)
	tests := []struct {
		name    string
		mutate  func(b []byte)
		wantErr string
	}{
		{"stream header flags", func(b []byte) { b[7] ^= 1 }, "stream header checksum"},
		{"block header", func(b []byte) { b[13] ^= 1 }, "block header checksum"},
		{"block check", func(b []byte) {
			// The CRC32 of the block sits just before the index; the index starts 12+index
			// bytes from the end. Flip the byte 4 before the 0x00 index indicator.
			idx := len(b) - 12 - int(binary.LittleEndian.Uint32(b[len(b)-8:])+1)*4
			b[idx-1] ^= 0xff
		}, "integrity check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(fixture)
			tt.mutate(b)
			_, err := unxz(b, len(want))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("unxz error = %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}
