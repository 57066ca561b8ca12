// Package oci owns images pulled from OCI registries: resolving a reference for linux/amd64
// with go-containerregistry, keeping layer blobs in a cache by digest, and flattening the
// layers into a directory tree (whiteouts, opaque directories, ownership, modes, links,
// xattrs) with every write kept inside that tree. Making the tree bootable and packing it
// into ext4 is the catalog's and package image's business.
package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/userns"
)

// Progress stages of Pull.
const (
	StageResolve  = "oci.resolve"
	StageDownload = "oci.download" // Done/Total count bytes of layers not cached yet
	StageFlatten  = "oci.flatten"  // Done/Total count layers
)

// Platform is what banger guests run.
var Platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// PullOptions say what to pull and where.
type PullOptions struct {
	// Ref is what ParseSource reads: an OCI reference ("debian:bookworm", "ghcr.io/org/img:tag",
	// "host:5000/x@sha256:…"), "oci:/abs/layout[:REF]" or "docker-archive:/abs/file.tar[:NAME:TAG]".
	Ref string
	// Cache holds layer blobs by digest (Cache.Dir/blobs/sha256/<hex>).
	Cache Cache
	// Tree is an existing, empty directory the layers are flattened into.
	Tree     string
	Progress progress.Func
	// Transport is the HTTP transport; nil is the default one. Keychain gives credentials;
	// nil is the Docker config's (~/.docker/config.json, credential helpers).
	Transport http.RoundTripper
	Keychain  authn.Keychain
	// Limits bound what the registry may make Pull read and write; zero fields take
	// DefaultLimits'.
	Limits Limits
}

// Limits bound a pull. Everything from a registry is hostile until checked: a manifest or a
// configuration is refused before it is parsed if larger than its cap, an image with too many
// layers before anything is downloaded, and layers that unpack to more than Bytes (sparse
// files count at their full size) or hold more than Entries entries when they get there.
type Limits struct {
	Bytes         int64 // unpacked size of the image (regular files, all layers); the image's disk size when known
	Entries       int64 // tar entries over all layers
	Layers        int
	ManifestBytes int64 // each manifest and index
	ConfigBytes   int64
}

// DefaultLimits apply where PullOptions.Limits says nothing.
var DefaultLimits = Limits{Bytes: 32 << 30, Entries: 4 << 20, Layers: 128, ManifestBytes: 4 << 20, ConfigBytes: 8 << 20}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.Bytes > 0 {
		d.Bytes = l.Bytes
	}
	if l.Entries > 0 {
		d.Entries = l.Entries
	}
	if l.Layers > 0 {
		d.Layers = l.Layers
	}
	if l.ManifestBytes > 0 {
		d.ManifestBytes = l.ManifestBytes
	}
	if l.ConfigBytes > 0 {
		d.ConfigBytes = l.ConfigBytes
	}
	return d
}

// Result describes a pulled image.
type Result struct {
	Reference string  `json:"reference"` // Source.String(): "index.docker.io/library/debian:bookworm", "oci:/srv/img:1"
	Digest    string  `json:"digest"`    // of the linux/amd64 image manifest
	Layers    []Layer `json:"layers"`
	Config    Config  `json:"config"`
	Stats     Stats   `json:"stats"`
	// Downloaded counts the bytes of layers fetched (the rest came from the cache).
	Downloaded int64 `json:"downloaded"`
}

// Layer is one layer blob.
type Layer struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"media_type"`
}

// Config is the part of the image's configuration a VM can use.
type Config struct {
	Env        []string `json:"env,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// ParseReference parses an OCI reference; registries on loopback addresses are spoken to
// over plain HTTP, every other one over HTTPS.
func ParseReference(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%q is not an image reference (like debian:bookworm or ghcr.io/org/img:tag): %w", ref, err)
	}
	return r, nil
}

