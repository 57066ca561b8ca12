package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/banger-dev/banger/internal/download"
)

// Transport prefixes of the image sources that are not registries, as skopeo and podman
// spell them.
const (
	TransportLayout  = "oci:"            // oci:PATH[:REF], an OCI image layout directory
	TransportArchive = "docker-archive:" // docker-archive:FILE[:NAME:TAG], a `docker save` tar
)

// refNameAnnotation names an image in an OCI layout's index.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// Source is where an image comes from: a registry reference, an OCI image layout directory
// or a docker-archive file. Its zero value is not valid; make one with ParseSource.
type Source struct {
	ref  name.Reference // a registry's
	kind string         // "", TransportLayout or TransportArchive
	path string         // the layout directory or archive file, absolute
	name string         // the layout's ref name or the archive's NAME:TAG; "" picks the only image
}

// ParseSource parses an image source: "oci:PATH[:REF]" (an OCI image layout; REF is matched
// against the index's org.opencontainers.image.ref.name annotations), "docker-archive:FILE"
// or "docker-archive:FILE:NAME:TAG" (a `docker save` tar), or else a registry reference.
// PATH and FILE must be absolute (a client makes them so before a daemon sees them) and hold
// no ':' (as with skopeo, the first ':' after the transport ends the path).
func ParseSource(ref string) (Source, error) {
	for _, kind := range []string{TransportLayout, TransportArchive} {
		rest, ok := strings.CutPrefix(ref, kind)
		if !ok {
			continue
		}
		p, n, _ := strings.Cut(rest, ":")
		switch {
		case p == "":
			return Source{}, fmt.Errorf("%q names no path: want %sPATH[:REF]", ref, kind)
		case !filepath.IsAbs(p):
			return Source{}, fmt.Errorf("%q: the path must be absolute", ref)
		case strings.ContainsRune(n, 0) || strings.ContainsRune(p, 0):
			return Source{}, fmt.Errorf("%q holds a NUL byte", ref)
		}
		if kind == TransportArchive && n != "" {
			if _, err := name.NewTag(n, name.WeakValidation); err != nil {
				return Source{}, fmt.Errorf("%q: %q is not NAME:TAG: %w", ref, n, err)
			}
		}
		return Source{kind: kind, path: filepath.Clean(p), name: n}, nil
	}
	r, err := ParseReference(ref)
	if err != nil {
		return Source{}, err
	}
	return Source{ref: r}, nil
}

// IsLocal reports whether the source is a file or directory on this host.
func (s Source) IsLocal() bool { return s.kind != "" }

// String is the source in the form ParseSource reads: a registry reference in full
// ("index.docker.io/library/debian:bookworm"), or the transport, path and name as given.
func (s Source) String() string {
	if s.kind == "" {
		if s.ref == nil {
			return ""
		}
		return s.ref.Name()
	}
	if s.name == "" {
		return s.kind + s.path
	}
	return s.kind + s.path + ":" + s.name
}

// NameParts are a repository and a tag or digest to name a local image after: a registry
// reference's; an archive's NAME:TAG; a layout's directory name and REF; the file name
// (without extension) for an archive with no name given.
func (s Source) NameParts() (repo, id string) {
	switch s.kind {
	case "":
		return s.ref.Context().RepositoryStr(), s.ref.Identifier()
	case TransportArchive:
		if t, err := name.NewTag(s.name, name.WeakValidation); err == nil && s.name != "" {
			return t.RepositoryStr(), t.TagStr()
		}
		base := filepath.Base(s.path)
		return strings.TrimSuffix(base, filepath.Ext(base)), ""
	}
	return filepath.Base(s.path), s.name
}

