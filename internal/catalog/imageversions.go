package catalog

// An image's versions: how a new one is staged and published, which VMs use each, and how
// the ones nobody uses are collected.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
)

// VersionInfo describes one version of an image.
type VersionInfo struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	Dir       string    `json:"dir"`
	SizeBytes int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	Current   bool      `json:"current,omitempty"`
	UsedBy    []string  `json:"used_by,omitempty"` // VMs created from it
	// Snapshots are the user snapshots taken of VMs on it: restoring one needs it. Boot
	// snapshots (banger's cache) are not named, but keep it as well.
	Snapshots []string `json:"snapshots,omitempty"`
	boot      int      // boot snapshots taken on it
}

// stagingPath returns a path (not yet existing) to build a new version of an image in, next to
// where its versions live.
func (im *Images) stagingPath(name, what string) (string, error) {
	dir := im.imageDir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(dir, "."+what+"-"+randomSuffix()), nil
}

// publish moves a staged image directory to images/<name>/<version>, makes it the image's
// current version, removes the boot snapshots of its other versions (new VMs boot this one)
// and collects versions nothing uses any more.
func (im *Images) publish(ctx context.Context, m image.Manifest, staged, source string) (image.Manifest, error) {
	final := filepath.Join(im.imageDir(m.Name), m.Version())
	if _, err := os.Stat(final); err == nil {
		os.RemoveAll(staged) // the same contents are already here
	} else if err := os.Rename(staged, final); err != nil {
		os.RemoveAll(staged)
		return image.Manifest{}, fmt.Errorf("publish image %s: %w", m.Name, err)
	}
	raw, _ := json.Marshal(m)
	rec := store.Image{Name: m.Name, Version: m.Version(), Dir: final, Manifest: raw, SizeBytes: m.RootfsSize, Kernel: m.Kernel, Source: source}
	if err := im.o.Store.PutImage(ctx, &rec); err != nil {
		return image.Manifest{}, fmt.Errorf("record image %s: %w", m.Name, err)
	}
	im.dropReplacedBootSnapshots(m.Name + "@" + m.Version())
	if _, err := im.CollectVersions(ctx, false); err != nil {
		im.o.Log.Warn("collect unused image versions", "err", err)
	}
	return m, nil
}

// versionInfos lists every image version with the VMs created from it and the snapshots
// taken on it.
func (im *Images) versionInfos(ctx context.Context) ([]VersionInfo, error) {
	versions, err := im.o.Store.ImageVersions(ctx, "")
	if err != nil {
		return nil, err
	}
	vms, err := im.o.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	images, err := im.o.Store.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	snaps, err := im.o.Snapshots.List()
	if err != nil {
		return nil, err // collection must not miss a snapshot's version
	}
	current := map[string]string{}
	for _, img := range images {
		current[img.Name] = img.Version
	}
	out := make([]VersionInfo, 0, len(versions))
	for _, v := range versions {
		info := VersionInfo{Name: v.Name, Version: v.Version, Dir: v.Dir, SizeBytes: v.SizeBytes, CreatedAt: v.CreatedAt, Current: current[v.Name] == v.Version}
		for _, vm := range vms {
			if vm.Spare() {
				continue // a spare goes with its boot snapshot, which keeps the version
			}
			n, ver := SplitRef(vm.Image)
			if n == v.Name && (ver == v.Version || ver == "" && info.Current) {
				info.UsedBy = append(info.UsedBy, vm.Name)
			}
		}
		sort.Strings(info.UsedBy)
		for _, sn := range snaps {
			n, ver := SplitRef(sn.Image)
			switch {
			case n != v.Name || ver != v.Version && (ver != "" || !info.Current):
			case sn.Kind == snapshot.Boot:
				info.boot++
			default:
				info.Snapshots = append(info.Snapshots, sn.Name)
			}
		}
		sort.Strings(info.Snapshots)
		out = append(out, info)
	}
	return out, nil
}

// CollectVersions removes image versions that are not current, that no VM was created from,
// that no snapshot (user or boot) was taken on and that were not just handed out to a VM
// being created, and returns them. With dryRun it only says which.
func (im *Images) CollectVersions(ctx context.Context, dryRun bool) ([]VersionInfo, error) {
	versions, err := im.versionInfos(ctx)
	if err != nil {
		return nil, err
	}
	var removed []VersionInfo
	var errs []error
	for _, v := range versions {
		if v.Current || len(v.UsedBy) > 0 || len(v.Snapshots) > 0 || v.boot > 0 || im.leased(v.Name+"@"+v.Version) {
			continue
		}
		if !dryRun {
			if err := im.o.Store.DeleteImageVersion(ctx, v.Name, v.Version); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := os.RemoveAll(v.Dir); err != nil {
				errs = append(errs, err)
			}
			im.o.Log.Info("removed unused image version", "image", v.Name, "version", v.Version)
		}
		removed = append(removed, v)
	}
	return removed, errors.Join(errs...)
}

// adoptLegacyImages moves image directories of the layout before versions
// (images/<name>/rootfs.ext4) to images/<name>/<version>/. A VM running on one keeps its
// open file; the rename does not disturb it.
func (im *Images) adoptLegacyImages(ctx context.Context) error {
	versions, err := im.o.Store.ImageVersions(ctx, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range versions {
		legacy := filepath.Join(im.o.Layout.ImagesDir(), v.Name)
		if filepath.Clean(v.Dir) != legacy {
			continue
		}
		if _, err := os.Stat(filepath.Join(legacy, image.RootfsFile)); err != nil {
			continue
		}
		aside := filepath.Join(im.o.Layout.ImagesDir(), "."+v.Name+".old-"+randomSuffix())
		final := filepath.Join(legacy, v.Version)
		if err := os.Rename(legacy, aside); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Mkdir(legacy, 0o700); err != nil {
			errs = append(errs, err)
			_ = os.Rename(aside, legacy)
			continue
		}
		if err := os.Rename(aside, final); err != nil {
			errs = append(errs, err)
			continue
		}
		v.Dir = final
		img, err := im.o.Store.GetImage(ctx, v.Name)
		if err == nil && img.Version == v.Version {
			img.Dir = final
			err = im.o.Store.PutImage(ctx, &img)
		} else if err == nil {
			err = im.o.Store.PutImageVersion(ctx, &v)
		}
		if err != nil {
			errs = append(errs, err)
		}
		im.o.Log.Info("moved image into its version directory", "image", v.Name, "version", v.Version)
	}
	return errors.Join(errs...)
}