// Pull resolves opts.Ref (see ParseSource) for linux/amd64, fetches the layers the cache lacks (verifying each
// one's digest) and flattens all of them, oldest first, into opts.Tree, within opts.Limits.
// When it fails, opts.Tree is left empty. Without root, the layers are flattened inside a user
// namespace with the user's subordinate ids (see flattenIn), so the tree keeps their owners as
// a root pull does; the tree is then the namespace's to change and remove (image.RemoveTree).
func Pull(ctx context.Context, opts PullOptions) (res Result, err error) {
	src, err := ParseSource(opts.Ref)
	if err != nil {
		return Result{}, err
	}
	what := src.String()
	limits := opts.Limits.withDefaults()
	// Without root the layers are flattened inside a user namespace (see flattenIn).
	ns, err := userns.ForTrees()
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if err != nil {
			emptyDirIn(ns, opts.Tree)
		}
	}()
	opts.Progress.Stage(StageResolve, "resolving "+what+" for linux/amd64")
	img, err := src.image(ctx, opts, limits)
	if err != nil {
		if src.IsLocal() {
			return Result{}, err // it names the directory or file
		}
		return Result{}, fmt.Errorf("image %s: %w", what, err)
	}
	manifest, err := img.Manifest()
	if err != nil {
		return Result{}, fmt.Errorf("image %s: read its manifest: %w", what, err)
	}
	if n := len(manifest.Layers); n > limits.Layers {
		return Result{}, fmt.Errorf("image %s has %d layers; the limit is %d", what, n, limits.Layers)
	}
	if size := manifest.Config.Size; size < 0 || size > limits.ConfigBytes {
		return Result{}, fmt.Errorf("image %s: its configuration (%s) is %d bytes; the limit is %d", what, manifest.Config.Digest, size, limits.ConfigBytes)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Result{}, fmt.Errorf("image %s: read its configuration: %w", what, err)
	}
	if cfg.OS != "" && cfg.OS != Platform.OS || cfg.Architecture != "" && cfg.Architecture != Platform.Architecture {
		return Result{}, fmt.Errorf("image %s is for %s/%s; banger guests need linux/amd64", what, cfg.OS, cfg.Architecture)
	}
	digest, err := img.Digest()
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w", what, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return Result{}, fmt.Errorf("image %s: list layers: %w", what, err)
	}
	res = Result{Reference: what, Digest: digest.String(), Config: Config{Env: cfg.Config.Env, Entrypoint: cfg.Config.Entrypoint,
		Cmd: cfg.Config.Cmd, WorkingDir: cfg.Config.WorkingDir, User: cfg.Config.User}}
	var missing []v1.Layer
	var total, compressed int64
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return Result{}, fmt.Errorf("image %s: %w", what, err)
		}
		size, err := l.Size()
		if err != nil {
			return Result{}, fmt.Errorf("image %s: layer %s: %w", what, d, err)
		}
		if size < 0 || size > limits.Bytes-compressed {
			return Result{}, fmt.Errorf("image %s: layer %s: its layers' compressed sizes add up to more than the image may unpack to (%d bytes)", what, d, limits.Bytes)
		}
		compressed += size
		mt, _ := l.MediaType()
		if !mt.IsLayer() || mt == types.DockerForeignLayer {
			return Result{}, fmt.Errorf("image %s: layer %s has media type %s, which is not a Linux filesystem layer", what, d, mt)
		}
		res.Layers = append(res.Layers, Layer{Digest: d.String(), Size: size, MediaType: string(mt)})
		if !opts.Cache.Has(d.String(), size) {
			missing = append(missing, l)
			total += size
		}
	}

	// Download what the cache lacks.
	var done int64
	for i, l := range missing {
		d, _ := l.Digest()
		msg := fmt.Sprintf("downloading layer %d of %d (%s; %d cached)", i+1, len(missing), d.String()[:19], len(layers)-len(missing))
		n, err := opts.Cache.fetch(ctx, l, func(n int64) {
			opts.Progress.Report(progress.Update{Stage: StageDownload, Message: msg, Done: done + n, Total: total})
		})
		if err != nil {
			return Result{}, fmt.Errorf("image %s: layer %s: %w", what, d, err)
		}
		done += n
	}
	res.Downloaded = done

	// Flatten, oldest layer first.
	if ns != nil {
		res.Stats, err = flattenIn(ctx, ns, opts.Tree, opts.Cache, res.Layers, limits, opts.Progress)
		if err != nil {
			return Result{}, fmt.Errorf("image %s: %w", what, err)
		}
		return res, nil
	}
	fl, err := NewFlattener(opts.Tree, limits)
	if err != nil {
		return Result{}, err
	}
	defer fl.Close()
	for i, l := range res.Layers {
		opts.Progress.Report(progress.Update{Stage: StageFlatten, Message: fmt.Sprintf("flattening layer %d of %d", i+1, len(res.Layers)), Done: int64(i), Total: int64(len(res.Layers))})
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		if err := opts.Cache.apply(fl, l.Digest); err != nil {
			return Result{}, fmt.Errorf("image %s: %w", what, err)
		}
	}
	if err := fl.Finish(); err != nil {
		return Result{}, fmt.Errorf("image %s: %w", what, err)
	}
	res.Stats = fl.Stats()
	return res, nil
}

// Cache keeps layer blobs by digest, as downloaded (compressed), so pulling a new tag of an
// image fetches only the layers that changed.
type Cache struct {
	Dir string
}