// image opens the source's linux/amd64 image. Manifests, indexes and configurations are
// refused past limits' caps before they are parsed, and every blob is checked against its
// digest when it is read.
func (s Source) image(ctx context.Context, opts PullOptions, limits Limits) (v1.Image, error) {
	switch s.kind {
	case TransportLayout:
		return openLayout(s.path, s.name, limits)
	case TransportArchive:
		return openArchive(s.path, s.name, limits)
	}
	keychain := opts.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	transport := opts.Transport
	if transport == nil {
		// Dial, TLS handshake and response headers each have a timeout.
		transport = download.NewHTTPClient().Transport
	}
	return remote.Image(s.ref, remote.WithContext(ctx), remote.WithPlatform(Platform), remote.WithAuthFromKeychain(keychain),
		remote.WithUserAgent("banger"), remote.WithTransport(manifestCap{transport, limits.ManifestBytes}))
}

// blobImage is an image whose manifest and configuration are in memory (checked) and whose
// layers are opened by digest; go-containerregistry's partial package makes a v1.Image of it.
type blobImage struct {
	manifest  []byte
	mediaType types.MediaType
	config    []byte
	layers    map[v1.Hash]blobLayer
}

func (b *blobImage) RawManifest() ([]byte, error)        { return b.manifest, nil }
func (b *blobImage) MediaType() (types.MediaType, error) { return b.mediaType, nil }
func (b *blobImage) RawConfigFile() ([]byte, error)      { return b.config, nil }
func (b *blobImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := b.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("the image has no layer %s", h)
}

// blobLayer is a layer blob; Pull's cache verifies its digest and size as it copies it.
type blobLayer struct {
	digest    v1.Hash
	size      int64
	mediaType types.MediaType
	open      func() (io.ReadCloser, error)
}

func (l blobLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l blobLayer) Size() (int64, error)                { return l.size, nil }
func (l blobLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l blobLayer) Compressed() (io.ReadCloser, error)  { return l.open() }

// readCapped reads all of r, refusing more than max bytes.
func readCapped(r io.Reader, max int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than the limit (%d bytes)", what, max)
	}
	return b, nil
}

func checkDigest(b []byte, want v1.Hash, what string) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("%s: unsupported digest %s (want sha256)", what, want)
	}
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != want.Hex {
		return fmt.Errorf("%s does not match its digest %s: the layout is corrupt or was tampered with", what, want)
	}
	return nil
}

// layoutDir reads an OCI image layout directory. Every file is opened through an os.Root, so no
// symlink leads out of the directory, and only regular files are read.
type layoutDir struct {
	dir    string
	root   *os.Root
	limits Limits
}

func openLayout(dir, ref string, limits Limits) (v1.Image, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w (want a directory with oci-layout and index.json, e.g. made by skopeo copy or umoci)", dir, err)
	}
	defer root.Close()
	l := layoutDir{dir: dir, root: root, limits: limits}
	if _, err := l.read("oci-layout", 4096); err != nil {
		return nil, err
	}
	raw, err := l.read("index.json", limits.ManifestBytes)
	if err != nil {
		return nil, err
	}
	desc, err := pickFromIndex(raw, ref, dir)
	if err != nil {
		return nil, err
	}
	// An index may point at an index (one level is what tools write; two are allowed).
	for depth := 0; ; depth++ {
		if desc.Size < 0 || desc.Size > limits.ManifestBytes {
			return nil, fmt.Errorf("OCI layout %s: manifest %s is %d bytes; the limit is %d", dir, desc.Digest, desc.Size, limits.ManifestBytes)
		}
		raw, err := l.blob(desc.Digest, desc.Size)
		if err != nil {
			return nil, err
		}
		if !desc.MediaType.IsIndex() {
			return l.image(raw, desc)
		}
		if depth == 2 {
			return nil, fmt.Errorf("OCI layout %s: indexes nest deeper than 2", dir)
		}
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: index %s: %w", dir, desc.Digest, err)
		}
		d, err := pickPlatform(idx.Manifests)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: index %s: %w", dir, desc.Digest, err)
		}
		desc = d
	}
}

