package kernel

import (
	"github.com/banger-dev/banger/internal/durable"

	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/ext4"
	"github.com/banger-dev/banger/internal/userns"
)

// ModulesDiskName is the file in a kernel directory holding the kernel's whole module tree
// (lib/modules/<release>, with depmod's indexes) as a read-only ext4 image. VMs get it as a
// read-only disk that the agent mounts at /lib/modules/<release> of the guest root, so modprobe
// works in the guest (Docker's overlay, bridge, veth, netfilter modules; systemd's autofs4,
// loop, fuse, …) without any module being copied into images or VM disks.
const ModulesDiskName = "modules.ext4"

// ModulesDiskLabel is the ext4 label of module disks.
const ModulesDiskLabel = "banger-modules"

// ModulesDiskPath is the absolute path of the kernel's module disk ("" when the kernel has no
// modules).
func (m Manifest) ModulesDiskPath() string {
	if m.ModulesDir == "" {
		return ""
	}
	return filepath.Join(m.Dir, ModulesDiskName)
}

// EnsureModulesDisk returns the path of the kernel's module disk, making it first if it is not
// there: depmod -b writes the module indexes (modules.dep, modules.alias, … — the kernel
// package leaves that to its postinst) into the kernel's module directory, then mkfs.ext4 -d
// packs the directory into a staged file that is renamed into place. It returns "" for a
// kernel without modules. Concurrent callers are safe (each stages its own file; depmod writes
// its indexes atomically), but the catalog coalesces them anyway.
func EnsureModulesDisk(ctx context.Context, m Manifest) (string, error) {
	dst := m.ModulesDiskPath()
	if dst == "" {
		return "", nil
	}
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		return dst, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("kernel %s: %w", m.Name, err)
	}
	dir := m.ModulesPath()
	if err := Depmod(ctx, dir, m.Release); err != nil {
		return "", fmt.Errorf("kernel %s: %w", m.Name, err)
	}
	ns, err := modulesNamespace()
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", m.Name, err)
	}
	tmp := filepath.Join(m.Dir, "."+ModulesDiskName+".tmp-"+randomHex())
	if err := ext4.FromTree(ctx, ext4.Options{Tree: dir, Output: tmp, Label: ModulesDiskLabel, Userns: ns}); err != nil {
		return "", fmt.Errorf("kernel %s: pack modules into %s: %w", m.Name, ModulesDiskName, err)
	}
	if err := durable.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("kernel %s: publish %s: %w", m.Name, ModulesDiskName, err)
	}
	return dst, nil
}

// modulesNamespace returns the user namespace a module disk is made in: none for root;
// otherwise one mapping the user to root, so that the disk records the module tree (the
// user's files, unpacked from the kernel package) as root's, as a root import does. Every
// file of the tree is the user's, so the user's subordinate ids are mapped when there are
// some but not needed.
func modulesNamespace() (*userns.Mapping, error) {
	if os.Geteuid() == 0 {
		return nil, nil
	}
	m, err := userns.ForCaller()
	if err != nil && !errors.Is(err, userns.ErrNoSubordinate) {
		return nil, fmt.Errorf("pack modules without root: %w", err)
	}
	return &m, nil
}

// Depmod runs depmod -b on a lib/modules/<release> directory, writing modules.dep and the other
// indexes modprobe reads. depmod wants the directory at <base>/lib/modules/<release>, which is
// where pulls and imports put it.
func Depmod(ctx context.Context, modulesDir, release string) error {
	base, ok := strings.CutSuffix(filepath.Clean(modulesDir), string(filepath.Separator)+filepath.Join("lib", "modules", release))
	if !ok {
		return fmt.Errorf("depmod: %s is not a lib/modules/%s directory", modulesDir, release)
	}
	depmod, err := ext4.LookTool("depmod")
	if err != nil {
		return fmt.Errorf("%w; install kmod (apt-get install kmod)", err)
	}
	if err := ext4.Run(ctx, depmod, "-a", "-b", base, release); err != nil {
		return fmt.Errorf("index modules of %s: %w", release, err)
	}
	return nil
}