func (c Cache) path(digest string) (string, error) {
	algo, hexsum, ok := strings.Cut(digest, ":")
	if !ok || algo != "sha256" || len(hexsum) != 64 || strings.Trim(hexsum, "0123456789abcdef") != "" {
		return "", fmt.Errorf("unsupported layer digest %q (want sha256:<64 hex>)", digest)
	}
	return filepath.Join(c.Dir, "blobs", "sha256", hexsum), nil
}

// Has reports whether the blob is cached with the given size.
func (c Cache) Has(digest string, size int64) bool {
	p, err := c.path(digest)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == size
}

// fetch downloads a layer's blob into the cache, verifying its digest and size, and returns
// its size. The blob appears under its name only once complete.
func (c Cache) fetch(ctx context.Context, l v1.Layer, report func(int64)) (int64, error) {
	d, _ := l.Digest()
	dst, err := c.path(d.String())
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return 0, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return 0, fmt.Errorf("download: %w", err)
	}
	// A registry that stops sending fails the pull instead of hanging it. (The size is
	// capped by go-containerregistry's verifying reader, at the manifest's size.)
	rc = download.Guard(rc, 0, "layer "+d.String())
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".part-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	w := &countWriter{w: io.MultiWriter(tmp, h), report: report}
	_, err = io.Copy(w, contextReader{ctx, rc})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("download: %w", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
		return 0, fmt.Errorf("downloaded blob has digest %s; the registry sent something else", got)
	}
	if want, err := l.Size(); err == nil && want != w.n {
		return 0, fmt.Errorf("downloaded blob is %d bytes, the manifest says %d", w.n, want)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return 0, err
	}
	return w.n, nil
}

// apply flattens a cached layer and marks the blob as just used.
func (c Cache) apply(fl *Flattener, digest string) error {
	p, err := c.path(digest)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	defer f.Close()
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	return fl.Apply(f, digest)
}

// Blob is a cached layer.
type Blob struct {
	Digest   string    `json:"digest"`
	Size     int64     `json:"size"`
	LastUsed time.Time `json:"last_used"`
}

// Blobs lists the cached layers, oldest use first.
func (c Cache) Blobs() ([]Blob, error) {
	dir := filepath.Join(c.Dir, "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Blob
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, Blob{Digest: "sha256:" + e.Name(), Size: info.Size(), LastUsed: info.ModTime().UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.Before(out[j].LastUsed) })
	return out, nil
}

// Prune removes the cached blobs not in keep (digests), and interrupted downloads; with
// dryRun it only says what it would remove.
func (c Cache) Prune(keep map[string]bool, dryRun bool) ([]Blob, error) {
	blobs, err := c.Blobs()
	if err != nil {
		return nil, err
	}
	var removed []Blob
	for _, b := range blobs {
		if keep[b.Digest] {
			continue
		}
		if !dryRun {
			p, _ := c.path(b.Digest)
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, err
			}
		}
		removed = append(removed, b)
	}
	if !dryRun {
		parts, _ := filepath.Glob(filepath.Join(c.Dir, "blobs", "sha256", ".part-*"))
		for _, p := range parts {
			if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.Remove(p)
			}
		}
	}
	return removed, nil
}

// manifestCap refuses manifest responses larger than max before anything parses them: a
// declared length over it at once, a longer body as it is read.
type manifestCap struct {
	rt  http.RoundTripper
	max int64
}

func (m manifestCap) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := m.rt.RoundTrip(req)
	if err != nil || !strings.Contains(req.URL.Path, "/manifests/") || req.Method == http.MethodHead {
		return resp, err
	}
	if resp.ContentLength > m.max {
		resp.Body.Close()
		return nil, fmt.Errorf("the manifest at %s is %d bytes; the limit is %d", req.URL.Redacted(), resp.ContentLength, m.max)
	}
	resp.Body = &cappedBody{rc: resp.Body, left: m.max, what: "the manifest at " + req.URL.Redacted()}
	return resp, nil
}

type cappedBody struct {
	rc   io.ReadCloser
	left int64 // bytes still allowed
	what string
}

func (c *cappedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1] // one byte more than allowed tells a body over the cap
	}
	n, err := c.rc.Read(p)
	if c.left -= int64(n); c.left < 0 {
		return n - 1, fmt.Errorf("%s is larger than the limit", c.what)
	}
	return n, err
}

func (c *cappedBody) Close() error { return c.rc.Close() }

// emptyDir removes what dir holds, leaving it there.
func emptyDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

type countWriter struct {
	w      io.Writer
	n      int64
	last   time.Time
	report func(int64)
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.report != nil && time.Since(c.last) > 200*time.Millisecond {
		c.last = time.Now()
		c.report(c.n)
	}
	return n, err
}

type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