// pickFromIndex chooses the descriptor of index.json that ref names: the one (or, one per
// platform, the linux/amd64 one) whose ref.name annotation is ref; with no ref, the only
// manifest, else the one named "latest".
func pickFromIndex(raw []byte, ref, dir string) (v1.Descriptor, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("OCI layout %s: index.json: %w", dir, err)
	}
	if len(idx.Manifests) == 0 {
		return v1.Descriptor{}, fmt.Errorf("OCI layout %s holds no image", dir)
	}
	var names []string
	byName := map[string][]v1.Descriptor{}
	for _, d := range idx.Manifests {
		n := d.Annotations[refNameAnnotation]
		if _, ok := byName[n]; !ok && n != "" {
			names = append(names, n)
		}
		byName[n] = append(byName[n], d)
	}
	sort.Strings(names)
	list := strings.Join(names, ", ")
	if list == "" {
		list = "none"
	}
	var cands []v1.Descriptor
	switch {
	case ref != "":
		cands = byName[ref]
		if len(cands) == 0 {
			return v1.Descriptor{}, fmt.Errorf("OCI layout %s has no image named %q (its names: %s)", dir, ref, list)
		}
	case len(idx.Manifests) == 1:
		cands = idx.Manifests
	case len(byName["latest"]) > 0:
		cands = byName["latest"]
	default:
		return v1.Descriptor{}, fmt.Errorf("OCI layout %s holds %d images; name one with oci:%s:REF (its names: %s)", dir, len(idx.Manifests), dir, list)
	}
	if len(cands) == 1 {
		return cands[0], nil
	}
	d, err := pickPlatform(cands)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return d, nil
}

// pickPlatform chooses the linux/amd64 manifest among descriptors.
func pickPlatform(ds []v1.Descriptor) (v1.Descriptor, error) {
	var seen []string
	for _, d := range ds {
		if d.Platform == nil {
			continue
		}
		if d.Platform.OS == Platform.OS && d.Platform.Architecture == Platform.Architecture {
			return d, nil
		}
		seen = append(seen, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	return v1.Descriptor{}, fmt.Errorf("no linux/amd64 image among %d (platforms: %s)", len(ds), strings.Join(seen, ", "))
}

// read reads a regular file of the layout, refusing one over max bytes.
func (l layoutDir) read(name string, max int64) ([]byte, error) {
	f, err := l.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readCapped(f, max, "OCI layout "+l.dir+": "+name)
}

func (l layoutDir) open(name string) (*os.File, error) {
	f, err := l.root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("OCI layout %s has no %s: is it an OCI image layout?", l.dir, name)
		}
		return nil, fmt.Errorf("OCI layout %s: %w", l.dir, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", name)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("OCI layout %s: %w", l.dir, err)
	}
	return f, nil
}

func blobPath(h v1.Hash) (string, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return "", fmt.Errorf("unsupported digest %q (want sha256:<64 hex>)", h)
	}
	return path.Join("blobs", "sha256", h.Hex), nil
}

// blob reads a small blob (a manifest, an index, a configuration) and checks its size and
// digest.
func (l layoutDir) blob(h v1.Hash, size int64) ([]byte, error) {
	p, err := blobPath(h)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", l.dir, err)
	}
	b, err := l.read(p, size)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("OCI layout %s: blob %s is %d bytes; its descriptor says %d", l.dir, h, len(b), size)
	}
	if err := checkDigest(b, h, "OCI layout "+l.dir+": blob"); err != nil {
		return nil, err
	}
	return b, nil
}

