package sparse

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWriteAtLeavesHolesForZeroBlocks(t *testing.T) {
	data := make([]byte, 8*Block+100)
	copy(data[Block:], "first")                          // block 1
	copy(data[2*Block:], bytes.Repeat([]byte{1}, Block)) // block 2, joined with block 1
	copy(data[5*Block+7:], "second")                     // block 5
	for _, off := range []int64{0, 3 * Block, 1000} {
		f, err := os.Create(filepath.Join(t.TempDir(), "img"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		end, err := WriteAt(f, data, off)
		if err != nil {
			t.Fatal(err)
		}
		if want := off + 6*Block; end != want {
			t.Errorf("off %d: end = %d, want %d (the end of the last block with data)", off, end, want)
		}
		if err := f.Truncate(off + int64(len(data))); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[off:], data) || !bytes.Equal(got[:off], make([]byte, off)) {
			t.Errorf("off %d: the file does not read back as the data", off)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		// Three blocks hold data (four when off is not aligned and they straddle one more);
		// the file system may round up, but far less than the file's nine-odd blocks.
		if allocated := st.Blocks * 512; allocated >= int64(len(data)) {
			t.Errorf("off %d: %d bytes allocated for %d bytes of mostly zeros: no holes", off, allocated, len(data))
		}
	}
}

func TestWriteAtOfZerosWritesNothing(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	end, err := WriteAt(f, make([]byte, 3*Block+5), 42)
	if err != nil || end != 42 {
		t.Errorf("WriteAt of zeros = %d, %v; want 42 (nothing written)", end, err)
	}
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Errorf("file size %d, want 0", fi.Size())
	}
}
