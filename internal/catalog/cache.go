package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/oci"
)

// PruneResult says what a cache prune freed (or would free).
type PruneResult struct {
	DryRun   bool          `json:"dry_run"`
	Layers   []oci.Blob    `json:"layers"`   // OCI layer blobs no image version was made from
	Bundles  []CachedFile  `json:"bundles"`  // downloaded catalog bundles (downloaded again when needed)
	Versions []VersionInfo `json:"versions"` // image versions no VM or snapshot uses
	Freed    int64         `json:"freed_bytes"`
}

// CachedFile is a file in the cache.
type CachedFile struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// PruneCache frees the layer blobs no installed image version was pulled from, the
// downloaded bundles and the image versions no VM or snapshot uses; with dryRun it only says what it
// would free.
func (s *Service) PruneCache(ctx context.Context, dryRun bool) (PruneResult, error) {
	res := PruneResult{DryRun: dryRun}
	var err error
	if res.Versions, err = s.Images.CollectVersions(ctx, dryRun); err != nil {
		return res, err
	}
	gone := map[string]bool{}
	for _, v := range res.Versions {
		gone[v.Name+"@"+v.Version] = true
		res.Freed += v.SizeBytes
	}
	versions, err := s.o.Store.ImageVersions(ctx, "")
	if err != nil {
		return res, err
	}
	keep := map[string]bool{}
	for _, v := range versions {
		if gone[v.Name+"@"+v.Version] {
			continue
		}
		var m image.Manifest
		if json.Unmarshal(v.Manifest, &m) == nil && m.OCI != nil {
			for _, l := range m.OCI.Layers {
				keep[l] = true
			}
		}
	}
	if res.Layers, err = s.Images.ociCache().Prune(keep, dryRun); err != nil {
		return res, err
	}
	for _, b := range res.Layers {
		res.Freed += b.Size
	}
	entries, _ := os.ReadDir(s.bundlesDir())
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		p := filepath.Join(s.bundlesDir(), e.Name())
		if !dryRun {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return res, err
			}
		}
		res.Bundles = append(res.Bundles, CachedFile{Path: p, Size: info.Size()})
		res.Freed += info.Size()
	}
	return res, nil
}