func (l layoutDir) image(raw []byte, desc v1.Descriptor) (v1.Image, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: manifest %s: %w", l.dir, desc.Digest, err)
	}
	if n := len(m.Layers); n > l.limits.Layers {
		return nil, fmt.Errorf("OCI layout %s: the image has %d layers; the limit is %d", l.dir, n, l.limits.Layers)
	}
	if m.Config.Size < 0 || m.Config.Size > l.limits.ConfigBytes {
		return nil, fmt.Errorf("OCI layout %s: its configuration (%s) is %d bytes; the limit is %d", l.dir, m.Config.Digest, m.Config.Size, l.limits.ConfigBytes)
	}
	cfg, err := l.blob(m.Config.Digest, m.Config.Size)
	if err != nil {
		return nil, err
	}
	img := &blobImage{manifest: raw, mediaType: desc.MediaType, config: cfg, layers: map[v1.Hash]blobLayer{}}
	if m.MediaType != "" {
		img.mediaType = m.MediaType
	}
	dir := l.dir
	for _, ld := range m.Layers {
		p, err := blobPath(ld.Digest)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: layer: %w", l.dir, err)
		}
		// The root is closed when openLayout returns; a layer is opened through a new one.
		img.layers[ld.Digest] = blobLayer{digest: ld.Digest, size: ld.Size, mediaType: ld.MediaType, open: func() (io.ReadCloser, error) {
			r, err := os.OpenRoot(dir)
			if err != nil {
				return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
			}
			defer r.Close()
			f, err := layoutDir{dir: dir, root: r}.open(p)
			if err != nil {
				return nil, err
			}
			return f, nil
		}}
	}
	return partial.CompressedToImage(img)
}

// archive reads a `docker save` tar: manifest.json names each image's configuration and
// layer files inside the tar. The tar's entries are indexed once (names, offsets, sizes);
// files are then read in place.
type archive struct {
	file    string
	r       io.ReaderAt // the archive while it is being opened
	reopen  func() (io.ReaderAt, io.Closer, error)
	entries map[string]archiveEntry
}

// Bounds on the index of an archive's entries kept in memory: docker save writes a few
// entries per layer, with names of a digest's length.
const (
	maxArchiveEntries = 16 << 10
	maxArchiveName    = 1024
)

// archiveReader is what an archive is read from: an *os.File, or a *bytes.Reader in fuzzing.
type archiveReader interface {
	io.ReaderAt
	io.ReadSeeker
}

type archiveEntry struct {
	off, size int64
	link      string // a symlink's target (older docker save links repeated layers)
}

// archiveManifest is manifest.json's form.
type archiveManifest []struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func openArchive(file, ref string, limits Limits) (v1.Image, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("docker archive: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("docker archive %s is not a regular file", file)
	}
	return readArchive(file, f, func() (io.ReaderAt, io.Closer, error) {
		f, err := os.Open(file)
		return f, f, err
	}, ref, limits)
}

