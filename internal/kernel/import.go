package kernel

import (
	"github.com/banger-dev/banger/internal/durable"

	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ImportOptions say which local files make up a kernel to adopt.
type ImportOptions struct {
	Name string
	// Vmlinux is the kernel: an ELF vmlinux, or a bzImage from which the ELF is extracted.
	Vmlinux string
	// Initrd is an optional initramfs of the kernel's own; banger appends its own to it.
	Initrd string
	// Modules is an optional module tree: a lib/modules/<release> directory, or a directory
	// holding lib/modules/<release> (make modules_install INSTALL_MOD_PATH=DIR).
	Modules string
	// Dest is the kernel directory to create; it must not exist, its parent must.
	Dest string
}

// Import adopts a locally built kernel into a new kernel directory at opts.Dest: the ELF
// vmlinux (extracted first when a bzImage is given), the optional initramfs and module tree,
// and a manifest. The release is read from the kernel's own version banner; a module tree
// must be for that release. Work is staged next to Dest and renamed into place.
//
// A kernel with everything built in needs no modules at all: banger boots it with an
// initramfs holding only the agent, which mounts the root from virtio disks, so the kernel
// needs CONFIG_BLK_DEV_INITRD, virtio-mmio described by ACPI (or the VMM's command line),
// virtio-blk, ext4, overlayfs and devtmpfs, built in or as modules in Modules.
func Import(ctx context.Context, opts ImportOptions) (Manifest, error) {
	if opts.Vmlinux == "" {
		return Manifest{}, errors.New("no kernel file given (--vmlinux)")
	}
	if _, err := os.Lstat(opts.Dest); err == nil {
		return Manifest{}, fmt.Errorf("kernel directory %s already exists", opts.Dest)
	}
	raw, err := os.ReadFile(opts.Vmlinux)
	if err != nil {
		return Manifest{}, fmt.Errorf("read kernel: %w", err)
	}
	vmlinux := raw
	if IsBzImage(raw) {
		if vmlinux, err = ExtractVmlinux(raw); err != nil {
			return Manifest{}, fmt.Errorf("%s: %w", opts.Vmlinux, err)
		}
	}
	if err := checkELFKernel(vmlinux); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", opts.Vmlinux, err)
	}
	release, err := KernelRelease(vmlinux)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", opts.Vmlinux, err)
	}
	var modulesSrc string
	if opts.Modules != "" {
		if modulesSrc, err = findImportModules(opts.Modules, release); err != nil {
			return Manifest{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}

	st, err := durable.Stage(filepath.Dir(opts.Dest), filepath.Base(opts.Dest)+".pull")
	if err != nil {
		return Manifest{}, err
	}
	defer st.Discard()
	staging := st.Dir
	m := Manifest{Name: opts.Name, Release: release, Source: SourceImport, Vmlinux: "vmlinux", VmlinuxSize: int64(len(vmlinux)),
		PulledAt: time.Now().UTC().Truncate(time.Second)}
	if err := os.WriteFile(filepath.Join(staging, m.Vmlinux), vmlinux, 0o644); err != nil {
		return Manifest{}, fmt.Errorf("write vmlinux: %w", err)
	}
	if opts.Initrd != "" {
		m.Initrd = "initrd.img"
		if err := copyRegular(opts.Initrd, filepath.Join(staging, m.Initrd)); err != nil {
			return Manifest{}, fmt.Errorf("copy initrd: %w", err)
		}
	}
	if modulesSrc != "" {
		m.ModulesDir = "lib/modules/" + release
		if err := copyModuleTree(ctx, modulesSrc, filepath.Join(staging, filepath.FromSlash(m.ModulesDir))); err != nil {
			return Manifest{}, fmt.Errorf("copy modules from %s: %w", modulesSrc, err)
		}
	}
	if err := writeManifest(staging, m); err != nil {
		return Manifest{}, err
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}
	if err := st.Publish(opts.Dest); err != nil {
		return Manifest{}, fmt.Errorf("publish %s: %w", opts.Dest, err)
	}
	m.Dir = opts.Dest
	return m, nil
}

// IsBzImage reports whether b starts like an x86 bzImage (boot protocol header magic).
func IsBzImage(b []byte) bool {
	return len(b) > offHeaderMagic+4 && string(b[offHeaderMagic:offHeaderMagic+4]) == "HdrS"
}

func checkELFKernel(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("neither an ELF vmlinux nor a bzImage (%v)", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return fmt.Errorf("is a %v %v ELF; banger guests need an x86-64 kernel", f.Class, f.Machine)
	}
	return nil
}

// releasePattern matches the kernel's version banner, "Linux version <release> (…".
var releasePattern = regexp.MustCompile(`Linux version ([0-9][A-Za-z0-9._+~-]{0,63}) \(`)

// KernelRelease reads the release (uname -r) from an uncompressed kernel's version banner.
func KernelRelease(vmlinux []byte) (string, error) {
	m := releasePattern.FindSubmatch(vmlinux)
	if m == nil {
		return "", errors.New(`no "Linux version …" banner found; is it a Linux kernel?`)
	}
	return string(m[1]), nil
}

// findImportModules resolves --modules to the lib/modules/<release> directory to copy.
func findImportModules(dir, release string) (string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("modules: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("modules: %s is not a directory", dir)
	}
	for _, cand := range []string{filepath.Join(dir, "lib", "modules", release), filepath.Join(dir, "usr", "lib", "modules", release)} {
		if fi, err := os.Stat(cand); err == nil && fi.IsDir() {
			return cand, nil
		}
	}
	if _, err := indexModules(dir); err != nil {
		return "", fmt.Errorf("modules: %s holds neither lib/modules/%s nor kernel modules (*.ko)", dir, release)
	}
	if base := filepath.Base(filepath.Clean(dir)); base != release && looksLikeRelease(base) {
		return "", fmt.Errorf("modules: %s is for kernel %s, but the kernel is %s", dir, base, release)
	}
	return dir, nil
}

func looksLikeRelease(s string) bool {
	return len(s) > 0 && s[0] >= '0' && s[0] <= '9' && strings.Contains(s, ".")
}

// copyModuleTree copies a module directory: directories, regular files and symlinks that stay
// inside it. The build and source links of a module tree point into the kernel's source tree
// and are left out.
func copyModuleTree(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "build" || rel == "source" {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyRegular(p, target)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if clean := filepath.Join(filepath.Dir(rel), link); filepath.IsAbs(link) || clean == ".." || strings.HasPrefix(clean, "../") {
				return nil // points outside the module tree
			}
			return os.Symlink(link, target)
		}
		return nil // sockets, devices: nothing a module tree needs
	})
}

func copyRegular(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func randomHex() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
