package disk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestCloneCopiesAndLeavesTheSourceAlone(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := bytes.Repeat([]byte("disk"), 5000)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Clone(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	// Writing the clone leaves the source as it was (a reflink shares blocks until written).
	if err := os.WriteFile(dst, []byte("changed"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(src); !bytes.Equal(got, data) {
		t.Fatal("writing the clone changed the source")
	}
}

func TestCloneRefusesAnExistingDestinationAndKeepsIt(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	for _, p := range []string{src, dst} {
		if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Clone(context.Background(), src, dst); err == nil {
		t.Fatal("Clone over an existing file succeeded")
	}
	if got, _ := os.ReadFile(dst); string(got) != dst {
		t.Fatal("a refused Clone changed the existing destination")
	}
}

func TestCloneRemovesItsCopyWhenCancelled(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := os.WriteFile(src, bytes.Repeat([]byte("x"), 1<<16), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if reflinked, err := Clone(ctx, src, dst); err == nil && !reflinked {
		t.Fatal("a cancelled Clone succeeded")
	} else if err != nil {
		if _, serr := os.Stat(dst); !os.IsNotExist(serr) {
			t.Fatal("a cancelled Clone left its copy")
		}
	}
}
