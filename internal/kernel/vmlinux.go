package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// x86 boot protocol header fields (Documentation/arch/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeaderMagic   = 0x202 // "HdrS"
	offVersion       = 0x206
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
	headerEnd        = 0x250
	minBootProtocol  = 0x208 // payload_offset/payload_length appeared in 2.08
)

// maxVmlinuxSize bounds the uncompressed size taken from the payload trailer, so a corrupt
// header cannot make us allocate without limit. Real stripped x86-64 kernels are 30–100 MB.
// The trailer is not trusted beyond that: output buffers grow with what actually decodes,
// so a tiny payload claiming maxVmlinuxSize costs what it decodes to, not the claim.
const maxVmlinuxSize = 256 << 20

// ExtractVmlinux returns the ELF kernel image carried, compressed, inside an x86 bzImage. The
// payload is located through the boot protocol header (never by scanning for magic bytes),
// its compression is identified from its first bytes, and it is decompressed and checked to
// be an x86-64 ELF of exactly the size the kernel build appended to the payload.
//
// Supported: gzip, xz (LZMA2, with or without the x86 BCJ filter), zstd and the legacy lz4
// frame. bzip2, lzma and lzo payloads are reported as unsupported.
func ExtractVmlinux(bzImage []byte) ([]byte, error) {
	payload, err := bzImagePayload(bzImage)
	if err != nil {
		return nil, err
	}
	codec := detectCodec(payload)
	if codec.decode == nil {
		return nil, fmt.Errorf("bzImage payload compression %s is unsupported; use a kernel built with gzip, xz, zstd or lz4", codec.name)
	}
	// The kernel build appends the uncompressed size (uint32 LE) after the compressed stream.
	if len(payload) < 8 {
		return nil, fmt.Errorf("bzImage payload is only %d bytes; truncated kernel?", len(payload))
	}
	stream := payload[:len(payload)-4]
	size := int(binary.LittleEndian.Uint32(payload[len(payload)-4:]))
	if size == 0 || size > maxVmlinuxSize {
		return nil, fmt.Errorf("bzImage payload claims an uncompressed size of %d bytes (want 1..%d); corrupt kernel?", size, maxVmlinuxSize)
	}
	out, err := codec.decode(stream, size)
	if err != nil {
		return nil, fmt.Errorf("decompress %s bzImage payload: %w", codec.name, err)
	}
	if len(out) != size {
		return nil, fmt.Errorf("decompressed %s payload is %d bytes, but the kernel build recorded %d; corrupt kernel?", codec.name, len(out), size)
	}
	if err := checkX86ELF(out); err != nil {
		return nil, fmt.Errorf("decompressed %s payload: %w", codec.name, err)
	}
	return out, nil
}

// bzImagePayload returns the compressed payload that the boot header points at.
func bzImagePayload(b []byte) ([]byte, error) {
	if len(b) < headerEnd {
		return nil, fmt.Errorf("file is %d bytes, too short to be a bzImage", len(b))
	}
	if string(b[offHeaderMagic:offHeaderMagic+4]) != "HdrS" {
		return nil, errors.New(`not an x86 bzImage: no "HdrS" boot header at 0x202`)
	}
	if v := binary.LittleEndian.Uint16(b[offVersion:]); v < minBootProtocol {
		return nil, fmt.Errorf("bzImage boot protocol %d.%02d is older than 2.08 and does not locate its payload", v>>8, v&0xff)
	}
	setupSects := int(b[offSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(b[offPayloadOffset:]))
	length := int(binary.LittleEndian.Uint32(b[offPayloadLength:]))
	if length == 0 || start > len(b) || length > len(b)-start {
		return nil, fmt.Errorf("bzImage payload [%d, +%d) lies outside the %d-byte file; truncated kernel?", start, length, len(b))
	}
	return b[start : start+length], nil
}

// codec is a payload compression format.
type codec struct {
	name   string
	decode func(stream []byte, size int) ([]byte, error) // nil: unsupported
}

func detectCodec(p []byte) codec {
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		return codec{"gzip", gunzip}
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return codec{"xz", unxz}
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return codec{"zstd", unzstd}
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		return codec{"lz4", unlz4Legacy}
	case bytes.HasPrefix(p, []byte("BZh")):
		return codec{"bzip2", nil}
	case bytes.HasPrefix(p, []byte{0x5d, 0x00, 0x00}):
		return codec{"lzma", nil}
	case bytes.HasPrefix(p, []byte{0x89, 'L', 'Z', 'O'}):
		return codec{"lzo", nil}
	}
	return codec{fmt.Sprintf("unknown (first bytes % x)", p[:min(len(p), 6)]), nil}
}

