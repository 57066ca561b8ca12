package kernel

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// unxz decodes an xz stream as x86 kernels are compressed (scripts/xz_wrap.sh: "xz --x86
// --lzma2"). github.com/ulikunitz/xz's Reader only accepts a lone LZMA2 filter, so this reads
// the xz container itself, decodes each block's LZMA2 data with ulikunitz's lzma.Reader2, and
// undoes the optional x86 BCJ filter. The block checks (CRC32, CRC64 or SHA-256) are verified;
// the index and footer, which only repeat sizes, are not read.
func unxz(stream []byte, size int) ([]byte, error) {
	if len(stream) < 12 || !bytes.HasPrefix(stream, []byte{0xfd, '7', 'z', 'X', 'Z', 0}) {
		return nil, errors.New("missing xz stream header")
	}
	flags := stream[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(stream[8:12]) {
		return nil, errors.New("xz stream header checksum mismatch")
	}
	if flags[0] != 0 || flags[1]&0xf0 != 0 {
		return nil, fmt.Errorf("unsupported xz stream flags % x", flags)
	}
	newCheck, checkSize, err := xzCheck(flags[1])
	if err != nil {
		return nil, err
	}
	var out []byte // grows with what decodes, not to the size the trailer claims
	pos := 12
	for {
		if pos >= len(stream) {
			return nil, errors.New("xz stream ends before its index; truncated?")
		}
		if stream[pos] == 0 {
			return out, nil // index indicator: all blocks decoded
		}
		hdr, err := parseXZBlockHeader(stream[pos:], size)
		if err != nil {
			return nil, fmt.Errorf("xz block at offset %d: %w", pos, err)
		}
		pos += hdr.size
		br := bytes.NewReader(stream[pos:])
		lr, err := lzma.Reader2Config{DictCap: hdr.dictCap}.NewReader2(br)
		if err != nil {
			return nil, fmt.Errorf("xz block at offset %d: %w", pos, err)
		}
		start := len(out)
		buf := bytes.NewBuffer(out)
		if _, err := io.Copy(buf, io.LimitReader(lr, int64(size-start)+1)); err != nil {
			return nil, fmt.Errorf("xz block at offset %d: %w", pos, err)
		}
		out = buf.Bytes()
		if len(out) > size {
			return nil, fmt.Errorf("xz data exceeds the recorded %d bytes", size)
		}
		block := out[start:]
		if hdr.bcjX86 {
			bcjX86Decode(block, hdr.bcjStart)
		}
		consumed := len(stream[pos:]) - br.Len()
		pos += consumed + (4-consumed%4)%4 // block padding
		if checkSize > 0 {
			if len(stream)-pos < checkSize {
				return nil, errors.New("xz block check is truncated")
			}
			h := newCheck()
			h.Write(block)
			if !bytes.Equal(h.Sum(nil), stream[pos:pos+checkSize]) {
				return nil, fmt.Errorf("xz block at offset %d fails its integrity check; corrupt data", pos)
			}
			pos += checkSize
		}
	}
}

func xzCheck(id byte) (func() hash.Hash, int, error) {
	switch id {
	case 0x00:
		return nil, 0, nil
	case 0x01:
		return func() hash.Hash { return reversedCRC32{crc32.NewIEEE()} }, 4, nil
	case 0x04:
		return func() hash.Hash { return reversedCRC64{crc64.New(crc64.MakeTable(crc64.ECMA))} }, 8, nil
	case 0x0a:
		return sha256.New, 32, nil
	}
	return nil, 0, fmt.Errorf("unsupported xz check type %#x", id)
}

// xz stores CRC32 and CRC64 little-endian; hash.Hash.Sum appends big-endian.
type reversedCRC32 struct{ hash.Hash32 }

func (c reversedCRC32) Sum(b []byte) []byte { return binary.LittleEndian.AppendUint32(b, c.Sum32()) }

type reversedCRC64 struct{ hash.Hash64 }

func (c reversedCRC64) Sum(b []byte) []byte { return binary.LittleEndian.AppendUint64(b, c.Sum64()) }

// xzBlockHeader is the part of an xz block header needed to decode the block.
type xzBlockHeader struct {
	size     int // header size in bytes
	dictCap  int
	bcjX86   bool
	bcjStart uint32
}

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

func parseXZBlockHeader(b []byte, outputSize int) (xzBlockHeader, error) {
	h := xzBlockHeader{size: (int(b[0]) + 1) * 4}
	if len(b) < h.size {
		return h, errors.New("truncated block header")
	}
	raw := b[:h.size]
	if crc32.ChecksumIEEE(raw[:h.size-4]) != binary.LittleEndian.Uint32(raw[h.size-4:]) {
		return h, errors.New("block header checksum mismatch")
	}
	flags := raw[1]
	if flags&0x3c != 0 {
		return h, fmt.Errorf("unsupported block flags %#x", flags)
	}
	r := bytes.NewReader(raw[2 : h.size-4])
	if flags&0x40 != 0 { // compressed size present
		if _, err := binary.ReadUvarint(r); err != nil {
			return h, errors.New("bad compressed size")
		}
	}
	if flags&0x80 != 0 { // uncompressed size present
		if _, err := binary.ReadUvarint(r); err != nil {
			return h, errors.New("bad uncompressed size")
		}
	}
	filters := int(flags&3) + 1
	for i := range filters {
		id, err1 := binary.ReadUvarint(r)
		n, err2 := binary.ReadUvarint(r)
		if err1 != nil || err2 != nil || n > uint64(r.Len()) {
			return h, errors.New("bad filter flags")
		}
		props := make([]byte, n)
		r.Read(props)
		last := i == filters-1
		switch {
		case id == xzFilterX86 && !last && i == 0:
			h.bcjX86 = true
			switch len(props) {
			case 0:
			case 4:
				h.bcjStart = binary.LittleEndian.Uint32(props)
			default:
				return h, errors.New("bad x86 BCJ filter properties")
			}
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return h, errors.New("bad LZMA2 filter properties")
			}
			h.dictCap = lzma2DictSize(props[0], outputSize)
		default:
			return h, fmt.Errorf("unsupported xz filter chain (filter %#x at position %d); only [x86 BCJ,] LZMA2 is supported", id, i)
		}
	}
	return h, nil
}

// lzma2DictSize decodes the LZMA2 dictionary-size property. No match can reach further back
// than the output is long, so the dictionary is capped at the expected output size: that
// avoids allocating the encoder's full 32 MiB (or a corrupt header's 4 GiB) needlessly.
func lzma2DictSize(p byte, outputSize int) int {
	size := int64(0xffffffff)
	if p < 40 {
		size = int64(2|(p&1)) << (p/2 + 11)
	}
	return int(max(min(size, int64(outputSize)), lzma.MinDictCap))
}

// bcjX86Decode undoes the x86 branch/call/jump filter in place: E8/E9 instructions whose
// 32-bit operands were converted from relative to absolute addresses get them back.
// A transcription of bcj_x86() from XZ Embedded (public domain), with the whole buffer at once.
func bcjX86Decode(buf []byte, startPos uint32) {
	maskToAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskToBitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	testMSByte := func(b byte) bool { return b == 0x00 || b == 0xff }
	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	prevMask := uint32(0)
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskToBitNum[prevMask])]
				if !maskToAllowed[prevMask] || testMSByte(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !testMSByte(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (startPos + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := maskToBitNum[prevMask] * 8
			if !testMSByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}
