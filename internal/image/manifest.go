package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/progress"
)

// Files of an image directory.
const (
	RootfsFile   = "rootfs.ext4"
	ManifestFile = "manifest.json"
	BuildLogFile = "build.log"
)

// manifestFormat is the version of the manifest.json layout; Load refuses newer ones.
const manifestFormat = 1

// Manifest records what an image directory holds and how it was built.
type Manifest struct {
	Format       int       `json:"format"`
	Name         string    `json:"name"`
	Recipe       string    `json:"recipe"`
	RecipeSHA256 string    `json:"recipe_sha256"`
	Suite        string    `json:"suite"`
	Variant      string    `json:"variant"`
	Architecture string    `json:"architecture"`
	Mirror       string    `json:"mirror"`
	Packages     []Package `json:"packages"`

	RootfsSize   int64  `json:"rootfs_size"` // bytes (apparent size of rootfs.ext4)
	RootfsSHA256 string `json:"rootfs_sha256"`

	BuiltAt      time.Time          `json:"built_at"`
	Tool         string             `json:"tool"`         // "mmdebstrap" or "debootstrap"
	ToolVersion  string             `json:"tool_version"` // its --version line
	MkfsVersion  string             `json:"mkfs_version"`
	BuildSeconds float64            `json:"build_seconds"`
	StageSeconds map[string]float64 `json:"stage_seconds"` // per progress stage ("image.bootstrap", …)
	TreeBytes    int64              `json:"tree_bytes"`    // block-rounded size of the tree
	TreeInodes   int64              `json:"tree_inodes"`
	RootfsInodes int64              `json:"rootfs_inodes"` // inodes created by mkfs (-N)

	// SkippedPackages are the recipe's optional packages the archive did not have.
	SkippedPackages []SkippedPackage `json:"skipped_packages,omitempty"`
	// Source says where the image came from: SourceRecipe (also when empty), SourceOCI,
	// SourceBundle or SourceRegister.
	Source string `json:"source,omitempty"`
	// OCI describes the registry image a pulled image was made from.
	OCI *OCIOrigin `json:"oci,omitempty"`
	// Kernel is the kernel VMs of this image boot unless told otherwise ("" for the default).
	Kernel string `json:"kernel,omitempty"`
	// Notes are things worth knowing about the image, e.g. what was added to make it boot.
	Notes []string `json:"notes,omitempty"`
}

// FromOlderRecipe reports whether the image was built here from an earlier form of a recipe
// this banger has built in: an upgrade changed the recipe since, and VMs of the image miss
// what changed (`banger image build NAME` rebuilds it).
func (m Manifest) FromOlderRecipe() bool {
	if m.Recipe == "" || m.RecipeSHA256 == "" || (m.Source != "" && m.Source != SourceRecipe) {
		return false
	}
	h, ok := builtinRecipeHashes()[m.Recipe]
	return ok && h != m.RecipeSHA256
}

// builtinRecipeHashes are the hashes of the built-in recipes, which cannot change while banger
// runs: worked out once, not on every VM create.
var builtinRecipeHashes = sync.OnceValue(func() map[string]string {
	hashes := map[string]string{}
	for _, name := range BuiltinRecipes() {
		if r, err := BuiltinRecipe(name); err == nil {
			hashes[name] = r.Hash()
		}
	}
	return hashes
})

// Image sources.
const (
	SourceRecipe   = "recipe"
	SourceOCI      = "oci"
	SourceBundle   = "bundle"
	SourceRegister = "register"
)

// SkippedPackage is an optional recipe package left out of an image, and why.
type SkippedPackage struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// OCIOrigin is the registry image an image was pulled from.
type OCIOrigin struct {
	Reference  string   `json:"reference"`
	Digest     string   `json:"digest"`
	Layers     []string `json:"layers"` // digests, oldest first
	Env        []string `json:"env,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// VersionLen is how many hex digits of the rootfs sha256 name an image version.
const VersionLen = 12

// Version names this build of the image: the start of its rootfs's sha256. Equal contents
// are the same version; every build, pull or import that changes a byte is a new one.
func (m Manifest) Version() string {
	if len(m.RootfsSHA256) < VersionLen {
		return m.RootfsSHA256
	}
	return m.RootfsSHA256[:VersionLen]
}

// Package returns the installed package called name, if the image has it.
func (m Manifest) Package(name string) (Package, bool) {
	for _, p := range m.Packages {
		if p.Name == name {
			return p, true
		}
	}
	return Package{}, false
}

// Load reads the manifest of the image directory dir.
func Load(dir string) (Manifest, error) {
	p := filepath.Join(dir, ManifestFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("image %s: no %s; it is not an image directory or its build did not finish", dir, ManifestFile)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("image %s: %w", dir, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Manifest{}, fmt.Errorf("image %s: %s is corrupt (%v); rebuild the image", dir, ManifestFile, err)
	}
	switch {
	case m.Format > manifestFormat:
		return Manifest{}, fmt.Errorf("image %s: manifest format %d is newer than this banger understands (%d); upgrade banger", dir, m.Format, manifestFormat)
	case m.Format < 1 || m.Name == "" || m.RootfsSHA256 == "" || m.RootfsSize <= 0:
		return Manifest{}, fmt.Errorf("image %s: %s is incomplete (format, name, rootfs size or sha256 missing); rebuild the image", dir, ManifestFile)
	}
	return m, nil
}

// Verify checks that the image in dir is intact: its rootfs.ext4 has the size and sha256 the
// manifest recorded.
func Verify(dir string) error {
	m, err := Load(dir)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, RootfsFile)
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("image %s: %w; rebuild the image", m.Name, err)
	}
	if fi.Size() != m.RootfsSize {
		return fmt.Errorf("image %s: %s is %d bytes, manifest says %d; the image is damaged, rebuild it", m.Name, p, fi.Size(), m.RootfsSize)
	}
	sum, err := fileSHA256(context.Background(), p, nil)
	if err != nil {
		return fmt.Errorf("image %s: %w", m.Name, err)
	}
	if sum != m.RootfsSHA256 {
		return fmt.Errorf("image %s: %s has sha256 %s, manifest says %s; the image is damaged, rebuild it", m.Name, p, sum, m.RootfsSHA256)
	}
	return nil
}

// WriteManifest writes m as dir/manifest.json and syncs it.
func WriteManifest(dir string, m Manifest) error { return writeManifest(dir, m) }

// writeManifest writes m as dir/manifest.json and syncs it.
func writeManifest(dir string, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeSynced(filepath.Join(dir, ManifestFile), append(data, '\n'), 0o644)
}

func writeSynced(p string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fileSHA256 hashes a file, reporting progress (bytes done of total) under stage
// "image.checksum" when report is not nil, and stopping early when ctx ends.
func fileSHA256(ctx context.Context, p string, report progress.Func) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	buf := make([]byte, 4*mib)
	var done int64
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			done += int64(n)
			if done%(64*mib) == 0 || done == fi.Size() {
				report.Report(progress.Update{Stage: StageChecksum, Message: "sha256 " + filepath.Base(p), Done: done, Total: fi.Size()})
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read %s: %w", p, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
