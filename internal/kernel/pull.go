package kernel

import (
	"github.com/banger-dev/banger/internal/durable"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/progress"
)

// Progress stages reported by Pull.
const (
	StageResolve  = "kernel.resolve"
	StageDownload = "kernel.download" // Done/Total count bytes
	StageExtract  = "kernel.extract"
)

// ManifestName is the file in a kernel directory that describes it.
const ManifestName = "manifest.json"

// Kernel sources: where a kernel directory came from.
const (
	SourceDebian = "debian" // pulled from a Debian archive (Pull)
	SourceImport = "import" // adopted from local files (Import)
	SourceBundle = "bundle" // installed from a kernel bundle
)

// Manifest describes a pulled or imported kernel. Paths are relative to the kernel directory.
type Manifest struct {
	Name    string `json:"name"`    // catalog name, e.g. "debian-6.1"
	Release string `json:"release"` // uname -r, e.g. "6.1.0-50-cloud-amd64"
	// Source is SourceDebian (also when empty: manifests written before imports existed),
	// SourceImport or SourceBundle.
	Source      string `json:"source,omitempty"`
	Package     string `json:"package"` // the concrete Debian package pulled
	Version     string `json:"version"`
	DebSHA256   string `json:"deb_sha256"`
	DebSize     int64  `json:"deb_size"`
	Mirror      string `json:"mirror"`
	Suite       string `json:"suite"`
	Vmlinuz     string `json:"vmlinuz"` // the bzImage as shipped
	VmlinuzSize int64  `json:"vmlinuz_size"`
	Vmlinux     string `json:"vmlinux"` // the ELF extracted from it
	VmlinuxSize int64  `json:"vmlinux_size"`
	Config      string `json:"config"`
	ModulesDir  string `json:"modules_dir"` // lib/modules/<release>; "" for a kernel without modules
	// Initrd is an initramfs that came with an imported kernel. Banger's own initramfs is
	// appended to it at boot (the kernel unpacks both; banger's /init wins), so it can carry
	// firmware or modules but not replace the agent.
	Initrd   string    `json:"initrd,omitempty"`
	PulledAt time.Time `json:"pulled_at"`

	Dir string `json:"-"` // the kernel directory; set by Pull and Load
}

// VmlinuxPath is the absolute path of the ELF kernel.
func (m Manifest) VmlinuxPath() string { return filepath.Join(m.Dir, filepath.FromSlash(m.Vmlinux)) }

// VmlinuzPath is the absolute path of the bzImage.
func (m Manifest) VmlinuzPath() string { return filepath.Join(m.Dir, filepath.FromSlash(m.Vmlinuz)) }

// ModulesPath is the absolute path of the kernel's lib/modules/<release> directory.
func (m Manifest) ModulesPath() string {
	return filepath.Join(m.Dir, filepath.FromSlash(m.ModulesDir))
}

// Pull fetches the catalog entry's kernel package from archive (whose Suite must be the
// entry's), verifies it, and publishes into dstDir: the bzImage and config from boot/, the
// module tree, the ELF vmlinux extracted from the bzImage and manifest.json. Work is staged in
// a directory next to dstDir and renamed into place at the end; on failure nothing is left at
// dstDir and the staging directory is removed. dstDir must not exist yet.
func Pull(ctx context.Context, entry Entry, archive *debian.Archive, dstDir string, report progress.Func) (Manifest, error) {
	if archive.Suite != entry.Suite {
		return Manifest{}, fmt.Errorf("kernel %s comes from Debian %s, but the archive is set up for %q", entry.Name, entry.Suite, archive.Suite)
	}
	if _, err := os.Lstat(dstDir); err == nil {
		return Manifest{}, fmt.Errorf("kernel %s: %s already exists; remove it to pull again", entry.Name, dstDir)
	}

	report.Stage(StageResolve, fmt.Sprintf("resolving %s in Debian %s", entry.Package, entry.Suite))
	pkg, err := archive.ResolveMetapackage(ctx, entry.Package)
	if err != nil {
		return Manifest{}, fmt.Errorf("kernel %s: %w", entry.Name, err)
	}

	report.Report(progress.Update{Stage: StageDownload, Message: fmt.Sprintf("downloading %s %s", pkg.Name, pkg.Version), Total: pkg.Size})
	debPath, err := archive.Download(ctx, pkg, func(u progress.Update) {
		u.Stage = StageDownload
		report.Report(u)
	})
	if err != nil {
		return Manifest{}, fmt.Errorf("kernel %s: %w", entry.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}

	parent := filepath.Dir(dstDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("kernel %s: %w", entry.Name, err)
	}
	st, err := durable.Stage(parent, filepath.Base(dstDir)+".pull")
	if err != nil {
		return Manifest{}, fmt.Errorf("kernel %s: %w", entry.Name, err)
	}
	defer st.Discard()
	staging := st.Dir

	report.Stage(StageExtract, fmt.Sprintf("extracting %s", filepath.Base(pkg.Filename)))
	m, err := stageKernel(ctx, debPath, staging)
	if err != nil {
		return Manifest{}, fmt.Errorf("kernel %s: %w", entry.Name, err)
	}
	m.Name, m.Source, m.Package, m.Version = entry.Name, SourceDebian, pkg.Name, pkg.Version
	m.DebSHA256, m.DebSize = pkg.SHA256, pkg.Size
	m.Mirror, m.Suite = archive.Mirror, archive.Suite
	m.PulledAt = time.Now().UTC().Truncate(time.Second)
	if err := writeManifest(staging, m); err != nil {
		return Manifest{}, fmt.Errorf("kernel %s: %w", entry.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}
	if err := st.Publish(dstDir); err != nil {
		return Manifest{}, fmt.Errorf("kernel %s: publish %s: %w", entry.Name, dstDir, err)
	}
	m.Dir = dstDir
	return m, nil
}

// keepKernelFile selects what Pull extracts from the package.
func keepKernelFile(p string) bool {
	switch {
	case strings.HasPrefix(p, "boot/vmlinuz-"), strings.HasPrefix(p, "boot/config-"):
		return !strings.Contains(strings.TrimPrefix(p, "boot/"), "/")
	case strings.HasPrefix(p, "lib/modules/"), strings.HasPrefix(p, "usr/lib/modules/"):
		return true
	}
	return false
}

// stageKernel extracts the package into dir, finds the release and writes the ELF vmlinux.
func stageKernel(ctx context.Context, debPath, dir string) (Manifest, error) {
	if err := debian.ExtractDeb(debPath, dir, keepKernelFile); err != nil {
		return Manifest{}, err
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}
	images, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return Manifest{}, fmt.Errorf("package holds %d boot/vmlinuz-* files, want exactly 1; is it a kernel image package?", len(images))
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	m := Manifest{
		Release: release,
		Vmlinuz: "boot/vmlinuz-" + release,
		Config:  "boot/config-" + release,
		Vmlinux: "vmlinux",
	}
	if _, err := os.Stat(filepath.Join(dir, m.Config)); err != nil {
		return Manifest{}, fmt.Errorf("package lacks %s: %w", m.Config, err)
	}
	modulesDir, err := findModulesDir(dir, release)
	if err != nil {
		return Manifest{}, fmt.Errorf("package lacks the modules of %s: %w", release, err)
	}
	m.ModulesDir = filepath.ToSlash(strings.TrimPrefix(modulesDir, dir+string(filepath.Separator)))

	bzImage, err := os.ReadFile(filepath.Join(dir, m.Vmlinuz))
	if err != nil {
		return Manifest{}, err
	}
	vmlinux, err := ExtractVmlinux(bzImage)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", m.Vmlinuz, err)
	}
	if err := os.WriteFile(filepath.Join(dir, m.Vmlinux), vmlinux, 0o644); err != nil {
		return Manifest{}, fmt.Errorf("write vmlinux: %w", err)
	}
	m.VmlinuzSize, m.VmlinuxSize = int64(len(bzImage)), int64(len(vmlinux))
	return m, nil
}

func writeManifest(dir string, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestName), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", ManifestName, err)
	}
	return nil
}

