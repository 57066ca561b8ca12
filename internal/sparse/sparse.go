// Package sparse writes data into files as holes where it is zeros, so that disk images —
// mostly empty file systems — take on the host only the space their contents need.
package sparse

import (
	"bytes"
	"os"
)

// Block is the unit WriteAt looks at: a 4 KiB run of zeros becomes a hole.
const Block = 4096

var zeros [Block]byte

// WriteAt writes b to f at off, except every Block of b (counted from b's start) that is all
// zeros, which it skips: in a new or truncated file a skipped block is a hole and reads back
// as zeros. It returns the end offset of the last byte it wrote (off when it wrote none); a
// file whose data ends in zeros needs a Truncate to its full length, which holes do not give
// it.
func WriteAt(f *os.File, b []byte, off int64) (end int64, err error) {
	end = off
	for i := 0; i < len(b); {
		j := min(i+Block, len(b))
		if bytes.Equal(b[i:j], zeros[:j-i]) {
			i = j
			continue
		}
		for j < len(b) {
			k := min(j+Block, len(b))
			if bytes.Equal(b[j:k], zeros[:k-j]) {
				break
			}
			j = k
		}
		if _, err := f.WriteAt(b[i:j], off+int64(i)); err != nil {
			return end, err
		}
		end = off + int64(j)
		i = j
	}
	return end, nil
}
