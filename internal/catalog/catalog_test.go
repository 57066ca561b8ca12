package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
)

func newService(t *testing.T) (*Service, paths.Layout, *store.Store) {
	t.Helper()
	dir := t.TempDir()
	vars := map[string]string{"BANGER_SOCKET": filepath.Join(dir, "s.sock")}
	l, err := paths.New(func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, os.Getuid(), dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(l.DBFile())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(Options{Store: st, Layout: l, Config: func() (config.Config, error) { return config.Default(l), nil }})
	return s, l, st
}

func TestUnknownNamesSayWhatExists(t *testing.T) {
	s, _, _ := newService(t)
	ctx := context.Background()
	_, err := s.Kernel(ctx, "linux-99", nil)
	if !errors.Is(err, failure.NotFound) || !strings.Contains(err.Error(), "debian-6.1") {
		t.Errorf("unknown kernel: err = %v, want failure.NotFound listing debian-6.1", err)
	}
	_, err = s.Image(ctx, "arch-linux", nil)
	if !errors.Is(err, failure.NotFound) || !strings.Contains(err.Error(), "debian-bookworm") {
		t.Errorf("unknown image: err = %v, want failure.NotFound listing debian-bookworm", err)
	}
}

func TestInstalledImageIsUsedWithoutBuilding(t *testing.T) {
	s, l, st := newService(t)
	dir := filepath.Join(l.ImagesDir(), "custom")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs.ext4"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.PutImage(context.Background(), &store.Image{Name: "custom", Version: "v1", Dir: dir, SizeBytes: 1}); err != nil {
		t.Fatal(err)
	}
	img, err := s.Image(context.Background(), "custom", nil)
	if err != nil || img.Rootfs != filepath.Join(dir, "rootfs.ext4") {
		t.Errorf("Image = %+v, %v; want the recorded rootfs", img, err)
	}
	// A record whose file is gone is not "installed": with no recipe it is not found.
	os.Remove(filepath.Join(dir, "rootfs.ext4"))
	if _, err := s.Image(context.Background(), "custom", nil); !errors.Is(err, failure.NotFound) {
		t.Errorf("record without its file: err = %v, want failure.NotFound", err)
	}
}

func TestKernelsListsRecords(t *testing.T) {
	s, _, st := newService(t)
	err := st.PutKernel(context.Background(), &store.Kernel{Name: "debian-6.1", Release: "6.1.0-50-cloud-amd64", Dir: "/k",
		Manifest: []byte(`{"package":"linux-image-6.1.0-50-cloud-amd64","version":"6.1.176-1"}`)})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := s.Kernels.List(context.Background())
	if err != nil || len(ks) != 1 || ks[0].Version != "6.1.176-1" || ks[0].Package != "linux-image-6.1.0-50-cloud-amd64" {
		t.Errorf("Kernels = %+v, %v", ks, err)
	}
}
