package sparse

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A file of data, a hole, data again and a trailing hole.
func holey(t *testing.T) (*os.File, []byte) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "src"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	a, b := bytes.Repeat([]byte("a"), 3*Block), bytes.Repeat([]byte("b"), Block+17)
	if _, err := f.WriteAt(a, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(32 << 20); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 32<<20)
	copy(want, a)
	copy(want[8<<20:], b)
	return f, want
}

func blocks(t *testing.T, f *os.File) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func TestCopyKeepsContentsAndHoles(t *testing.T) {
	src, want := holey(t)
	dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := Copy(context.Background(), dst, src); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the copy's contents differ from the source's")
	}
	// 28 KiB of data in a 32 MiB file: a copy that filled the holes would take 32 MiB.
	if b := blocks(t, dst); b*512 > 1<<20 {
		t.Errorf("the copy takes %d bytes on disk for 28 KiB of data: its holes were filled", b*512)
	}
}

func TestCopyStopsWhenCancelled(t *testing.T) {
	src, _ := holey(t)
	dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Copy(ctx, dst, src); !errors.Is(err, context.Canceled) {
		t.Fatalf("Copy with a cancelled context = %v, want context.Canceled", err)
	}
}