// readArchive opens the image ref names (or the only one) in the archive f; its layers are
// read through reopen.
func readArchive(file string, f archiveReader, reopen func() (io.ReaderAt, io.Closer, error), ref string, limits Limits) (v1.Image, error) {
	a := archive{file: file, r: f, reopen: reopen, entries: map[string]archiveEntry{}}
	tr := tar.NewReader(f)
	for n := int64(0); ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("docker archive %s: %w (want a tar written by docker save or skopeo)", file, err)
		}
		if n >= maxArchiveEntries {
			return nil, fmt.Errorf("docker archive %s has more than %d entries; docker save writes a few per layer", file, maxArchiveEntries)
		}
		if len(h.Name) > maxArchiveName || len(h.Linkname) > maxArchiveName {
			continue // no file docker save writes has such a name; not kept in memory
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		switch h.Typeflag {
		case tar.TypeReg:
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, fmt.Errorf("docker archive %s: %w", file, err)
			}
			a.entries[name] = archiveEntry{off: off, size: h.Size}
		case tar.TypeSymlink:
			a.entries[name] = archiveEntry{link: path.Join(path.Dir(name), h.Linkname)}
		}
	}
	raw, err := a.read("manifest.json", limits.ManifestBytes)
	if err != nil {
		return nil, err
	}
	var man archiveManifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return nil, fmt.Errorf("docker archive %s: manifest.json: %w", file, err)
	}
	var img *struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var tags []string
	for i := range man {
		tags = append(tags, man[i].RepoTags...)
		if ref == "" {
			continue
		}
		want, _ := name.NewTag(ref, name.WeakValidation)
		for _, t := range man[i].RepoTags {
			if got, err := name.NewTag(t, name.WeakValidation); err == nil && got.Name() == want.Name() {
				img = &man[i]
			}
		}
	}
	list := strings.Join(tags, ", ")
	if list == "" {
		list = "none"
	}
	switch {
	case img != nil:
	case ref != "":
		return nil, fmt.Errorf("docker archive %s has no image tagged %s (its tags: %s)", file, ref, list)
	case len(man) == 1:
		img = &man[0]
	case len(man) == 0:
		return nil, fmt.Errorf("docker archive %s holds no image", file)
	default:
		return nil, fmt.Errorf("docker archive %s holds %d images; name one with docker-archive:%s:NAME:TAG (its tags: %s)", file, len(man), file, list)
	}
	if n := len(img.Layers); n > limits.Layers {
		return nil, fmt.Errorf("docker archive %s: the image has %d layers; the limit is %d", file, n, limits.Layers)
	}
	cfg, err := a.read(img.Config, limits.ConfigBytes)
	if err != nil {
		return nil, err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cfg))
	if err != nil {
		return nil, fmt.Errorf("docker archive %s: configuration %s: %w", file, img.Config, err)
	}
	if len(cf.RootFS.DiffIDs) != len(img.Layers) {
		return nil, fmt.Errorf("docker archive %s: the configuration lists %d layers, manifest.json %d", file, len(cf.RootFS.DiffIDs), len(img.Layers))
	}
	// A layer file's digest: the configuration's diff ID for an uncompressed layer (what
	// docker save writes); the sha256 of the file otherwise. Either is verified when the
	// layer is copied into the cache.
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(cfg)}}}
	bi := &blobImage{mediaType: types.OCIManifestSchema1, config: cfg, layers: map[v1.Hash]blobLayer{}}
	for i, lp := range img.Layers {
		e, err := a.resolve(lp)
		if err != nil {
			return nil, err
		}
		open := func() (io.ReadCloser, error) { return a.openEntry(e) }
		magic := make([]byte, 4)
		if _, err := io.NewSectionReader(f, e.off, e.size).ReadAt(magic, 0); err != nil && e.size >= 4 {
			return nil, fmt.Errorf("docker archive %s: layer %s: %w", file, lp, err)
		}
		mt, d := types.OCIUncompressedLayer, cf.RootFS.DiffIDs[i]
		if bytes.HasPrefix(magic, []byte{0x1f, 0x8b}) || bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
			mt = types.OCILayer
			if magic[0] == 0x28 {
				mt = types.OCILayerZStd
			}
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(f, e.off, e.size)); err != nil {
				return nil, fmt.Errorf("docker archive %s: layer %s: %w", file, lp, err)
			}
			d = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: e.size, Digest: d})
		bi.layers[d] = blobLayer{digest: d, size: e.size, mediaType: mt, open: open}
	}
	if bi.manifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	return partial.CompressedToImage(bi)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// resolve finds a regular file of the archive by name, following symlinks inside it.
func (a archive) resolve(name string) (archiveEntry, error) {
	name = path.Clean(strings.TrimPrefix(name, "./"))
	for range 8 {
		e, ok := a.entries[name]
		if !ok {
			return archiveEntry{}, fmt.Errorf("docker archive %s has no file %s", a.file, name)
		}
		if e.link == "" {
			return e, nil
		}
		name = e.link
	}
	return archiveEntry{}, fmt.Errorf("docker archive %s: %s: too many levels of symbolic links", a.file, name)
}

// openEntry opens a layer file, through a new handle on the archive.
func (a archive) openEntry(e archiveEntry) (io.ReadCloser, error) {
	r, c, err := a.reopen()
	if err != nil {
		return nil, fmt.Errorf("docker archive: %w", err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(r, e.off, e.size), c}, nil
}

// read reads a small file of the archive, refusing one over max bytes.
func (a archive) read(name string, max int64) ([]byte, error) {
	e, err := a.resolve(name)
	if err != nil {
		return nil, err
	}
	if e.size > max {
		return nil, fmt.Errorf("docker archive %s: %s is %d bytes; the limit is %d", a.file, name, e.size, max)
	}
	return readCapped(io.NewSectionReader(a.r, e.off, e.size), max, "docker archive "+a.file+": "+name)
}
