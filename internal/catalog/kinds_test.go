package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/image"
)

// imageBundle writes a bundle that passes every check up to reading its rootfs member (which
// is not a file system: nothing here gets that far).
func imageBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, image.RootfsFile)
	if err := os.WriteFile(rootfs, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "img.bundle")
	m := bundle.Manifest{Kind: bundle.KindImage, Name: "bundled", Arch: debian.HostArch()}
	if _, err := bundle.Write(context.Background(), path, m, []bundle.File{{Name: image.RootfsFile, Path: rootfs}}, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// An import fails as what went wrong: a bundle that is not one is Invalid (the request's
// fault, 400), but a disk that fails under it is IO and a cancelled import is cancelled —
// neither is answered "invalid".
func TestImportErrorsKeepTheirKind(t *testing.T) {
	s, _, _ := newService(t)

	garbage := filepath.Join(t.TempDir(), "garbage.bundle")
	os.WriteFile(garbage, []byte("not a bundle"), 0o644)
	if _, err := s.Images.Import(context.Background(), garbage, "", nil); failure.Of(err) != failure.Invalid {
		t.Errorf("import of a file that is no bundle = %v (kind %v), want Invalid", err, failure.Of(err))
	}

	// Reading /proc/self/mem at offset 0 (never mapped) fails with EIO, as a failing disk does.
	_, err := s.Images.Import(context.Background(), "/proc/self/mem", "", nil)
	if !errors.Is(err, syscall.EIO) || failure.Of(err) != failure.IO || errors.Is(err, failure.Invalid) {
		t.Errorf("import that cannot read its bundle = %v (kind %v), want IO, not Invalid", err, failure.Of(err))
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Images.Import(ctx, imageBundle(t), "", nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, failure.Invalid) {
		t.Errorf("cancelled import = %v, want context.Canceled, not Invalid", err)
	}
	if versions, err := s.o.Store.ImageVersions(context.Background(), ""); err != nil || len(versions) != 0 {
		t.Errorf("failed imports left versions %v (%v)", versions, err)
	}
}

// A kernel import that cannot read its vmlinux is IO, and one given something that is not a
// kernel stays Invalid.
func TestKernelImportErrorsKeepTheirKind(t *testing.T) {
	s, _, _ := newService(t)
	_, err := s.Kernels.Import(context.Background(), ImportKernelRequest{Name: "k1", Vmlinux: "/proc/self/mem"}, nil)
	if failure.Of(err) != failure.IO || errors.Is(err, failure.Invalid) {
		t.Errorf("import of an unreadable vmlinux = %v (kind %v), want IO, not Invalid", err, failure.Of(err))
	}
	junk := filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(junk, []byte("not a kernel"), 0o644)
	_, err = s.Kernels.Import(context.Background(), ImportKernelRequest{Name: "k2", Vmlinux: junk}, nil)
	if failure.Of(err) != failure.Invalid {
		t.Errorf("import of a file that is no kernel = %v (kind %v), want Invalid", err, failure.Of(err))
	}
}
