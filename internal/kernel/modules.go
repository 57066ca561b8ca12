package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// GuestModules are the modules a banger guest loads from its initramfs: virtio transport,
// disk, network, console and entropy devices, vsock to talk to the host, and overlayfs for the
// root. Their dependencies are added by ModuleClosure.
var GuestModules = []string{
	"virtio_mmio",
	"virtio_blk",
	"virtio_net",
	"virtio_console",
	"virtio_rng",
	"vsock",
	"vmw_vsock_virtio_transport",
	"overlay",
}

// Module is a loadable kernel module in a closure.
type Module struct {
	Name    string   // canonical name: '-' written as '_'
	Path    string   // file as shipped, relative to the modules dir ("kernel/fs/overlayfs/overlay.ko")
	Depends []string // modules loaded before it because of its depends= and softdep pre: entries
}

// LoadPath is Path without a compression suffix: where the decompressed module goes.
func (m Module) LoadPath() string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(m.Path, ".ko"+ext) {
			return strings.TrimSuffix(m.Path, ext)
		}
	}
	return m.Path
}

// moduleExts are the module file suffixes indexed, longest match first.
var moduleExts = []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"}

// ModuleName canonicalises a module name: kernel module names treat '-' and '_' as equal.
func ModuleName(s string) string {
	return strings.ReplaceAll(s, "-", "_")
}

// ModuleClosure returns the modules to load, dependencies first, so that every module in want
// and everything it needs is present. modulesDir is a lib/modules/<release> tree as shipped in
// the kernel package: modules.dep is not there (depmod writes it at install time), so
// dependencies come from each module's .modinfo ELF section (depends=, and softdep= pre:
// entries, best effort). Modules listed in modules.builtin are skipped silently. The order is
// deterministic: wanted modules in the order given, each one's dependencies in name order.
func ModuleClosure(modulesDir string, want []string) ([]Module, error) {
	index, err := indexModules(modulesDir)
	if err != nil {
		return nil, err
	}
	builtin, err := readBuiltin(modulesDir)
	if err != nil {
		return nil, err
	}
	c := &closure{dir: modulesDir, index: index, builtin: builtin, state: map[string]int{}}
	for _, w := range want {
		if strings.TrimSpace(w) == "" {
			return nil, errors.New("empty module name in the wanted list")
		}
		if err := c.visit(ModuleName(w), "", true); err != nil {
			return nil, err
		}
	}
	return c.order, nil
}

// indexModules maps module name → path relative to dir. When a name occurs twice, a copy under
// updates/ wins (depmod's default search order), otherwise the first in lexical order.
func indexModules(dir string) (map[string]string, error) {
	index := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		for _, ext := range moduleExts {
			if base := d.Name(); strings.HasSuffix(base, ext) {
				rel, _ := filepath.Rel(dir, p)
				rel = filepath.ToSlash(rel)
				name := ModuleName(strings.TrimSuffix(base, ext))
				if old, dup := index[name]; !dup || (strings.HasPrefix(rel, "updates/") && !strings.HasPrefix(old, "updates/")) {
					index[name] = rel
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index kernel modules in %s: %w", dir, err)
	}
	if len(index) == 0 {
		return nil, fmt.Errorf("no kernel modules (*.ko) under %s; is it a lib/modules/<release> directory?", dir)
	}
	return index, nil
}

// readBuiltin reads modules.builtin (paths like "kernel/fs/ext4/ext4.ko"); missing is empty.
func readBuiltin(dir string) (map[string]bool, error) {
	builtin := map[string]bool{}
	f, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return builtin, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		base := path.Base(line)
		for _, ext := range moduleExts {
			base = strings.TrimSuffix(base, ext)
		}
		builtin[ModuleName(base)] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	return builtin, nil
}

// closure is the depth-first walk behind ModuleClosure.
type closure struct {
	dir     string
	index   map[string]string
	builtin map[string]bool
	state   map[string]int // 0 unseen, 1 on the current path, 2 done
	order   []Module
}

func (c *closure) visit(name, neededBy string, hard bool) error {
	if c.builtin[name] || c.state[name] == 2 {
		return nil
	}
	rel, ok := c.index[name]
	if !ok {
		if !hard {
			return nil // a soft dependency that this kernel does not have
		}
		if neededBy == "" {
			return fmt.Errorf("module %s is neither in %s nor built into the kernel; check the name or use another kernel", name, c.dir)
		}
		return fmt.Errorf("module %s (needed by %s) is neither in %s nor built into the kernel; the module tree is incomplete", name, neededBy, c.dir)
	}
	if c.state[name] == 1 {
		if !hard {
			return nil // a soft dependency back into the current path: ignore it
		}
		return fmt.Errorf("module dependency cycle through %s (needed by %s)", name, neededBy)
	}
	c.state[name] = 1
	info, err := readModinfo(filepath.Join(c.dir, rel))
	if err != nil {
		return err
	}
	var loaded []string
	for _, d := range info.depends {
		if err := c.visit(d, name, true); err != nil {
			return err
		}
		if !c.builtin[d] {
			loaded = append(loaded, d)
		}
	}
	for _, d := range info.softPre {
		if err := c.visit(d, name, false); err != nil {
			return err
		}
		if c.state[d] == 2 {
			loaded = append(loaded, d)
		}
	}
	c.state[name] = 2
	c.order = append(c.order, Module{Name: name, Path: rel, Depends: loaded})
	return nil
}
