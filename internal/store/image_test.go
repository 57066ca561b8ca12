package store

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestImages(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()

	if imgs, err := s.ListImages(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("ListImages on an empty store = %v, %v; want none", imgs, err)
	}
	b := &Image{Name: "ubuntu", Dir: "/s/images/ubuntu", SizeBytes: 2 << 30}
	a := &Image{Name: "debian-bookworm", Dir: "/s/images/debian", Manifest: json.RawMessage(`{"packages":["openssh-server"]}`), SizeBytes: 1 << 30}
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
	replaced := &Image{Name: "ubuntu", Dir: "/s/images/ubuntu2", SizeBytes: 3, CreatedAt: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := s.PutImage(ctx, replaced); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetImage(ctx, "ubuntu"); err != nil || !reflect.DeepEqual(got, *replaced) {
		t.Errorf("GetImage after replace = %+v, %v; want %+v", got, err, *replaced)
	}

	if err := s.DeleteImage(ctx, "ubuntu"); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	_, err = s.GetImage(ctx, "ubuntu")
	if !errors.Is(err, ErrNotFound) || err.Error() != `image "ubuntu": not found` {
		t.Errorf("GetImage after delete = %v, want `image \"ubuntu\": not found` matching ErrNotFound", err)
	}
	err = s.DeleteImage(ctx, "ubuntu")
	if !errors.Is(err, ErrNotFound) || err.Error() != `delete image "ubuntu": not found` {
		t.Errorf("DeleteImage of a missing image = %v, want ErrNotFound", err)
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
	if !errors.Is(err, ErrNotFound) || err.Error() != `kernel "debian-6.1": not found` {
		t.Errorf("GetKernel after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteKernel(ctx, "debian-6.1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteKernel of a missing kernel = %v, want ErrNotFound", err)
	}
}
