package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/durable"
	"github.com/banger-dev/banger/internal/progress"
)

// ImageManifestMember is the bundle member holding the image's own manifest (packages,
// origin, build facts); RootfsFile is the filesystem.
const ImageManifestMember = "image.json"

// Export writes the image in dir as a bundle at path: manifest.json (name, architecture,
// kernel, the size and sha256 of every member), image.json and rootfs.ext4. The rootfs is
// checked against the sha256 its manifest recorded while it is written, so a damaged image is
// not exported.
func Export(ctx context.Context, dir, path string, report progress.Func) (bundle.Result, error) {
	m, err := Load(dir)
	if err != nil {
		return bundle.Result{}, err
	}
	return bundle.Write(ctx, path, bundle.Manifest{Kind: bundle.KindImage, Name: m.Name, Arch: m.Architecture, Kernel: m.Kernel}, []bundle.File{
		{Name: ImageManifestMember, Path: filepath.Join(dir, ManifestFile)},
		{Name: RootfsFile, Path: filepath.Join(dir, RootfsFile), Size: m.RootfsSize, SHA256: m.RootfsSHA256},
	}, report)
}

// ImportOptions say where an imported bundle goes.
type ImportOptions struct {
	// Name overrides the bundle's image name when set.
	Name string
	// Dest returns the image directory for the verified image (it must not exist; its parent
	// must): the caller names it after the version, which is known only from the bundle.
	Dest     func(Manifest) string
	Progress progress.Func
}

// Import reads an image bundle from r, verifies every member against its manifest (and the
// image's own manifest against the rootfs), and publishes an image directory. A bundle that is
// not an image, is for another architecture, or was altered is refused and nothing is left.
func Import(ctx context.Context, r io.Reader, parent string, o ImportOptions) (Manifest, error) {
	st, err := durable.Stage(parent, "import.staging")
	if err != nil {
		return Manifest{}, err
	}
	defer st.Discard()
	st.FilesSynced = true // bundle.Read fsyncs every member it writes
	staging := st.Dir
	arch := debian.HostArch()
	bm, err := bundle.Read(ctx, r, staging, func(m bundle.Manifest) error {
		if err := m.CheckFor(bundle.KindImage, arch); err != nil {
			return err
		}
		if _, ok := m.Member(RootfsFile); !ok {
			return fmt.Errorf("the bundle has no %s", RootfsFile)
		}
		return m.CheckMembers(RootfsFile, ImageManifestMember)
	}, o.Progress)
	if err != nil {
		return Manifest{}, err
	}
	rootfs, _ := bm.Member(RootfsFile)
	var m Manifest
	if data, err := os.ReadFile(filepath.Join(staging, ImageManifestMember)); err == nil {
		if err := json.Unmarshal(data, &m); err != nil {
			return Manifest{}, fmt.Errorf("the bundle's %s is not valid: %w", ImageManifestMember, err)
		}
		if m.RootfsSHA256 != rootfs.SHA256 || m.RootfsSize != rootfs.Size {
			return Manifest{}, errors.New("the bundle's image manifest does not describe its rootfs.ext4; refusing it")
		}
		os.Remove(filepath.Join(staging, ImageManifestMember))
	}
	if m.Format > manifestFormat {
		return Manifest{}, fmt.Errorf("the bundle's image manifest has format %d, newer than this banger (%d); upgrade banger", m.Format, manifestFormat)
	}
	m.Format, m.RootfsSHA256, m.RootfsSize, m.Architecture = manifestFormat, rootfs.SHA256, rootfs.Size, bm.Arch
	m.Name, m.Kernel = bm.Name, bm.Kernel
	if o.Name != "" {
		m.Name = o.Name
	}
	if !namePattern.MatchString(m.Name) {
		return Manifest{}, fmt.Errorf("image name %q must be lower-case letters, digits, '.' and '-'; import it with --name", m.Name)
	}
	if m.Recipe != "" && (m.Source == "" || m.Source == SourceRecipe) {
		m.Notes = append(m.Notes, "built from recipe "+m.Recipe)
	}
	m.Source = SourceBundle
	if err := os.Chmod(filepath.Join(staging, RootfsFile), 0o444); err != nil {
		return Manifest{}, err
	}
	if err := publishDir(ctx, st, o.Dest(m), m); err != nil {
		return Manifest{}, err
	}
	return m, nil
}
