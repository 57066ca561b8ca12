package bundle

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// hugeWindowFrame is a 10-byte zstd frame that declares a 512 MiB window (no content size,
// not single-segment) and holds one RLE block of one byte. A decoder without a window limit
// allocates the whole window before it decodes that byte.
func hugeWindowFrame() []byte {
	const windowExp = 29 - 10              // Window_Descriptor: Exponent = log2(window) - 10, Mantissa 0
	blockHeader := uint32(1) | 1<<1 | 1<<3 // last block, RLE, size 1
	return []byte{
		0x28, 0xb5, 0x2f, 0xfd, // magic
		0x00,           // Frame_Header_Descriptor: no FCS, no checksum, no dictionary
		windowExp << 3, // Window_Descriptor
		byte(blockHeader), byte(blockHeader >> 8), byte(blockHeader >> 16),
		'A',
	}
}

// allocated returns the bytes the process allocated while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestReadRefusesHugeWindowWithoutAllocatingIt(t *testing.T) {
	frame := hugeWindowFrame()
	var err error
	n := allocated(func() {
		_, err = Read(context.Background(), bytes.NewReader(frame), t.TempDir(), nil, nil)
	})
	if !errors.Is(err, zstd.ErrWindowSizeExceeded) {
		t.Errorf("Read of a frame declaring a 512 MiB window: %v; want ErrWindowSizeExceeded", err)
	}
	t.Logf("Read of a %d-byte frame declaring a 512 MiB window allocated %d KiB", len(frame), n>>10)
	if n > 16<<20 {
		t.Errorf("Read allocated %d MiB for a %d-byte frame; the window must be refused, not allocated", n>>20, len(frame))
	}
}
