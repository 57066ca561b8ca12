package api

import (
	"encoding/json"
	"time"
)

// Image is an installed image and its current version.
type Image struct {
	Name      string         `json:"name"`
	Version   string         `json:"version,omitempty"`
	Dir       string         `json:"dir"`
	SizeBytes int64          `json:"size_bytes"`
	Kernel    string         `json:"kernel,omitempty"` // its VMs' kernel unless told otherwise
	Source    string         `json:"source,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	Versions  []ImageVersion `json:"versions,omitempty"`
	// Manifest is the current version's manifest (packages, origin, build facts); show only.
	Manifest json.RawMessage `json:"manifest,omitempty"`
}

// ImageVersion is one build, pull or import of an image. Versions stay while VMs or
// snapshots use them.
type ImageVersion struct {
	Version   string    `json:"version"`
	Dir       string    `json:"dir"`
	SizeBytes int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	Current   bool      `json:"current,omitempty"`
	UsedBy    []string  `json:"used_by,omitempty"`   // VMs created from it
	Snapshots []string  `json:"snapshots,omitempty"` // user snapshots taken on it (restoring one needs it)
}

// Kernel is an installed kernel.
type Kernel struct {
	Name      string          `json:"name"`
	Release   string          `json:"release"`
	Source    string          `json:"source,omitempty"` // "debian", "import" or "bundle"
	Package   string          `json:"package,omitempty"`
	Version   string          `json:"version,omitempty"`
	Dir       string          `json:"dir"`
	Modules   bool            `json:"modules,omitempty"`
	Initrd    bool            `json:"initrd,omitempty"`
	UsedBy    []string        `json:"used_by,omitempty"`   // VMs that boot it
	Snapshots []string        `json:"snapshots,omitempty"` // user snapshots taken with it (restoring one needs it)
	CreatedAt time.Time       `json:"created_at"`
	Manifest  json.RawMessage `json:"manifest,omitempty"`
}

// Prefixes of the ImagePullRequest.Ref forms that name a file or directory rather than a
// registry image, as skopeo and podman spell them (package oci parses them). The client makes
// the path after them absolute: the daemon runs in another directory.
const (
	LayoutPrefix  = "oci:"            // oci:PATH[:REF], an OCI image layout directory
	ArchivePrefix = "docker-archive:" // docker-archive:FILE[:NAME:TAG], a `docker save` tar
)

// ImagePullRequest is the body of POST /v1/images/pull.
type ImagePullRequest struct {
	Ref       string `json:"ref"`            // a catalog name, an OCI reference, oci:/abs/dir[:REF] or docker-archive:/abs/file[:NAME:TAG]
	Name      string `json:"name,omitempty"` // derived from Ref when empty
	SizeBytes int64  `json:"size_bytes,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
}

// ImageRegisterRequest is the body of POST /v1/images/register.
type ImageRegisterRequest struct {
	Name   string `json:"name"`
	Rootfs string `json:"rootfs"` // an absolute path on the daemon's host
	Kernel string `json:"kernel,omitempty"`
}

// ImageImportRequest is the body of POST /v1/images/import.
type ImageImportRequest struct {
	Path string `json:"path"`           // an absolute path on the daemon's host
	Name string `json:"name,omitempty"` // the bundle's name when empty
}

// ExportRequest is the body of POST /v1/images/{name}/export and /v1/kernels/{name}/export.
type ExportRequest struct {
	Path string `json:"path"` // an absolute path on the daemon's host
}

// Bundle is a written bundle file.
type Bundle struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// KernelImportRequest is the body of POST /v1/kernels/import; paths are absolute, on the
// daemon's host.
type KernelImportRequest struct {
	Name    string `json:"name"`
	Vmlinux string `json:"vmlinux"`
	Initrd  string `json:"initrd,omitempty"`
	Modules string `json:"modules,omitempty"`
}

// PruneRequest is the body of POST /v1/images/cache/prune.
type PruneRequest struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// PruneResult says what a prune freed, or would free.
type PruneResult struct {
	DryRun   bool           `json:"dry_run"`
	Layers   []CachedFile   `json:"layers"`   // OCI layer blobs no image version was made from
	Bundles  []CachedFile   `json:"bundles"`  // downloaded catalog bundles
	Versions []ImageVersion `json:"versions"` // image versions no VM or snapshot uses
	Freed    int64          `json:"freed_bytes"`
}

// CachedFile is one freed file: a layer by digest, a bundle by path.
type CachedFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Catalog is what can be had by name (GET /v1/catalog).
type Catalog struct {
	Images  []CatalogEntry `json:"images"`
	Kernels []CatalogEntry `json:"kernels"`
}

// CatalogEntry is one image or kernel of the catalog.
type CatalogEntry struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Kind        string `json:"kind"`             // images: recipe, oci, bundle; kernels: debian, bundle
	Origin      string `json:"origin"`           // the recipe, OCI reference, bundle URL or Debian package
	Kernel      string `json:"kernel,omitempty"` // an image's default kernel
	From        string `json:"from"`             // "builtin" or the catalog file
	Installed   bool   `json:"installed"`
}