// readExactly reads a decompressor that must produce exactly size bytes, then confirms it
// ends there (which also makes the decompressor verify its trailing checksum).
func readExactly(r io.Reader, size int) ([]byte, error) {
	var out bytes.Buffer
	n, err := out.ReadFrom(io.LimitReader(r, int64(size)+1))
	if err != nil {
		return nil, fmt.Errorf("after %d of %d bytes: %w", n, size, err)
	}
	if n > int64(size) {
		return nil, fmt.Errorf("stream holds more than the recorded %d bytes", size)
	}
	if n < int64(size) {
		return nil, fmt.Errorf("after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	return out.Bytes(), nil
}

func gunzip(stream []byte, size int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(stream))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	return readExactly(zr, size)
}

func unzstd(stream []byte, size int) ([]byte, error) {
	// DecodeAll decodes into its output (no separate window buffer) and sizes that output by
	// what the input can decode to; MaxMemory stops it past maxVmlinuxSize.
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxVmlinuxSize+1))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.DecodeAll(stream, nil)
}

// lz4 legacy frame, as written by "lz4 -l" for CONFIG_KERNEL_LZ4 and read by the kernel's
// lib/decompress_unlz4.c: a magic, then blocks of [uint32 LE compressed size][data], each
// decompressing to at most 8 MiB. A size equal to the magic starts a new frame.
const (
	lz4LegacyMagic    = 0x184C2102
	lz4LegacyMaxBlock = 8 << 20
)

func unlz4Legacy(stream []byte, size int) ([]byte, error) {
	if len(stream) < 4 || binary.LittleEndian.Uint32(stream) != lz4LegacyMagic {
		return nil, errors.New("missing lz4 legacy frame magic")
	}
	// Blocks decode into blk and are appended: out grows with what decodes, not to the size
	// the trailer claims.
	var out []byte
	blk := make([]byte, lz4LegacyMaxBlock)
	maxCompressed := uint32(lz4.CompressBlockBound(lz4LegacyMaxBlock))
	for pos := 4; pos < len(stream); {
		if len(stream)-pos < 4 {
			return nil, fmt.Errorf("truncated lz4 block header at offset %d", pos)
		}
		blockSize := binary.LittleEndian.Uint32(stream[pos:])
		pos += 4
		if blockSize == lz4LegacyMagic {
			continue // concatenated frame
		}
		if blockSize == 0 || blockSize > maxCompressed {
			return nil, fmt.Errorf("lz4 block at offset %d has invalid size %d", pos-4, blockSize)
		}
		if int(blockSize) > len(stream)-pos {
			return nil, fmt.Errorf("lz4 block at offset %d needs %d bytes, only %d remain; truncated kernel?", pos-4, blockSize, len(stream)-pos)
		}
		dst := blk[:min(size-len(out), lz4LegacyMaxBlock)]
		m, err := lz4.UncompressBlock(stream[pos:pos+int(blockSize)], dst)
		if err != nil {
			return nil, fmt.Errorf("lz4 block at offset %d (output offset %d, recorded total %d) is corrupt or larger than recorded: %w", pos-4, len(out), size, err)
		}
		out = append(out, dst[:m]...)
		pos += int(blockSize)
	}
	return out, nil
}

// checkX86ELF verifies that b starts with an x86-64 executable ELF image.
func checkX86ELF(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF image: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("ELF image is %v %v, want ELFCLASS64 EM_X86_64", f.Class, f.Machine)
	}
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("ELF image type is %v, want ET_EXEC", f.Type)
	}
	if len(f.Progs) == 0 {
		return errors.New("ELF image has no program headers to load")
	}
	return nil
}