// Load reads the manifest of the kernel in dir and checks that its vmlinux and modules are
// there.
func Load(dir string) (Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("%s is not a pulled kernel (no %s); pull the kernel again", dir, ManifestName)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("read kernel manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Manifest{}, fmt.Errorf("kernel manifest %s is corrupt (%v); pull the kernel again", filepath.Join(dir, ManifestName), err)
	}
	m.Dir = dir
	fields := [][2]string{{"name", m.Name}, {"release", m.Release}, {"vmlinux", m.Vmlinux}}
	if m.Source == "" || m.Source == SourceDebian {
		// Debian kernels always have their bzImage and modules.
		fields = append(fields, [2]string{"vmlinuz", m.Vmlinuz}, [2]string{"modules_dir", m.ModulesDir})
	}
	for _, f := range fields {
		if f[1] == "" {
			return Manifest{}, fmt.Errorf("kernel manifest in %s has no %s; pull the kernel again", dir, f[0])
		}
	}
	for _, f := range [][2]string{{"vmlinux", m.Vmlinux}, {"vmlinuz", m.Vmlinuz}, {"modules_dir", m.ModulesDir}, {"initrd", m.Initrd}} {
		if v := f[1]; filepath.IsAbs(v) || strings.Contains(v, "..") {
			return Manifest{}, fmt.Errorf("kernel manifest in %s has an invalid %s %q; pull the kernel again", dir, f[0], v)
		}
	}
	if strings.ContainsAny(m.Release, "/\x00") || m.Release == "." || m.Release == ".." {
		return Manifest{}, fmt.Errorf("kernel manifest in %s has an invalid release %q; pull the kernel again", dir, m.Release)
	}
	fi, err := os.Stat(m.VmlinuxPath())
	if err != nil || fi.Size() != m.VmlinuxSize {
		return Manifest{}, fmt.Errorf("kernel %s in %s: vmlinux is missing or not %d bytes; pull the kernel again", m.Name, dir, m.VmlinuxSize)
	}
	if m.ModulesDir != "" {
		if fi, err := os.Stat(m.ModulesPath()); err != nil || !fi.IsDir() {
			return Manifest{}, fmt.Errorf("kernel %s in %s: modules directory %s is missing; pull the kernel again", m.Name, dir, m.ModulesDir)
		}
	}
	if m.Initrd != "" {
		if _, err := os.Stat(m.InitrdPath()); err != nil {
			return Manifest{}, fmt.Errorf("kernel %s in %s: initrd %s is missing; import the kernel again", m.Name, dir, m.Initrd)
		}
	}
	return m, nil
}

// InitrdPath is the absolute path of the kernel's own initramfs ("" when it has none).
func (m Manifest) InitrdPath() string {
	if m.Initrd == "" {
		return ""
	}
	return filepath.Join(m.Dir, filepath.FromSlash(m.Initrd))
}
