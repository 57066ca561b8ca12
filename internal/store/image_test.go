package store

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/failure"
)

func TestImages(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()

	if imgs, err := s.ListImages(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("ListImages on an empty store = %v, %v; want none", imgs, err)
	}
	b := &Image{Name: "ubuntu", Version: "u1", Dir: "/s/images/ubuntu", SizeBytes: 2 << 30, Source: "oci:ubuntu:24.04"}
	a := &Image{Name: "debian-bookworm", Version: "d1", Dir: "/s/images/debian", Manifest: json.RawMessage(`{"packages":["openssh-server"]}`), SizeBytes: 1 << 30, Kernel: "debian-6.1"}
	for _, img := range []*Image{b, a} {
		if err := s.PutImage(ctx, img); err != nil {
			t.Fatalf("PutImage(%s): %v", img.Name, err)
		}
		if img.CreatedAt.IsZero() || img.CreatedAt.Location() != time.UTC {
			t.Errorf("PutImage(%s) CreatedAt = %v, want now in UTC", img.Name, img.CreatedAt)
		}
	}

	got, err := s.GetImage(ctx, "debian-bookworm")
	if err != nil {
		t.Fatalf("GetImage: %v", err)
	}
	if !reflect.DeepEqual(got, *a) {
		t.Errorf("GetImage =\n %+v\nwant\n %+v", got, *a)
	}

	list, err := s.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "debian-bookworm" || list[1].Name != "ubuntu" {
		t.Errorf("ListImages = %+v, want debian-bookworm then ubuntu", list)
	}
	if list[1].Manifest != nil {
		t.Errorf("ubuntu Manifest = %q, want nil", list[1].Manifest)
	}

	// Put replaces.
	replaced := &Image{Name: "ubuntu", Version: "u2", Dir: "/s/images/ubuntu2", SizeBytes: 3, CreatedAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := s.PutImage(ctx, replaced); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetImage(ctx, "ubuntu"); err != nil || !reflect.DeepEqual(got, *replaced) {
		t.Errorf("GetImage after replace = %+v, %v; want %+v", got, err, *replaced)
	}
	// The replaced version stays, newest first; the current one cannot be deleted alone.
	vs, err := s.ImageVersions(ctx, "ubuntu")
	if err != nil || len(vs) != 2 || vs[0].Version != "u2" || vs[1].Version != "u1" || vs[1].Dir != "/s/images/ubuntu" {
		t.Fatalf("ImageVersions = %+v, %v; want u2 then u1", vs, err)
	}
	if err := s.DeleteImageVersion(ctx, "ubuntu", "u2"); !errors.Is(err, failure.NotFound) {
		t.Errorf("DeleteImageVersion(current) = %v; want it refused", err)
	}
	if err := s.DeleteImageVersion(ctx, "ubuntu", "u1"); err != nil {
		t.Errorf("DeleteImageVersion(old) = %v", err)
	}
	if v, err := s.GetImageVersion(ctx, "ubuntu", "u2"); err != nil || v.Dir != "/s/images/ubuntu2" {
		t.Errorf("GetImageVersion = %+v, %v", v, err)
	}
	if _, err := s.GetImageVersion(ctx, "ubuntu", "u1"); !errors.Is(err, failure.NotFound) {
		t.Errorf("GetImageVersion(deleted) = %v; want failure.NotFound", err)
	}
	if err := s.PutImage(ctx, &Image{Name: "x"}); err == nil {
		t.Error("PutImage without a version succeeded")
	}

	if err := s.DeleteImage(ctx, "ubuntu"); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	_, err = s.GetImage(ctx, "ubuntu")
	if !errors.Is(err, failure.NotFound) || err.Error() != `image "ubuntu": not found` {
		t.Errorf("GetImage after delete = %v, want `image \"ubuntu\": not found` matching failure.NotFound", err)
	}
	err = s.DeleteImage(ctx, "ubuntu")
	if !errors.Is(err, failure.NotFound) || err.Error() != `delete image "ubuntu": not found` {
		t.Errorf("DeleteImage of a missing image = %v, want failure.NotFound", err)
	}
	if vs, err := s.ImageVersions(ctx, "ubuntu"); err != nil || len(vs) != 0 {
		t.Errorf("versions after DeleteImage = %+v, %v; want none", vs, err)
	}
}

// TestMigrationPinsExistingImagesAndVMs opens a database of schema 2 with an image built
// before versions existed and a VM on it: the image becomes its own first version (named after
// its rootfs sha256) and the VM is pinned to it.
func TestMigrationPinsExistingImagesAndVMs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	old, err := open(ctx, path, migrations[:2])
	if err != nil {
		t.Fatal(err)
	}
	_, err = old.db.ExecContext(ctx, `INSERT INTO images (name, dir, manifest, size_bytes, created_at) VALUES
		('debian-bookworm', '/s/images/debian-bookworm', '{"rootfs_sha256":"0123456789abcdef0123"}', 5, '2026-01-01T00:00:00.000000000Z'),
		('odd', '/s/images/odd', NULL, 1, '2026-01-01T00:00:00.000000000Z')`)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*VM{{Name: "a", Image: "debian-bookworm"}, {Name: "b", Image: "odd"}, {Name: "c", Image: "gone"}} {
		v.State, v.Kernel, v.VMM, v.Accel, v.Dir = "stopped", "debian-6.1", "qemu", "tcg", "/d"
		if err := old.CreateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()

	s, err := open(ctx, path, migrations)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer s.Close()
	img, err := s.GetImage(ctx, "debian-bookworm")
	if err != nil || img.Version != "0123456789ab" || img.Dir != "/s/images/debian-bookworm" {
		t.Errorf("migrated image = %+v, %v; want version 0123456789ab", img, err)
	}
	if v, err := s.GetImageVersion(ctx, "odd", "legacy"); err != nil || v.Dir != "/s/images/odd" {
		t.Errorf("image without a manifest: version %+v, %v; want \"legacy\"", v, err)
	}
	for name, want := range map[string]string{"a": "debian-bookworm@0123456789ab", "b": "odd@legacy", "c": "gone"} {
		if vm, err := s.GetVM(ctx, name); err != nil || vm.Image != want {
			t.Errorf("vm %s image = %q, %v; want %q", name, vm.Image, err, want)
		}
	}
}

func TestKernels(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()

	if ks, err := s.ListKernels(ctx); err != nil || len(ks) != 0 {
		t.Fatalf("ListKernels on an empty store = %v, %v; want none", ks, err)
	}
	b := &Kernel{Name: "mainline-6.12", Release: "6.12.1", Dir: "/s/kernels/mainline"}
	a := &Kernel{Name: "debian-6.1", Release: "6.1.0-28-amd64", Dir: "/s/kernels/debian", Manifest: json.RawMessage(`{"modules":["virtio_blk"]}`)}
	for _, k := range []*Kernel{b, a} {
		if err := s.PutKernel(ctx, k); err != nil {
			t.Fatalf("PutKernel(%s): %v", k.Name, err)
		}
	}

	got, err := s.GetKernel(ctx, "debian-6.1")
	if err != nil {
		t.Fatalf("GetKernel: %v", err)
	}
	if !reflect.DeepEqual(got, *a) {
		t.Errorf("GetKernel =\n %+v\nwant\n %+v", got, *a)
	}

	list, err := s.ListKernels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "debian-6.1" || list[1].Name != "mainline-6.12" {
		t.Errorf("ListKernels = %+v, want debian-6.1 then mainline-6.12", list)
	}

	replaced := &Kernel{Name: "debian-6.1", Release: "6.1.0-30-amd64", Dir: "/s/kernels/debian2"}
	if err := s.PutKernel(ctx, replaced); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetKernel(ctx, "debian-6.1"); err != nil || !reflect.DeepEqual(got, *replaced) {
		t.Errorf("GetKernel after replace = %+v, %v; want %+v", got, err, *replaced)
	}

	if err := s.DeleteKernel(ctx, "debian-6.1"); err != nil {
		t.Fatalf("DeleteKernel: %v", err)
	}
	_, err = s.GetKernel(ctx, "debian-6.1")
	if !errors.Is(err, failure.NotFound) || err.Error() != `kernel "debian-6.1": not found` {
		t.Errorf("GetKernel after delete = %v, want failure.NotFound", err)
	}
	if err := s.DeleteKernel(ctx, "debian-6.1"); !errors.Is(err, failure.NotFound) {
		t.Errorf("DeleteKernel of a missing kernel = %v, want failure.NotFound", err)
	}
}
